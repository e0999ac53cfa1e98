# Shared by scripts/bench and scripts/bench-scaling (sourced, not run): the
# work directory and its cleanup, the tlogd and tlog-bench builds, and
# starting tlogd and fresh PostgreSQL databases (on a throwaway server if
# BENCH_PG_SETTINGS is set). The caller sets script (its name, for messages)
# and admin_url, and runs from the repository's root.

die() { printf '%s: %s\n' "$script" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$script" "$*" >&2; }
redact() { sed -E 's#(//[^/:@]*:)[^/@]*@#\1xxxxx@#' <<<"$1"; } # hide a URL's password
command -v jq >/dev/null || die "needs jq"
# shellcheck source=scripts/lib/pg.bash
source scripts/lib/pg.bash

work=$(mktemp -d "${TMPDIR:-/tmp}/tlog-bench.XXXXXX")
tlogd_pid=
database=
cleanup() {
	stop_tlogd
	drop_database
	pg_stop
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note "building tlogd and tlog-bench"
go build -o "$work/tlogd" ./cmd/tlogd
go build -o "$work/tlog-bench" ./cmd/tlog-bench

# start_tlogd LOGFILE ARGS...: starts tlogd on free ports; sets tlogd_pid,
# grpc_addr and http_addr.
start_tlogd() {
	local log=$1
	shift
	"$work/tlogd" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 "$@" >"$log" 2>&1 &
	tlogd_pid=$!
	local line=
	for _ in $(seq 300); do
		line=$(grep -m1 'msg="tlogd serving"' "$log" || true)
		[[ -n $line ]] && break
		kill -0 "$tlogd_pid" 2>/dev/null || { cat "$log" >&2; die "tlogd exited at start-up"; }
		sleep 0.1
	done
	[[ -n $line ]] || { cat "$log" >&2; die "tlogd did not start within 30s"; }
	grpc_addr=$(sed -E 's/.* grpc=([^ ]+).*/\1/' <<<"$line")
	http_addr=$(sed -E 's#.* http=http://([^ ]+).*#\1#' <<<"$line")
}

stop_tlogd() {
	if [[ -n $tlogd_pid ]]; then
		kill -TERM "$tlogd_pid" 2>/dev/null || true
		wait "$tlogd_pid" 2>/dev/null || true
		tlogd_pid=
	fi
}

# create_database: creates a fresh database on admin_url's server and sets
# database and database_url.
create_database() {
	database=tlog_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
	psql -q -d "$admin_url" -v ON_ERROR_STOP=1 -c "CREATE DATABASE $database" </dev/null >&2
	local base=${admin_url%%\?*}
	database_url="${base%/*}/$database${admin_url#"$base"}"
}

drop_database() {
	if [[ -n $database ]]; then
		psql -q -d "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" </dev/null >&2 || true
		database=
	fi
}

# BENCH_PG_SETTINGS="NAME=VALUE ...": measure PostgreSQL on a throwaway server
# started with those settings (and the defaults, fsync on) instead of
# admin_url's, e.g. BENCH_PG_SETTINGS="shared_buffers=2GB max_wal_size=8GB".
pg_settings=${BENCH_PG_SETTINGS:-}
if [[ -n $pg_settings ]]; then
	note "starting a throwaway PostgreSQL server with $pg_settings"
	# shellcheck disable=SC2086 # a list of words
	pg_start $pg_settings
	admin_url=$pg_url
fi

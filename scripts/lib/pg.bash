# Throwaway PostgreSQL servers from the local binaries (sourced, not run), for
# scripts/test (when no server answers) and the bench scripts (with the
# settings under test). The caller defines die.

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[[ -n $pgbin ]] || pgbin=$(dirname "$(readlink -f "$(command -v initdb || echo /nonexistent/initdb)")")
PATH="$PATH:$pgbin"
pgdir=
pgas=()

answers() { # answers URL: does a PostgreSQL server accept connections there?
	if command -v pg_isready >/dev/null; then
		pg_isready -q -t 5 -d "$1"
	elif command -v psql >/dev/null; then
		PGCONNECT_TIMEOUT=5 psql -d "$1" -Atqc 'SELECT 1' >/dev/null 2>&1 </dev/null
	elif [[ $1 =~ ^[a-z]+://([^/@]*@)?([^][/:?]+)(:([0-9]+))? ]]; then # no client tools: probe TCP
		timeout 5 bash -c ': </dev/tcp/$0/$1' "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]:-5432}" 2>/dev/null
	fi # else: cannot tell; let the tests connect and report
}

# pg_start SETTING...: initdb and start a server on a free port of 127.0.0.1,
# with each NAME=VALUE setting, as user postgres (or nobody) when run as root
# (postgres refuses root). Sets pg_url to its database "test" and pg_port.
# pg_stop removes it; the caller arranges for pg_stop to run on exit.
pg_start() {
	[[ -x $pgbin/initdb && -x $pgbin/pg_ctl ]] && command -v psql >/dev/null ||
		die "no PostgreSQL server binaries (initdb, pg_ctl) or psql were found"
	pgdir=$(mktemp -d "${TMPDIR:-/tmp}/tlog-pg.XXXXXX")
	pgas=()
	if ((EUID == 0)); then
		local user=postgres
		id "$user" >/dev/null 2>&1 || user=nobody
		chown "$user" "$pgdir"
		if command -v runuser >/dev/null; then
			pgas=(runuser -u "$user" --)
		else
			pgas=(su -s /bin/bash -c 'exec "$0" "$@"' -- "$user")
		fi
	fi
	pg_port=55432
	while (: </dev/tcp/127.0.0.1/$pg_port) 2>/dev/null; do ((pg_port++)); done
	local opts="-c listen_addresses=127.0.0.1 -p $pg_port -k $pgdir" s
	for s in "$@"; do opts+=" -c $s"; done
	"${pgas[@]}" "$pgbin/initdb" -A trust -U postgres -E UTF8 -D "$pgdir/data" >"$pgdir/initdb.log" 2>&1 ||
		{ cat "$pgdir/initdb.log" >&2; die "initdb failed"; }
	"${pgas[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/data/server.log" -w -s start -o "$opts" ||
		{ cat "$pgdir/data/server.log" >&2; die "pg_ctl start failed"; }
	psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c 'CREATE DATABASE test' </dev/null
	pg_url="postgres://postgres@127.0.0.1:$pg_port/test?sslmode=disable"
}

pg_stop() {
	if [[ -n $pgdir ]]; then
		"${pgas[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
		rm -rf "$pgdir"
		pgdir=
	fi
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/pkg/client"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// leaderState is what GET /logs says of the log's leadership.
type leaderState struct {
	Leader     bool   `json:"leader"`
	LeaderAddr string `json:"leader_addr"`
	Sequencing bool   `json:"sequencing"`
}

func (d *daemon) leaderState(ctx context.Context) (leaderState, error) {
	body, _, err := d.get(ctx, "/logs")
	if err != nil {
		return leaderState{}, err
	}
	var out struct {
		Logs []struct {
			Name string `json:"name"`
			leaderState
		} `json:"logs"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return leaderState{}, err
	}
	for _, l := range out.Logs {
		if l.Name == logName {
			return l.leaderState, nil
		}
	}
	return leaderState{}, fmt.Errorf("GET /logs: no log %q in %s", logName, body)
}

// waitLeader waits until exactly one of ds leads and sequences the log and
// the others name its address, and returns it.
func waitLeader(t *testing.T, timeout time.Duration, ds ...*daemon) *daemon {
	t.Helper()
	var last []leaderState
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		last = last[:0]
		var leader *daemon
		n := 0
		for _, d := range ds {
			s, err := d.leaderState(ctx)
			if err != nil {
				continue
			}
			last = append(last, s)
			if s.Leader && s.Sequencing {
				leader, n = d, n+1
			}
		}
		cancel()
		if n != 1 || len(last) != len(ds) {
			continue
		}
		agree := true
		for _, s := range last {
			agree = agree && s.LeaderAddr == leader.grpcAddr
		}
		if agree {
			return leader
		}
	}
	t.Fatalf("no single leader of %d processes after %v: %+v", len(ds), timeout, last)
	return nil
}

// sdkAppender appends unique entries through the SDK (which retries
// UNAVAILABLE with idempotency keys) until stop, recording what is
// acknowledged and counting the errors the SDK gives up with, by code.
type sdkAppender struct {
	c      *client.Client
	l      *ledger
	prefix string
	acks   atomic.Int64
	errs   *errorKinds
	bad    atomic.Int64 // errors that are not UNAVAILABLE
}

func (a *sdkAppender) run(t *testing.T, stop *atomic.Bool, workers int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				data := fmt.Appendf(nil, "%s worker %d entry %d", a.prefix, w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r, err := a.c.Append(ctx, data)
				cancel()
				if err != nil {
					a.errs.add(err)
					if status.Code(err) != codes.Unavailable {
						a.bad.Add(1)
					}
					time.Sleep(50 * time.Millisecond)
					continue
				}
				a.acks.Add(1)
				a.l.record(appended{index: r.Index, duplicate: r.Duplicate, cp: r.Checkpoint.Note}, data)
			}
		})
	}
	return &wg
}

func newSDK(t *testing.T, d *daemon, vkey string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		Conn: d.conn, Log: logName, VerifierKey: vkey,
		MaxBatchDelay: 2 * time.Millisecond,
		Retry:         client.RetryPolicy{MaxAttempts: 30, BaseDelay: 50 * time.Millisecond, MaxDelay: 500 * time.Millisecond, AttemptTimeout: 10 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHAKillLeader runs three tlogd processes on one PostgreSQL database,
// with SDK clients appending through all three, and kills the log's leader
// with SIGKILL: another process must take over within seconds, the clients
// of the survivors must see no error but UNAVAILABLE (after the SDK's
// retries: normally none), every acknowledged entry must be in the final
// tree and every checkpoint any process returned consistent with it.
func TestHAKillLeader(t *testing.T) {
	t.Parallel()
	st := store{dataDir: t.TempDir(), databaseURL: pgtest.NewDatabase(t)}
	args := append(st.args(), "--batch-max-age", "5ms")
	ds := []*daemon{start(t, options{args: args})} // creates the log and its key
	key := ds[0].fetchLogKey(t)
	ds = append(ds, start(t, options{args: args}), start(t, options{args: args}))
	leader := waitLeader(t, 10*time.Second, ds...)
	t.Logf("leader: %s at %s", leader.name, leader.grpcAddr)

	l := newLedger(t, key)
	var stop, killed atomic.Bool
	apps := map[*daemon]*sdkAppender{}
	var wgs []*sync.WaitGroup
	for i, d := range ds {
		a := &sdkAppender{c: newSDK(t, d, key.vkey), l: l, prefix: fmt.Sprintf("via %d", i), errs: &errorKinds{}}
		apps[d] = a
		wgs = append(wgs, a.run(t, &stop, 4))
	}
	// Readers record the checkpoints every process serves.
	var readers sync.WaitGroup
	for _, d := range ds {
		readers.Go(func() {
			for !stop.Load() {
				if d == leader && killed.Load() {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := d.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: logName})
				cancel()
				if err == nil {
					l.recordCheckpoint(resp.GetCheckpoint())
				} else if d != leader && status.Code(err) != codes.Unavailable {
					t.Errorf("%s: GetCheckpoint: %v", d.name, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}

	time.Sleep(1500 * time.Millisecond)
	before := map[*daemon]int64{}
	for d, a := range apps {
		before[d] = a.acks.Load()
		if before[d] == 0 {
			t.Errorf("no append through %s was acknowledged before the kill", d.name)
		}
	}
	killed.Store(true)
	leader.kill()
	killedAt := time.Now()
	var survivors []*daemon
	for _, d := range ds {
		if d != leader {
			survivors = append(survivors, d)
		}
	}
	next := waitLeader(t, 10*time.Second, survivors...)
	took := time.Since(killedAt)
	t.Logf("%s took over %v after the kill", next.name, took.Round(time.Millisecond))
	time.Sleep(1500 * time.Millisecond)
	stop.Store(true)
	for _, wg := range wgs {
		wg.Wait()
	}
	readers.Wait()
	for _, d := range survivors {
		a := apps[d]
		a.c.Close()
		t.Logf("through %s: %d acknowledged (%d after the kill); errors after retries:%s", d.name, a.acks.Load(), a.acks.Load()-before[d], a.errs)
		if a.bad.Load() > 0 {
			t.Errorf("clients of %s got errors other than UNAVAILABLE:%s", d.name, a.errs)
		}
		if a.acks.Load() == before[d] {
			t.Errorf("no append through %s was acknowledged after the kill", d.name)
		}
	}
	apps[leader].c.Close()
	if took > 10*time.Second {
		t.Errorf("takeover took %v", took)
	}

	acked, seen := l.snapshot()
	t.Logf("%d entries acknowledged, %d checkpoints seen", len(acked), len(seen))
	// The leader first; a follower serves the latest checkpoint it read
	// from the database at most 150ms ago.
	audit(t, next, key, acked, seen, auditOptions{})
	time.Sleep(200 * time.Millisecond)
	for _, d := range survivors {
		if d != next {
			audit(t, d, key, acked, seen, auditOptions{})
		}
	}
}

// throwawayPostgres runs a PostgreSQL cluster of its own for one test, so
// that the test can stop and start it; it returns its URL and pg_ctl.
func throwawayPostgres(t *testing.T) (url string, pgctl func(args ...string)) {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(bins, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(bins[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(bins[j]))))
		return vi < vj
	})
	if len(bins) == 0 {
		t.Fatal("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: this test restarts a PostgreSQL cluster of its own; install the Debian package postgresql (apt-get install postgresql)")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	// Not t.TempDir(): its parents are private to root, and PostgreSQL
	// refuses to run as root.
	dir, err := os.MkdirTemp("", "tlog-pgrestart-")
	if err != nil {
		t.Fatal(err)
	}
	var asUser []string
	if os.Geteuid() == 0 {
		name := "postgres"
		u, err := user.Lookup(name)
		if err != nil {
			name = "nobody"
			if u, err = user.Lookup(name); err != nil {
				t.Fatal("running as root without a postgres or nobody user to run PostgreSQL as (it refuses to run as root): create one, or run the tests as another user")
			}
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"runuser", "-u", name, "--"}
	}
	run := func(name string, args ...string) {
		t.Helper()
		argv := append(append(append([]string{}, asUser...), filepath.Join(bin, name)), args...)
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("%s %q: %v\n%s\nserver log:\n%s", name, args, err, out, log)
		}
	}
	addr := freeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	data := filepath.Join(dir, "data")
	run("initdb", "-A", "trust", "-U", "postgres", "-E", "UTF8", "-D", data)
	pgctl = func(args ...string) {
		t.Helper()
		run("pg_ctl", append([]string{"-D", data, "-l", filepath.Join(dir, "server.log"), "-w",
			"-o", "-c listen_addresses=127.0.0.1 -p " + port + " -k " + dir + " -c fsync=off"}, args...)...)
	}
	pgctl("start")
	t.Cleanup(func() {
		argv := append(append([]string{}, asUser...), filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		exec.Command(argv[0], argv[1:]...).Run()
		os.RemoveAll(dir)
	})
	return "postgres://postgres@127.0.0.1:" + port + "/postgres?sslmode=disable", pgctl
}

// TestPostgresRestart stops PostgreSQL (a cluster of the test's own) for
// two seconds while clients append: tlogd must answer UNAVAILABLE while
// the database is gone (which the SDK retries through), append again by
// itself once it is back, and lose nothing acknowledged.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	url, pgctl := throwawayPostgres(t)
	st := store{dataDir: t.TempDir(), databaseURL: url}
	d := start(t, options{args: append(st.args(), "--batch-max-age", "5ms")})
	key := d.fetchLogKey(t)
	l := newLedger(t, key)

	var stop, down atomic.Bool
	sdk := &sdkAppender{c: newSDK(t, d, key.vkey), l: l, prefix: "sdk", errs: &errorKinds{}}
	wg := sdk.run(t, &stop, 4)
	// A raw appender, without retries, sees what tlogd answers.
	var rawErrs errorKinds
	var unavailableWhileDown, okAfter atomic.Int64
	var up atomic.Bool
	var raw sync.WaitGroup
	raw.Go(func() {
		a := &appender{d: d, l: l, prefix: "raw", n: 0}
		rng := rand.New(rand.NewPCG(1, 2))
		for !stop.Load() {
			err := a.next(rng)
			switch {
			case err == nil:
				if up.Load() {
					okAfter.Add(1)
				}
			case status.Code(err) == codes.Unavailable:
				if down.Load() {
					unavailableWhileDown.Add(1)
				}
			default:
				rawErrs.add(err)
				t.Errorf("raw append: %v (want success or UNAVAILABLE)", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	time.Sleep(time.Second)
	if sdk.acks.Load() == 0 {
		t.Fatal("nothing acknowledged before the restart")
	}
	pgctl("-m", "fast", "stop")
	down.Store(true)
	time.Sleep(2 * time.Second)
	pgctl("start")
	down.Store(false)
	up.Store(true)
	before := sdk.acks.Load()
	deadline := time.Now().Add(20 * time.Second)
	for (okAfter.Load() == 0 || sdk.acks.Load() == before) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	raw.Wait()
	sdk.c.Close()
	t.Logf("SDK: %d acknowledged (%d after the restart); errors after retries:%s", sdk.acks.Load(), sdk.acks.Load()-before, sdk.errs)
	t.Logf("raw appends: %d UNAVAILABLE while the database was down, %d acknowledged after", unavailableWhileDown.Load(), okAfter.Load())
	if okAfter.Load() == 0 || sdk.acks.Load() == before {
		t.Fatalf("tlogd did not append again within 20s of the database's return")
	}
	if unavailableWhileDown.Load() == 0 {
		t.Errorf("no append was answered UNAVAILABLE while the database was down")
	}
	if sdk.bad.Load() > 0 {
		t.Errorf("SDK clients got errors other than UNAVAILABLE:%s", sdk.errs)
	}
	acked, seen := l.snapshot()
	audit(t, d, key, acked, seen, auditOptions{})
}

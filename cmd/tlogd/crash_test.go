package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

// callTimeout bounds every append in these tests; reaching it means the
// server hung.
const callTimeout = 15 * time.Second

// appender sends appends of unique entries, gRPC (1 to 4 entries per call)
// or HTTP (one entry per call) depending on its number, and records
// acknowledgements in a ledger.
type appender struct {
	d      *daemon
	l      *ledger
	prefix string // makes the entries unique
	n      int    // number of this appender: even ones use gRPC
	seq    int
	sent   func() // if set, called once the next request is on the wire
}

// next sends one append and returns nil if it was acknowledged.
func (a *appender) next(rng *rand.Rand) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if a.sent != nil {
		ctx = withSent(ctx, a.sent)
		a.sent = nil
	}
	if a.n%2 == 0 {
		batch := make([][]byte, 1+rng.IntN(4))
		for i := range batch {
			batch[i] = fmt.Appendf(nil, "%s appender %d entry %d", a.prefix, a.n, a.seq)
			a.seq++
		}
		res, err := a.d.appendGRPC(ctx, batch)
		if err != nil {
			return err
		}
		for i, r := range res {
			if r.duplicate {
				a.l.t.Errorf("new entry %q reported as a duplicate of %d", batch[i], r.index)
			}
			a.l.record(r, batch[i])
		}
		return nil
	}
	data := fmt.Appendf(nil, "%s appender %d entry %d", a.prefix, a.n, a.seq)
	a.seq++
	r, err := a.d.appendHTTP(ctx, data)
	if err != nil {
		return err
	}
	if r.duplicate {
		a.l.t.Errorf("new entry %q reported as a duplicate of %d", data, r.index)
	}
	a.l.record(r, data)
	return nil
}

// checkReappend re-appends some acknowledged entries, over gRPC in one
// request and over HTTP, and checks that each is a duplicate at its
// acknowledged index.
func checkReappend(t *testing.T, d *daemon, acked map[uint64][]byte, rng *rand.Rand, n int) {
	t.Helper()
	var idx []uint64
	for i := range acked {
		idx = append(idx, i)
	}
	rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	idx = idx[:min(n, len(idx))]
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	half := len(idx) / 2
	var batch [][]byte
	for _, i := range idx[:half] {
		batch = append(batch, acked[i])
	}
	if len(batch) > 0 {
		var res []appended
		err := withRetry(func() (err error) {
			res, err = d.appendGRPC(ctx, batch)
			return err
		})
		if err != nil {
			t.Fatalf("re-Append of %d acknowledged entries: %v", len(batch), err)
		}
		for k, r := range res {
			if !r.duplicate || r.index != idx[k] {
				t.Errorf("re-Append of %q: index %d duplicate %v, want duplicate of %d", batch[k], r.index, r.duplicate, idx[k])
			}
		}
	}
	for _, i := range idx[half:] {
		var r appended
		err := withRetry(func() (err error) {
			r, err = d.appendHTTP(ctx, acked[i])
			return err
		})
		if err != nil {
			t.Fatalf("re-POST of an acknowledged entry: %v", err)
		}
		if !r.duplicate || r.index != i {
			t.Errorf("re-POST of %q: index %d duplicate %v, want duplicate of %d", acked[i], r.index, r.duplicate, i)
		}
	}
}

// TestKill9 kills tlogd with SIGKILL at a random moment while 16 clients
// append, restarts it on the same store, and checks that nothing
// acknowledged was lost and that every checkpoint ever returned is
// consistent with the tree after the restart.
func TestKill9(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store) {
		seed := uint64(time.Now().UnixNano())
		t.Logf("seed %d", seed)
		rng := rand.New(rand.NewPCG(seed, 9))
		args := append(st.args(), "--batch-max-age", "5ms", "--batch-max-size", "64")
		d := start(t, options{args: args})
		key := d.fetchLogKey(t)
		if _, vkey, ok := d.printedKey(); !ok || vkey != key.vkey {
			t.Fatalf("GetLog key %q, printed %q", key.vkey, vkey)
		}
		l := newLedger(t, key)

		const rounds, appenders = 3, 16
		for round := range rounds {
			var killed atomic.Bool
			var acks, inFlight atomic.Int64
			var wg sync.WaitGroup
			for n := range appenders {
				a := &appender{d: d, l: l, prefix: fmt.Sprintf("kill round %d", round), n: n}
				arng := rand.New(rand.NewPCG(seed, uint64(round*appenders+n)))
				wg.Go(func() {
					for {
						err := a.next(arng)
						switch {
						case err == nil:
							acks.Add(1)
							continue
						case isDeadline(err):
							t.Errorf("append hung for %v: %v", callTimeout, err)
						case !killed.Load() && retriable(err):
							continue // a batch lost to the previous process's last commit
						case !killed.Load():
							t.Errorf("append failed before the kill: %v", err)
						default:
							inFlight.Add(1)
						}
						return
					}
				})
			}
			// A reader records the checkpoints the read path serves.
			wg.Go(func() {
				for i := 0; !killed.Load(); i++ {
					ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
					var cp []byte
					var err error
					if i%2 == 0 {
						var resp *tlogv1.GetCheckpointResponse
						resp, err = d.log.GetCheckpoint(ctx, &tlogv1.GetCheckpointRequest{Log: logName})
						cp = resp.GetCheckpoint()
					} else {
						cp, _, err = d.get(ctx, "/logs/"+logName+"/checkpoint")
					}
					cancel()
					if err != nil {
						if !killed.Load() {
							t.Errorf("reading the checkpoint: %v", err)
						}
						return
					}
					l.recordCheckpoint(cp)
					time.Sleep(2 * time.Millisecond)
				}
			})
			time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
			killed.Store(true)
			d.kill()
			wg.Wait()
			acked, seen := l.snapshot()
			t.Logf("round %d: killed after %d acknowledged appends, %d failed in flight; %d entries and %d checkpoints acknowledged so far",
				round, acks.Load(), inFlight.Load(), len(acked), len(seen))
			if t.Failed() {
				t.FailNow()
			}
			if acks.Load() == 0 {
				t.Fatalf("round %d: no append was acknowledged before the kill", round)
			}

			// On PostgreSQL the dead process's last transaction may still
			// commit after the restart (its COMMIT was sent): the restarted
			// sequencer's next batch then loses the compare-and-swap and fails
			// with UNAVAILABLE, which clients retry (TestZombieCommit).
			d = start(t, options{args: args})
			if k := d.fetchLogKey(t); k.vkey != key.vkey {
				t.Fatalf("after restart the verifier key is %q, was %q", k.vkey, key.vkey)
			}
			audit(t, d, key, acked, seen, auditOptions{})
			checkReappend(t, d, acked, rng, 32)
			d.checkLogClean(t, "tree head moved under the sequencer")
			// The restarted server appends, over both front ends.
			for n := range 2 {
				a := &appender{d: d, l: l, prefix: fmt.Sprintf("after kill %d", round), n: n}
				if err := withRetry(func() error { return a.next(rng) }); err != nil {
					t.Fatalf("append after restart: %v", err)
				}
			}
			if t.Failed() {
				t.FailNow()
			}
		}
		acked, seen := l.snapshot()
		audit(t, d, key, acked, seen, auditOptions{})
	})
}

// TestGracefulShutdown sends SIGTERM while appends wait in a pooled batch:
// tlogd must answer them (not fail them), fail or answer later appends
// without hanging, exit 0, and keep every acknowledged entry.
func TestGracefulShutdown(t *testing.T) {
	for _, age := range []string{"2s", "1m", "5ms"} {
		t.Run("batch-max-age="+age, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, st store) {
				testGracefulShutdown(t, st, age)
			})
		})
	}
}

func testGracefulShutdown(t *testing.T, st store, age string) {
	args := append(st.args(), "--batch-max-age", age)
	d := start(t, options{args: args})
	key := d.fetchLogKey(t)
	l := newLedger(t, key)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 15))

	// Each appender's first append is pooled when SIGTERM arrives (no
	// batch is due for age); later ones start during the shutdown.
	const appenders = 16
	var termAt atomic.Int64 // unix nanoseconds of the SIGTERM
	var wg sync.WaitGroup
	var acks, errs, early atomic.Int64
	var refusals errorKinds
	var sent sync.WaitGroup
	for n := range appenders {
		sent.Add(1)
		a := &appender{d: d, l: l, prefix: "shutdown", n: n, sent: sent.Done}
		arng := rand.New(rand.NewPCG(rng.Uint64(), uint64(n)))
		wg.Go(func() {
			for call := 0; ; call++ {
				err := a.next(arng)
				switch {
				case err == nil && call == 0 && termAt.Load() == 0:
					early.Add(1) // a slow machine: the batch fell due before SIGTERM
				case err == nil:
				case isDeadline(err):
					t.Errorf("appender %d: append hung for %v during shutdown: %v", n, callTimeout, err)
					return
				case call == 0:
					t.Errorf("appender %d: an append pooled before SIGTERM failed: %v", n, err)
					return
				default:
					errs.Add(1)
					refusals.add(err)
					return // the server no longer takes appends
				}
				acks.Add(1)
			}
		})
	}
	// Once every first append is on the wire, give the server a moment to
	// pool them.
	allSent := make(chan struct{})
	go func() { sent.Wait(); close(allSent) }()
	select {
	case <-allSent:
	case <-time.After(callTimeout):
		t.Fatal("the first appends were not sent")
	}
	time.Sleep(400 * time.Millisecond)
	termAt.Store(time.Now().UnixNano())
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := d.wait(45 * time.Second)
	took := time.Since(time.Unix(0, termAt.Load()))
	wg.Wait()
	t.Logf("exit code %d %v after SIGTERM; %d appends acknowledged (%d before SIGTERM), %d refused", code, took.Round(time.Millisecond), acks.Load(), early.Load(), errs.Load())
	t.Logf("refusals: %s", refusals.String())
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if took > 10*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if !strings.Contains(d.stderr.String(), "stopped") {
		t.Errorf("no \"stopped\" line in the log")
	}
	d.checkLogClean(t)
	if t.Failed() {
		t.FailNow()
	}

	d = start(t, options{args: args})
	acked, seen := l.snapshot()
	if len(acked) == 0 {
		t.Fatal("nothing was acknowledged")
	}
	audit(t, d, key, acked, seen, auditOptions{allInclusion: true})
}

// TestSecondInstance starts a second tlogd on the store of a running one.
// Embedded: it must fail fast, naming the lock, and leave the first
// working. PostgreSQL (shared by design): the two may both run, but the log
// must never fork nor lose an acknowledged entry.
func TestSecondInstance(t *testing.T) {
	eachBackend(t, func(t *testing.T, st store) {
		d1 := start(t, options{args: st.args()})
		key := d1.fetchLogKey(t)
		l := newLedger(t, key)
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
		for n := range 4 {
			a := &appender{d: d1, l: l, prefix: "first", n: n}
			if err := a.next(rng); err != nil {
				t.Fatalf("append: %v", err)
			}
		}

		if st.databaseURL == "" {
			began := time.Now()
			d2 := launch(t, options{args: st.args()})
			code := d2.wait(20 * time.Second)
			took := time.Since(began)
			msg := d2.stderr.String()
			t.Logf("second tlogd: exit code %d after %v: %s", code, took.Round(time.Millisecond), strings.TrimSpace(msg))
			if code == 0 {
				t.Errorf("a second tlogd on the same --data-dir exited 0")
			}
			if took > 10*time.Second {
				t.Errorf("the second tlogd took %v to fail", took)
			}
			if !strings.Contains(msg, "lock") || !strings.Contains(msg, "another process") {
				t.Errorf("the error does not say the store is locked by another process: %q", msg)
			}
			for n := range 4 {
				a := &appender{d: d1, l: l, prefix: "after the second", n: n}
				if err := a.next(rng); err != nil {
					t.Fatalf("the first tlogd no longer appends: %v", err)
				}
			}
			acked, seen := l.snapshot()
			audit(t, d1, key, acked, seen, auditOptions{allInclusion: true})
			d1.checkLogClean(t)
			return
		}

		// PostgreSQL: two processes on one database, both appending. A
		// batch that loses the compare-and-swap of the tree head to the
		// other fails with UNAVAILABLE (retry) and its sequencer re-reads
		// the head.
		d2 := start(t, options{args: st.args()})
		if k := d2.fetchLogKey(t); k.vkey != key.vkey {
			t.Fatalf("second tlogd serves key %q, first %q", k.vkey, key.vkey)
		}
		var wg sync.WaitGroup
		var lost [2]atomic.Int64
		stop := time.Now().Add(500 * time.Millisecond)
		for n := range 8 {
			di := n / 2 % 2
			a := &appender{d: []*daemon{d1, d2}[di], l: l, prefix: "both", n: n}
			arng := rand.New(rand.NewPCG(rng.Uint64(), uint64(n)))
			wg.Go(func() {
				for time.Now().Before(stop) {
					err := a.next(arng)
					switch {
					case err == nil:
					case retriable(err):
						lost[di].Add(1)
					default:
						t.Errorf("append to tlogd %d: %v", di+1, err)
						return
					}
				}
			})
		}
		wg.Wait()
		// Both go on appending.
		for i, d := range []*daemon{d1, d2} {
			a := &appender{d: d, l: l, prefix: "after both", n: i}
			if err := withRetry(func() error { return a.next(rng) }); err != nil {
				t.Errorf("%s no longer appends: %v", d.name, err)
			}
		}
		acked, seen := l.snapshot()
		t.Logf("two processes: %d entries acknowledged; batches lost to the other writer: first %d, second %d",
			len(acked), lost[0].Load(), lost[1].Load())
		for _, d := range []*daemon{d1, d2} {
			d.cmd.Process.Signal(syscall.SIGTERM)
			if code := d.wait(30 * time.Second); code != 0 {
				t.Errorf("%s: exit code %d after SIGTERM", d.name, code)
			}
		}
		// A fresh process sees one history holding everything acknowledged.
		d3 := start(t, options{args: st.args()})
		audit(t, d3, key, acked, seen, auditOptions{})
		checkReappend(t, d3, acked, rng, 16)
	})
}

// errorKinds counts errors by their text without addresses.
type errorKinds struct {
	mu sync.Mutex
	n  map[string]int
}

var addrRE = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

func (k *errorKinds) add(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.n == nil {
		k.n = map[string]int{}
	}
	k.n[addrRE.ReplaceAllString(err.Error(), "ADDR")]++
}

func (k *errorKinds) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for msg, n := range k.n {
		fmt.Fprintf(&b, "\n\t%d× %s", n, msg)
	}
	return b.String()
}

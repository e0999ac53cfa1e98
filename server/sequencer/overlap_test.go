package sequencer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/storage"
)

// gate holds the next batch's transaction, once armed, until it is
// released, and then makes it succeed or fail as told.
type gate struct {
	storage.Store
	integrates atomic.Int64

	mu      sync.Mutex
	entered chan struct{} // closed when the held transaction has started
	hold    chan struct{} // the held transaction waits until it is closed
	fail    string        // "": stored; "before": refused, nothing stored; "after": stored, reported failed; "fatal": refused as invalid
}

// arm holds the next transaction; close the returned hold to release it.
func (g *gate) arm(fail string) (entered, hold chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.entered, g.hold, g.fail = make(chan struct{}), make(chan struct{}), fail
	return g.entered, g.hold
}

func (g *gate) Integrate(ctx context.Context, log string, b *storage.Batch) error {
	g.integrates.Add(1)
	g.mu.Lock()
	entered, hold, fail := g.entered, g.hold, g.fail
	g.entered, g.hold, g.fail = nil, nil, ""
	g.mu.Unlock()
	if hold != nil {
		close(entered)
		<-hold
	}
	switch fail {
	case "before":
		return errInjected
	case "fatal":
		return fmt.Errorf("%w: %w", storage.ErrInvalid, errInjected)
	}
	err := g.Store.Integrate(ctx, log, b)
	if err == nil && fail == "after" {
		return errInjected
	}
	return err
}

// countingSigner counts the checkpoints it signs.
type countingSigner struct {
	note.Signer
	signed atomic.Int64
}

func (c *countingSigner) Sign(msg []byte) ([]byte, error) {
	c.signed.Add(1)
	return c.Signer.Sign(msg)
}

type added struct {
	res []Result
	err error
}

func addAsync(s *Sequencer, data ...string) <-chan added {
	entries := make([]Entry, len(data))
	for i, d := range data {
		entries[i].Data = []byte(d)
	}
	c := make(chan added, 1)
	go func() {
		res, err := s.Add(context.Background(), entries)
		c <- added{res, err}
	}()
	return c
}

// succeeded checks an answer's error against want (nil: success) and
// reports whether it is a success, whose results are then to be checked.
func succeeded(t *testing.T, what string, r added, want error) bool {
	t.Helper()
	switch {
	case want != nil && !errors.Is(r.err, want):
		t.Fatalf("%s: %v, want %v", what, r.err, want)
	case want == nil && r.err != nil:
		t.Fatalf("%s: %v", what, r.err)
	}
	return want == nil
}

func await[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer", what)
		panic("unreachable")
	}
}

// TestOverlap checks that a batch is prepared and signed while the batch
// before it commits, stored only after that one landed, and prepared again
// on what storage holds when that one was not stored as prepared: refused,
// stored but reported failed, refused for a duplicate (and stored without
// it), or refused fatally. Each time the callers get the right answers and
// the log verifies.
func TestOverlap(t *testing.T) {
	cases := []struct {
		name      string
		fail      string
		a         []string
		aErr      error
		aIndex    []uint64 // with aErr == nil
		bErr      error
		bFirst    uint64 // B's first index, with bErr == nil
		finalSize uint64
	}{
		{name: "stored", a: []string{"a1", "a2"}, aIndex: []uint64{lookupWindow, lookupWindow + 1}, bFirst: lookupWindow + 2, finalSize: lookupWindow + 5},
		{name: "refused", fail: "before", a: []string{"a1", "a2"}, aErr: ErrUnavailable, bFirst: lookupWindow, finalSize: lookupWindow + 3},
		{name: "stored but failed", fail: "after", a: []string{"a1", "a2"}, aErr: ErrUnavailable, bFirst: lookupWindow + 2, finalSize: lookupWindow + 5},
		{name: "duplicate", a: []string{"a1", "warm 0"}, aIndex: []uint64{lookupWindow, 0}, bFirst: lookupWindow + 1, finalSize: lookupWindow + 4},
		{name: "fatal", fail: "fatal", a: []string{"a1", "a2"}, aErr: ErrFatal, bErr: ErrFatal, finalSize: lookupWindow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachDriver(t, func(t *testing.T, open func(t testing.TB) storage.Store) {
				g := &gate{Store: open(t)}
				l := newTestLog(t, g)
				cfg := l.config(t)
				cs := &countingSigner{Signer: l.signer}
				cfg.Signer = cs
				s := startFailing(t, cfg, tc.bErr != nil)
				// A sequencer looks the identities of its first batches
				// up, and does not overlap them: append those one by one.
				for i := range lookupWindow {
					if r := await(t, addAsync(s, fmt.Sprintf("warm %d", i)), "warm-up"); r.err != nil {
						t.Fatal(r.err)
					}
				}

				entered, hold := g.arm(tc.fail)
				a := addAsync(s, tc.a...)
				await(t, entered, "A's transaction")
				signed, integrates := cs.signed.Load(), g.integrates.Load()
				b := addAsync(s, "b1", "b2", "b3")
				for deadline := time.Now().Add(30 * time.Second); cs.signed.Load() == signed; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("B was not prepared while A's transaction ran")
					}
				}
				if n := g.integrates.Load(); n != integrates {
					t.Fatalf("B's transaction started before A's landed (%d transactions, want %d)", n, integrates)
				}
				close(hold)

				if ra := await(t, a, "A"); succeeded(t, "A", ra, tc.aErr) {
					for i, r := range ra.res {
						if r.Index != tc.aIndex[i] || r.Duplicate != (tc.a[i] == "warm 0") {
							t.Errorf("A's entry %d: index %d, duplicate %v; want %d", i, r.Index, r.Duplicate, tc.aIndex[i])
						}
						l.checkResult(t, r, []byte(tc.a[i]))
					}
				}
				if rb := await(t, b, "B"); succeeded(t, "B", rb, tc.bErr) {
					for i, r := range rb.res {
						if want := tc.bFirst + uint64(i); r.Index != want || r.Duplicate {
							t.Errorf("B's entry %d: index %d, duplicate %v; want %d", i, r.Index, r.Duplicate, want)
						}
						l.checkResult(t, r, fmt.Appendf(nil, "b%d", i+1))
					}
				}
				if size := l.verify(t); size != tc.finalSize {
					t.Errorf("log size %d, want %d", size, tc.finalSize)
				}
			})
		})
	}
}

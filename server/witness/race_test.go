package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// transition is one add-checkpoint: old -> size.
type transition struct{ old, size uint64 }

// success is a 200 response to an add-checkpoint.
type success struct {
	transition
	cosignature string
}

// race has many goroutines submit checkpoints of increasing sizes at once,
// each starting from its predecessor's size and, on 409, retrying from the
// size the witness reports if that is still below its own (what a log does).
// It returns the successful transitions, and the errors seen, including a
// stored size that went down while it ran.
func race(url string, l *fakeLog, state State, sizes uint64) ([]success, []error) {
	var (
		mu        sync.Mutex
		successes []success
		errs      []error
		start     = make(chan struct{})
		wg        sync.WaitGroup
		done      atomic.Bool
		client    = &http.Client{Timeout: time.Minute}
	)
	// Prebuild every request, so the goroutines only race on the witness.
	bodies := make(map[transition][]byte)
	for size := uint64(1); size <= sizes; size++ {
		for old := uint64(0); old <= size; old++ {
			bodies[transition{old, size}] = l.request(old, size)
		}
	}

	// Watch the state: its size must never go down.
	watched := make(chan error, 1)
	go func() {
		var last uint64
		for !done.Load() {
			r, err := state.Get(context.Background(), l.origin)
			if errors.Is(err, ErrNoRecord) {
				continue
			}
			if err != nil {
				watched <- err
				return
			}
			if r.Size < last {
				watched <- fmt.Errorf("stored size went back from %d to %d", last, r.Size)
				return
			}
			last = r.Size
		}
		watched <- nil
	}()

	fail := func(format string, args ...any) {
		mu.Lock()
		errs = append(errs, fmt.Errorf(format, args...))
		mu.Unlock()
	}
	submit := func(old, size uint64) {
		defer wg.Done()
		<-start
		for attempt := 0; attempt < 1000; attempt++ {
			resp, err := client.Post(url+"/add-checkpoint", "text/plain", bytes.NewReader(bodies[transition{old, size}]))
			if err != nil {
				fail("%v", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				mu.Lock()
				successes = append(successes, success{transition{old, size}, string(b)})
				mu.Unlock()
				return
			case http.StatusConflict:
				got, err := strconv.ParseUint(strings.TrimSuffix(string(b), "\n"), 10, 64)
				if err != nil || resp.Header.Get("Content-Type") != "text/x.tlog.size" {
					fail("bad 409 response %q", b)
					return
				}
				if got > size {
					return // overtaken: a log would give up on this checkpoint
				}
				old = got
			default:
				fail("old %d size %d: status %d %q", old, size, resp.StatusCode, b)
				return
			}
		}
		fail("size %d: too many attempts", size)
	}
	for size := uint64(1); size <= sizes; size++ {
		// Each size twice: from its predecessor, and from its
		// predecessor's predecessor; plus a re-submission of the same size.
		wg.Add(3)
		go submit(size-1, size)
		go submit(size-min(size, 2), size)
		go submit(size, size)
	}
	close(start)
	wg.Wait()
	done.Store(true)
	if err := <-watched; err != nil {
		errs = append(errs, err)
	}
	return successes, errs
}

// checkTransitions checks that the successful transitions form one chain of
// states (no two moved away from the same state: that would be a rollback
// or a fork), and returns the largest size.
func checkTransitions(successes []success) (uint64, error) {
	from := map[uint64]uint64{} // old -> size, for old != size
	var largest uint64
	for _, s := range successes {
		if s.old > s.size {
			return 0, fmt.Errorf("cosigned %d -> %d", s.old, s.size)
		}
		largest = max(largest, s.size)
		if s.old == s.size {
			continue // a re-cosignature of the current state
		}
		if prev, ok := from[s.old]; ok {
			return 0, fmt.Errorf("two transitions from size %d: to %d and to %d (one was rolled back)", s.old, prev, s.size)
		}
		from[s.old] = s.size
	}
	// Walk the chain from 0: it must reach largest.
	at := uint64(0)
	for at != largest {
		next, ok := from[at]
		if !ok {
			return 0, fmt.Errorf("chain of transitions breaks at %d, largest is %d", at, largest)
		}
		at = next
	}
	return largest, nil
}

func TestConcurrentAddCheckpoint(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reopen func() State) {
		state := openState(t, reopen)
		l := newFakeLog(t, "example.com/raced")
		const sizes = 40
		l.grow(sizes, "leaf")
		w := newTestWitness(t, state, l.config())
		srv := httptest.NewServer(w)
		defer srv.Close()

		successes, errs := race(srv.URL, l, state, sizes)
		for _, err := range errs {
			t.Error(err)
		}
		largest, err := checkTransitions(successes)
		if err != nil {
			t.Fatalf("%v\n%v", err, successes)
		}
		for _, s := range successes {
			w.checkCosignature(t, l.checkpoint(s.size), s.cosignature)
		}
		if largest != sizes {
			t.Errorf("largest cosigned size %d, want %d", largest, sizes)
		}
		r := mustGet(t, state, l.origin)
		if r.Size != largest || r.Root != l.root(largest) {
			t.Errorf("final state %d, want %d", r.Size, largest)
		}
		t.Logf("%d successful add-checkpoints", len(successes))
	})
}

// racyState is a broken State that checks and writes in two steps. The race
// test must catch it, or it proves nothing. So that the test does not depend
// on the scheduler, the first update to pass its check holds its write until
// a second one has passed its check too: both saw the same stored state.
type racyState struct {
	mu     sync.Mutex
	m      map[string]Record
	passed int
	both   chan struct{} // closed once two updates have passed their check
}

func (s *racyState) Get(ctx context.Context, origin string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[origin]
	if !ok {
		return Record{}, ErrNoRecord
	}
	return r, nil
}

func (s *racyState) Update(ctx context.Context, origin string, fn func(Record, bool) (Record, error)) error {
	cur, err := s.Get(ctx, origin)
	next, err := fn(cur, err == nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.passed++; s.passed == 2 {
		close(s.both)
	}
	s.mu.Unlock()
	select { // between check and write
	case <-s.both:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	s.m[origin] = next
	s.mu.Unlock()
	return nil
}

func (s *racyState) Close() error { return nil }

func TestRaceTestCatchesRollback(t *testing.T) {
	state := &racyState{m: map[string]Record{}, both: make(chan struct{})}
	l := newFakeLog(t, "example.com/raced")
	const sizes = 20
	l.grow(sizes, "leaf")
	w := newTestWitness(t, state, l.config())
	srv := httptest.NewServer(w)
	defer srv.Close()
	successes, errs := race(srv.URL, l, state, sizes)
	if _, err := checkTransitions(successes); err == nil && len(errs) == 0 {
		t.Fatalf("a state without compare-and-swap went unnoticed: %v", successes)
	}
}

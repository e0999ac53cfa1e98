package witness

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestStateSurvivesRestart cosigns, closes the store, reopens it under a new
// Witness, and checks the witness remembers.
func TestStateSurvivesRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reopen func() State) {
		l := newFakeLog(t, "example.com/restarted")
		l.grow(20, "leaf")

		state := reopen()
		w := newTestWitness(t, state, l.config())
		w.mustCosign(t, l, 0, 7)
		cosig := w.mustCosign(t, l, 7, 12)
		if err := state.Close(); err != nil {
			t.Fatal(err)
		}

		state = openState(t, reopen)
		r := mustGet(t, state, l.origin)
		if r.Size != 12 || r.Root != l.root(12) || string(r.Checkpoint) != string(l.checkpoint(12))+cosig {
			t.Fatalf("after restart: size %d, checkpoint %q", r.Size, r.Checkpoint)
		}
		w2 := newTestWitnessWithKey(t, w.cosigner, w.vkey, state, l.config())
		code, ctype, body := post(t, w2, l.request(0, 15))
		if code != 409 || ctype != "text/x.tlog.size" || body != "12\n" {
			t.Fatalf("after restart, old 0: %d %q %q, want 409 \"12\\n\"", code, ctype, body)
		}
		w2.mustCosign(t, l, 12, 15)
	})
}

// TestStateUpdateIsAtomic runs many concurrent read-increment-write Updates
// on one origin, new at first (so the PostgreSQL INSERT races too): none may
// be lost.
func TestStateUpdateIsAtomic(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reopen func() State) {
		state := openState(t, reopen)
		ctx := context.Background()
		const n = 50
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := state.Update(ctx, "example.com/counter", func(cur Record, found bool) (Record, error) {
					if found != (cur.Size > 0) {
						t.Errorf("found %v with size %d", found, cur.Size)
					}
					cur.Size++
					cur.Root[0] = byte(cur.Size)
					cur.Checkpoint = []byte("x")
					cur.Time = time.Unix(int64(cur.Size), 0)
					return cur, nil
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		r := mustGet(t, state, "example.com/counter")
		if r.Size != n || r.Root[0] != n || r.Time.Unix() != n {
			t.Fatalf("after %d increments: %+v", n, r)
		}
	})
}

// TestStateRoundTrip checks a record comes back as stored, that a failing
// fn writes nothing, and Get of an unknown origin.
func TestStateRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reopen func() State) {
		state := openState(t, reopen)
		ctx := context.Background()
		if _, err := state.Get(ctx, "example.com/none"); !errors.Is(err, ErrNoRecord) {
			t.Fatalf("Get of unknown origin: %v, want ErrNoRecord", err)
		}
		want := Record{Size: 1<<63 - 1, Checkpoint: []byte("note\n\n— sig\n"), Time: time.Unix(1700000000, 0)}
		for i := range want.Root {
			want.Root[i] = byte(i)
		}
		if err := state.Update(ctx, "example.com/a b", func(Record, bool) (Record, error) { return want, nil }); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		if err := state.Update(ctx, "example.com/a b", func(Record, bool) (Record, error) {
			return Record{Size: 1}, boom
		}); err != boom {
			t.Fatalf("Update returned %v, want fn's error", err)
		}
		if got := mustGet(t, state, "example.com/a b"); !equalRecords(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
}

func TestBoltStateFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBoltState(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestPostgresCompareAndSwapRetries makes two Updates of a new origin
// interleave: both read "no record", the second inserts first, so the
// first's INSERT finds a row; it must run fn again on the new record rather
// than overwrite it.
func TestPostgresCompareAndSwapRetries(t *testing.T) {
	state := openState(t, postgresBackend.open(t))
	ctx := context.Background()
	const origin = "example.com/cas"
	read := make(chan struct{})
	release := make(chan struct{})
	var calls []bool // found, per call of A's fn
	done := make(chan error)
	go func() {
		done <- state.Update(ctx, origin, func(cur Record, found bool) (Record, error) {
			calls = append(calls, found)
			if len(calls) == 1 {
				close(read)
				<-release
				return Record{Size: 1, Checkpoint: []byte("A"), Time: time.Unix(1, 0)}, nil
			}
			if cur.Size != 2 {
				t.Errorf("retry saw size %d, want B's 2", cur.Size)
			}
			return Record{}, &ConflictError{Size: cur.Size}
		})
	}()
	<-read
	if err := state.Update(ctx, origin, func(cur Record, found bool) (Record, error) {
		return Record{Size: 2, Checkpoint: []byte("B"), Time: time.Unix(2, 0)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	close(release)
	var conflict *ConflictError
	if err := <-done; !errors.As(err, &conflict) {
		t.Fatalf("A's Update returned %v, want its fn's conflict on retry", err)
	}
	if len(calls) != 2 || calls[0] || !calls[1] {
		t.Fatalf("A's fn calls (found): %v, want [false true]", calls)
	}
	if r := mustGet(t, state, origin); r.Size != 2 || string(r.Checkpoint) != "B" {
		t.Fatalf("record %d %q, want B's", r.Size, r.Checkpoint)
	}
}

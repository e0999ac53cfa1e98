package sequencer

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tlog-dev/tlog/storage"
)

// refusingStore refuses every Integrate as a malformed batch, as a store
// does whose tiles disagree with the batch: tiles that grew past a tree head
// that was then moved back (a rollback).
type refusingStore struct{ storage.Store }

func (refusingStore) Integrate(context.Context, string, *storage.Batch) error {
	return fmt.Errorf("%w: tile 0/0 would shrink or rewrite the stored hashes", storage.ErrInvalid)
}

// TestStopsWhenStorageRefuses checks that a batch that storage refuses as
// invalid stops the sequencer (ErrFatal) instead of being retried forever:
// prepare only builds well-formed batches, so storage holds data that
// disagrees with the signed tree.
func TestStopsWhenStorageRefuses(t *testing.T) {
	store := drivers["embedded"](t)
	l := newTestLog(t, refusingStore{store})
	s, err := New(context.Background(), l.config(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	if _, err := s.Add(context.Background(), []Entry{{Data: []byte("x")}}); !errors.Is(err, ErrFatal) || !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("Add: %v, want ErrFatal wrapping storage.ErrInvalid", err)
	}
	if err := <-done; !errors.Is(err, ErrFatal) {
		t.Fatalf("Run: %v, want ErrFatal", err)
	}
	if _, err := s.Add(context.Background(), []Entry{{Data: []byte("y")}}); !errors.Is(err, ErrFatal) {
		t.Fatalf("Add after the stop: %v, want ErrFatal", err)
	}
}

// Package storagetest is the conformance suite of the storage contract. Every
// driver's tests call Run once:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) func() (storage.Store, error) {
//			path := filepath.Join(t.TempDir(), "tlog.db")
//			return func() (storage.Store, error) { return embedded.Open(path, embedded.Config{}) }
//		})
//	}
//
// Each subtest writes through the contract the way the sequencer does (look
// up identities, extend the right edge with tree.Edge, sign the checkpoint,
// Integrate), reads everything back, cross-checks roots and proofs with
// golang.org/x/mod/sumdb/tlog, and ends by verifying the whole log with
// storage.VerifyLog.
package storagetest

import (
	"context"
	"testing"

	"github.com/tlog-dev/tlog/storage"
)

// Factory creates a fresh, empty store location for t and returns a function
// that opens it. Calling open again after Close reopens the same data. The
// factory cleans up the location itself (t.TempDir, t.Cleanup); the suite
// closes every store it opens.
type Factory func(t *testing.T) (open func() (storage.Store, error))

// Run runs the conformance suite against the stores f creates. Each subtest
// gets a fresh store.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		run  func(e *env)
	}{
		{"EmptyLog", testEmptyLog},
		{"UnknownLog", testUnknownLog},
		{"Batches", testBatches},
		{"Proofs", testProofs},
		{"Dedup", testDedup},
		{"Conflict", testConflict},
		{"ConcurrentIntegrate", testConcurrentIntegrate},
		{"InvalidBatch", testInvalidBatch},
		{"TilesOnlyGrow", testTilesOnlyGrow},
		{"Checkpoints", testCheckpoints},
		{"Cosignatures", testCosignatures},
		{"WitnessPolicy", testWitnessPolicy},
		{"MultipleLogs", testMultipleLogs},
		{"Reopen", testReopen},
		{"CancelledContext", testCancelledContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(newEnv(t, f))
		})
	}
}

// env is one subtest's store.
type env struct {
	t    *testing.T
	ctx  context.Context
	open func() (storage.Store, error)
	s    storage.Store
}

func newEnv(t *testing.T, f Factory) *env {
	t.Helper()
	e := &env{t: t, ctx: t.Context(), open: f(t)}
	s, err := e.open()
	if err != nil {
		t.Fatalf("opening a fresh store: %v", err)
	}
	e.s = s
	t.Cleanup(func() {
		if e.s != nil {
			if err := e.s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return e
}

// run runs f as a subtest of e.t; while it runs, e (and every testLog of
// e) reports to the subtest.
func (e *env) run(name string, f func()) {
	parent := e.t
	parent.Run(name, func(t *testing.T) {
		e.t = t
		defer func() { e.t = parent }()
		f()
	})
}

// reopen closes the store and opens it again.
func (e *env) reopen() {
	e.t.Helper()
	s := e.s
	e.s = nil
	if err := s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	if s, err := e.open(); err != nil {
		e.t.Fatalf("reopening the store: %v", err)
	} else {
		e.s = s
	}
}

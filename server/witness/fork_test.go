package witness

import (
	"net/http"
	"testing"
)

// TestForkedLog plays a log operator who keeps one key and origin but shows
// two histories: the witness cosigns one, then must refuse the other at every
// size, and its state must not move.
func TestForkedLog(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reopen func() State) {
		state := openState(t, reopen)
		honest := newFakeLog(t, "example.com/forked")
		honest.grow(13, "common")
		forked := honest.fork() // same key, same first 13 leaves
		honest.grow(20, "honest")
		forked.grow(20, "evil")
		const n = 21
		if honest.root(13) != forked.root(13) || honest.root(n) == forked.root(n) {
			t.Fatal("the two histories should share 13 leaves and then differ")
		}

		w := newTestWitness(t, state, honest.config())
		w.mustCosign(t, honest, 0, n)
		want := mustGet(t, state, honest.origin)

		refuse := func(name string, body []byte, wantCode int) {
			t.Helper()
			code, _, resp := post(t, w, body)
			if code != wantCode {
				t.Errorf("%s: status %d %q, want %d", name, code, resp, wantCode)
			}
			if got := mustGet(t, state, honest.origin); !equalRecords(got, want) {
				t.Fatalf("%s: state changed from size %d to %d", name, want.Size, got.Size)
			}
		}
		// Larger fork: the log's honest proof does not reach the fork's root.
		for _, m := range []uint64{n + 1, n + 5, 33} {
			refuse("fork with honest proof", requestBody(n, honest.proof(n, m), forked.checkpoint(m)), http.StatusUnprocessableEntity)
			refuse("fork with its own proof", requestBody(n, forked.proof(n, m), forked.checkpoint(m)), http.StatusUnprocessableEntity)
			refuse("fork with no proof", requestBody(n, nil, forked.checkpoint(m)), http.StatusUnprocessableEntity)
		}
		// Same size, other root.
		refuse("fork at the same size", requestBody(n, nil, forked.checkpoint(n)), http.StatusUnprocessableEntity)
		// Old sizes other than n get 409 whatever they carry.
		refuse("fork from its own old size", forked.request(13, 30), http.StatusConflict)
		refuse("fork from zero", forked.request(0, 30), http.StatusConflict)

		// The honest log still goes on.
		w.mustCosign(t, honest, n, 33)
		// And the fork still cannot.
		want = mustGet(t, state, honest.origin)
		refuse("fork at 33", requestBody(33, nil, forked.checkpoint(33)), http.StatusUnprocessableEntity)
	})
}

package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tlog-dev/tlog/internal/pgtest"
)

// TestZombieCommit: on PostgreSQL, the last transaction of a SIGKILLed
// tlogd can commit after the restarted tlogd has loaded the tree head,
// because its COMMIT was already sent, pipelined with the batch. The
// restarted tlogd's next batch then loses the compare-and-swap of the tree
// head: that batch may fail with UNAVAILABLE, but the log must go on (no
// fork, nothing acknowledged lost, appends accepted again at once).
//
// To make the window certain, the test holds a lock on the checkpoints
// table (a name from migrations/) while the first tlogd dies in the middle
// of its transaction.
func TestZombieCommit(t *testing.T) {
	st := store{dataDir: t.TempDir(), databaseURL: pgtest.NewDatabase(t)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d1 := start(t, options{args: st.args()})
	key := d1.fetchLogKey(t)
	l := newLedger(t, key)
	first := []byte("first")
	a, err := d1.appendHTTP(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	l.record(a, first)

	conn, err := pgx.Connect(ctx, st.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE checkpoints IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	// This append's transaction waits for the lock with its COMMIT sent.
	go d1.appendHTTP(ctx, []byte("second, never acknowledged"))
	time.Sleep(500 * time.Millisecond)
	d1.kill()

	d2 := start(t, options{args: st.args()}) // loads the tree head of size 1
	if err := tx.Commit(ctx); err != nil {   // the dead process's batch commits
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	for i, data := range [][]byte{[]byte("third"), []byte("fourth")} {
		var a appended
		err := withRetry(func() (err error) {
			a, err = d2.appendHTTP(ctx, data)
			return err
		})
		if err != nil {
			t.Fatalf("append %d to the restarted tlogd: %v", i, err)
		}
		l.record(a, data)
	}
	acked, seen := l.snapshot()
	r := audit(t, d2, key, acked, seen, auditOptions{allInclusion: true})
	t.Logf("tree: %q", r.entries)
	d2.checkLogClean(t, "tree head moved under the sequencer")
}

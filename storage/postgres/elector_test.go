package postgres

import (
	"errors"
	"testing"
	"time"

	"github.com/tlog-dev/tlog/storage"
)

// TestElector: of two stores (two processes) on one database, exactly one
// leads a log; when the leader's lock connection dies (its backend is
// terminated, as when the process is killed), the leadership is reported
// lost and the other takes it; Resign hands it over at once; leaders are
// per log.
func TestElector(t *testing.T) {
	a, url := openStore(t)
	b, err := Open(t.Context(), url, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	newTestLog(t, a, "one")
	newTestLog(t, a, "two")
	ctx := t.Context()

	if addr, err := a.Leader(ctx, "one"); err != nil || addr != "" {
		t.Fatalf("Leader before any election: %q, %v; want empty", addr, err)
	}
	if _, err := a.TryLead(ctx, "nope", "x"); !errors.Is(err, storage.ErrLogNotFound) {
		t.Errorf("TryLead of an unknown log: %v, want ErrLogNotFound", err)
	}
	la, err := a.TryLead(ctx, "one", "a:1")
	if err != nil || la == nil {
		t.Fatalf("first TryLead: %v, %v; want leadership", la, err)
	}
	for _, s := range []*Store{a, b} {
		if l, err := s.TryLead(ctx, "one", "b:1"); err != nil || l != nil {
			t.Fatalf("second TryLead while led: %v, %v; want nil, nil", l, err)
		}
	}
	for _, s := range []*Store{a, b} {
		if addr, err := s.Leader(ctx, "one"); err != nil || addr != "a:1" {
			t.Errorf("Leader: %q, %v; want a:1", addr, err)
		}
	}
	// Another log has its own leader.
	lb2, err := b.TryLead(ctx, "two", "b:1")
	if err != nil || lb2 == nil {
		t.Fatalf("TryLead of another log: %v, %v", lb2, err)
	}
	defer lb2.Resign()

	// Kill the leader's session, as PostgreSQL does when its process dies.
	// (pg_locks shows the locks of every database: other tests' logs have
	// the same ids.)
	var pid int
	c := conn(t, url)
	if err := c.QueryRow(ctx, `
SELECT pid FROM pg_locks
 WHERE locktype = 'advisory' AND classid = $1 AND objid = (SELECT id FROM logs WHERE name = 'one') AND objsubid = 2
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, leaderLockClass).Scan(&pid); err != nil {
		t.Fatalf("finding the lock holder: %v", err)
	}
	if _, err := c.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-la.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("the leader did not notice, within 5s, that its lock connection died")
	}
	la.Resign()
	var lb storage.Leadership
	for deadline := time.Now().Add(5 * time.Second); lb == nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the other store did not take the leadership within 5s")
		}
		if lb, err = b.TryLead(ctx, "one", "b:1"); err != nil {
			t.Fatal(err)
		}
	}
	if addr, _ := a.Leader(ctx, "one"); addr != "b:1" {
		t.Errorf("Leader after the takeover: %q, want b:1", addr)
	}
	if l, _ := a.TryLead(ctx, "one", "a:1"); l != nil {
		t.Fatal("two leaders")
	}

	// Resign releases the lock at once.
	lb.Resign()
	lb.Resign() // twice is fine
	select {
	case <-lb.Lost():
	default:
		t.Error("Lost is not closed after Resign")
	}
	la2, err := a.TryLead(ctx, "one", "a:2")
	if err != nil || la2 == nil {
		t.Fatalf("TryLead after Resign: %v, %v", la2, err)
	}
	la2.Resign()
}

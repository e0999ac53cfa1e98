package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/migrations"
	"github.com/tlog-dev/tlog/storage"
)

// TestIdentitiesAcrossPartitions: an identity already in any partition of
// the log is refused, whether the partition's filter is built or not, and
// whether the batch stays in one partition or crosses into the next, where
// no index sees the entries of the partition it leaves.
func TestIdentitiesAcrossPartitions(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	c := conn(t, url)
	l := newTestLog(t, s, "log")
	other := newTestLog(t, s, "other") // shares the partitions
	var stored []storage.Entry
	for l.edge.Size() < 1050 {
		stored = append(stored, l.integrate(t, s, 37, 20, 1).Entries...)
		other.integrate(t, s, 50, 20)
	}
	id, err := s.logID(ctx, l.name)
	if err != nil {
		t.Fatal(err)
	}
	var parts int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'entries'::regclass`).Scan(&parts); err != nil {
		t.Fatal(err)
	}
	if parts < 11 {
		t.Fatalf("%d entry partitions for %d entries of %d each, want at least 11", parts, len(stored), testPartitionSize)
	}
	before := counts(t, c)

	// dup makes a batch of n fresh entries whose entry at position at repeats
	// the identity of stored entry of index idx.
	dup := func(n, at, idx int) *storage.Batch {
		b, _ := l.batch(t, n, 20)
		b.Entries[at].Identity = stored[idx].Identity
		return b
	}
	refused := func(what string, s *Store, b *storage.Batch) {
		t.Helper()
		if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrDuplicate) {
			t.Errorf("Integrate(%s) = %v, want ErrDuplicate", what, err)
		}
	}
	cases := []struct {
		name       string
		n, at, idx int
	}{
		{"full partition, first entry", 5, 0, 0},
		{"full partition, keyed identity", 5, 4, 1},
		{"full partition, middle", 5, 2, 555},
		{"partition being filled", 5, 3, 1020},
		{"crossing into the next partition: the entry in the next repeats one of the first", 60, 55, 1040},
		{"crossing: the entry in the next repeats one of a full partition", 60, 59, 250},
	}
	for _, tc := range cases {
		refused(tc.name, s, dup(tc.n, tc.at, tc.idx))
	}
	sameCounts(t, c, before)

	// Until a partition's filter is built, its look-ups take every identity.
	s3, err := Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for k := range int64(10) {
		s3.parts.building[partKey{id, k}] = true // as while being built
	}
	for _, tc := range cases {
		refused(tc.name+", no filters", s3, dup(tc.n, tc.at, tc.idx))
	}
	s3.Close()
	sameCounts(t, c, before)

	// The filters of the full partitions are built in the background.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM entry_filters WHERE log_id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d identity filters stored for log of 1050 entries in partitions of %d, want 10", n, testPartitionSize)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.buildFilter(ctx, id, 10); err == nil {
		t.Error("buildFilter of the partition being filled succeeded, want an error")
	}

	// A new Store reads the filters; the same duplicates are refused.
	s2, err := Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, tc := range cases {
		refused(tc.name+", filters read", s2, dup(tc.n, tc.at, tc.idx))
	}
	sameCounts(t, c, before)
	// Fresh identities are looked up only where a filter errs (~0.1%).
	b, next := l.batch(t, 60, 20)
	w, err := newBatchWrite(b)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := s2.batchProbes(ctx, id, w)
	if err != nil {
		t.Fatal(err)
	}
	probed := 0
	for _, p := range ps {
		if p.part < 10 {
			probed += len(p.keys)
		}
	}
	if probed > 5 {
		t.Errorf("%d of 60 fresh identities probed in the 10 full partitions (filters built), want about 0.6", probed)
	}

	want := map[storage.Hash]uint64{}
	ids := []storage.Hash{{1, 2, 3}}
	for _, i := range []int{0, 1, 99, 100, 555, 999, 1000, len(stored) - 1} {
		want[stored[i].Identity] = uint64(i)
		ids = append(ids, stored[i].Identity)
	}
	for _, st := range []*Store{s, s2} {
		got, err := st.LookupIdentities(ctx, l.name, ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("LookupIdentities found %d identities, want %d", len(got), len(want))
		}
		for h, i := range want {
			if got[h] != i {
				t.Errorf("LookupIdentities: identity of entry %d at %d", i, got[h])
			}
		}
	}
	if _, err := c.Exec(ctx, `UPDATE entry_partitioning SET size = 1000`); err == nil {
		t.Error("the partition size changed while partitions exist")
	}
	// The batch crossing into partition 11 goes in when it repeats nothing.
	if err := s2.Integrate(ctx, l.name, b); err != nil {
		t.Fatalf("Integrate(the crossing batch): %v", err)
	}
	l.edge, l.count = next, l.count+len(b.Entries)
	verifyLog(t, s2, l)
	verifyLog(t, s2, other)
}

// TestMigrateEntriesToPartitions: migration 0004 moves the entries of a
// database of schema version 3 into partitions, whose indexes then refuse
// their duplicates.
func TestMigrateEntriesToPartitions(t *testing.T) {
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	ms, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := migrate(ctx, pool, ms[:3], testConfig(t).Logger); err != nil {
		t.Fatal(err)
	}
	c := conn(t, url)
	for _, q := range []string{
		`INSERT INTO logs (name, origin, verifier_key, tree_size, root_hash) VALUES ('old', 'o', 'k', 1200, decode(repeat('00', 32), 'hex'))`,
		`INSERT INTO entries (log_id, idx, identity, data) SELECT 1, g, sha256(int8send(g)), int8send(g) FROM generate_series(0, 1199) g`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatalf("Open (migrating): %v", err)
	}
	defer s.Close()
	var rows, parts int
	if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM entries_p0), (SELECT count(*) FROM pg_inherits WHERE inhparent = 'entries'::regclass)`).Scan(&rows, &parts); err != nil {
		t.Fatal(err)
	}
	if rows != 1200 || parts != 1 {
		t.Errorf("after migration: %d rows in entries_p0, %d partitions; want 1200, 1", rows, parts)
	}
	if _, err := c.Exec(ctx, `INSERT INTO entries (log_id, idx, identity, data) VALUES (1, 1200, sha256(int8send(7::bigint)), '')`); err == nil {
		t.Error("a repeated identity went into the migrated partition")
	}
	got, err := s.LookupIdentities(ctx, "old", []storage.Hash{sha256Int8(7)})
	if err != nil || got[sha256Int8(7)] != 7 {
		t.Errorf("LookupIdentities after migration = %v, %v; want index 7", got, err)
	}
	var tables int
	if err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_tables WHERE tablename = 'entries_0003'`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("entries_0003 still there (%d, %v)", tables, err)
	}
}

// sha256Int8 is PostgreSQL's sha256(int8send(i)).
func sha256Int8(i uint64) storage.Hash {
	return sha256.Sum256(binary.BigEndian.AppendUint64(nil, i))
}

// TestFilterOfIncompletePartition: a full partition that misses entries
// (tampered with) gets no filter, so its look-ups keep taking every
// identity, and its build is not retried for every batch.
func TestFilterOfIncompletePartition(t *testing.T) {
	ctx := t.Context()
	s0, url := openStore(t)
	c := conn(t, url)
	l := newTestLog(t, s0, "log")
	first := l.integrate(t, s0, 250, 20)
	if _, err := c.Exec(ctx, `DELETE FROM entries WHERE idx = 150`); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.logID(ctx, l.name)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := l.batch(t, 5, 20)
	b.Entries[0].Identity = first.Entries[120].Identity
	if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrDuplicate) {
		t.Fatalf("Integrate(duplicate of entry 120) = %v, want ErrDuplicate", err)
	}
	failedAt := waitBuilds(t, s, partKey{id, 1})
	if failedAt.IsZero() {
		t.Error("the build of partition 1, which misses entry 150, did not fail")
	}
	var parts []int64
	rows, _ := c.Query(ctx, `SELECT part FROM entry_filters WHERE log_id = $1 ORDER BY part`, id)
	for rows.Next() {
		var k int64
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, k)
	}
	if err := rows.Err(); err != nil || len(parts) != 1 || parts[0] != 0 {
		t.Fatalf("filters stored for partitions %v (%v), want [0] only", parts, err)
	}
	// Still refused, by a look-up of every identity; no new build.
	if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrDuplicate) {
		t.Fatalf("Integrate(duplicate of entry 120) again = %v, want ErrDuplicate", err)
	}
	if again := waitBuilds(t, s, partKey{id, 1}); !again.Equal(failedAt) {
		t.Error("the failed build of partition 1 was run again at once")
	}
}

// waitBuilds waits for s's filter builds to end and returns the time the
// build of key last failed (zero if never).
func waitBuilds(t *testing.T, s *Store, key partKey) time.Time {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.parts.mu.Lock()
		n, failed := len(s.parts.building), s.parts.failed[key]
		s.parts.mu.Unlock()
		if n == 0 {
			return failed
		}
		if time.Now().After(deadline) {
			t.Fatal("filter builds still running after 30s")
		}
	}
}

package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

	// The filters of the full partitions were grown as s wrote them, and are
	// stored in the background.
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
	ps := probesOf(t, s2, id, w)
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
	// s0 grew the filters of partitions 0 and 1 as it wrote them; drop them
	// once stored, as if they had been written by a Store started later.
	waitFilters(t, c, 2)
	for _, q := range []string{`DELETE FROM entries WHERE idx = 150`, `DELETE FROM entry_filters WHERE part = 1`} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
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

// TestGrownFilters: a Store that writes a partition from its first entry
// has the partition's filter as soon as the partition fills, the filter a
// build from its rows makes, and stores it; a refused batch feeds nothing; a
// Store started in the middle of a partition grows no filter of it; and the
// filters grown at once are bounded.
func TestGrownFilters(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	c := conn(t, url)
	l := newTestLog(t, s, "log")
	id, err := s.logID(ctx, l.name)
	if err != nil {
		t.Fatal(err)
	}
	var stored []storage.Entry
	for l.edge.Size() < 250 {
		stored = append(stored, l.integrate(t, s, 37, 20).Entries...)
		b, _ := l.batch(t, 7, 20)
		b.Entries[3].Identity = stored[0].Identity
		if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrDuplicate) {
			t.Fatalf("Integrate(a batch repeating entry 0) = %v, want ErrDuplicate", err)
		}
	}
	// 259 entries: partitions 0 and 1 are full.
	s.parts.mu.Lock()
	grown := [][]byte{s.parts.filters[partKey{id, 0}], s.parts.filters[partKey{id, 1}]}
	building, g := len(s.parts.building), s.parts.growing[id]
	s.parts.mu.Unlock()
	if building != 0 {
		t.Errorf("%d filters being built from rows, want none (grown)", building)
	}
	if g == nil || g.part != 2 || g.next != 259 {
		t.Errorf("growing filter %+v, want one of partition 2 up to entry 259", g)
	}
	waitFilters(t, c, 2)
	for k, f := range grown {
		var saved []byte
		if err := c.QueryRow(ctx, `SELECT filter FROM entry_filters WHERE log_id = $1 AND part = $2`, id, k).Scan(&saved); err != nil {
			t.Fatal(err)
		}
		built, err := s.buildFilter(ctx, id, int64(k))
		if err != nil {
			t.Fatal(err)
		}
		if f == nil || !bytes.Equal(f, built) || !bytes.Equal(saved, built) {
			t.Errorf("partition %d: grown filter (%d bytes) or the stored one differs from the filter built from its rows", k, len(f))
		}
	}

	// A batch crossing into partition 3 looks up in partition 2 only the
	// identities its growing filter may hold, and is refused when one of
	// them is there.
	b, _ := l.batch(t, 60, 20)
	w, err := newBatchWrite(b)
	if err != nil {
		t.Fatal(err)
	}
	ps := probesOf(t, s, id, w)
	for _, p := range ps {
		if p.part == 2 && len(p.keys) > 5 {
			t.Errorf("%d of 19 fresh identities of partition 3 looked up in partition 2 (growing filter), want about 0.02", len(p.keys))
		}
	}
	b.Entries[50].Identity = stored[210].Identity
	if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrDuplicate) {
		t.Errorf("Integrate(crossing batch whose entry in partition 3 repeats entry 210) = %v, want ErrDuplicate", err)
	}
	got, err := s.LookupIdentities(ctx, l.name, []storage.Hash{stored[210].Identity, stored[258].Identity, {1}})
	if err != nil || len(got) != 2 || got[stored[210].Identity] != 210 || got[stored[258].Identity] != 258 {
		t.Errorf("LookupIdentities(entries 210, 258 and a fresh one) = %v, %v; want those two", got, err)
	}

	s2, err := Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	l.integrate(t, s2, 60, 20) // 259-318: fills partition 2, starts 3
	s2.parts.mu.Lock()
	f2, g2 := s2.parts.filters[partKey{id, 2}], s2.parts.growing[id]
	s2.parts.mu.Unlock()
	if f2 != nil {
		t.Error("a Store started in partition 2 has its filter without building it")
	}
	if g2 == nil || g2.part != 3 || g2.next != 319 {
		t.Errorf("growing filter %+v after the batch that starts partition 3, want one up to entry 319", g2)
	}
	verifyLog(t, s2, l)

	for i := range maxGrowing {
		small := newTestLog(t, s2, fmt.Sprintf("small%d", i))
		small.integrate(t, s2, 1, 20)
	}
	s2.parts.mu.Lock()
	n, g2 := len(s2.parts.growing), s2.parts.growing[id]
	s2.parts.mu.Unlock()
	if n != maxGrowing || g2 != nil {
		t.Errorf("%d filters growing (log's evicted: %t), want %d with the log's, fed first, evicted", n, g2 == nil, maxGrowing)
	}
}

// waitFilters waits until n identity filters are stored.
func waitFilters(t *testing.T, c *pgx.Conn, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var got int
		if err := c.QueryRow(t.Context(), `SELECT count(*) FROM entry_filters`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d identity filters stored after 30s, want %d", got, n)
		}
	}
}

// probesOf returns the look-ups Integrate makes for w.
func probesOf(t *testing.T, s *Store, id int64, w *batchWrite) []probe {
	t.Helper()
	fs, err := s.filters(t.Context(), id, w.prevSize/s.parts.size)
	if err != nil {
		t.Fatal(err)
	}
	return s.batchProbes(id, w, fs)
}

// TestPoolOfOneConnection: a Store whose pool has one connection integrates
// a batch that needs filters it must first read from the database (the
// batch holds the connection while its look-ups are chosen), and refuses a
// duplicate in a full partition, whether its look-ups took the connection
// before the transaction or were left to it.
func TestPoolOfOneConnection(t *testing.T) {
	s, url := openStore(t)
	l := newTestLog(t, s, "log")
	first := l.integrate(t, s, 250, 20)
	waitFilters(t, conn(t, url), 2)

	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	one, err := Open(t.Context(), url+sep+"pool_max_conns=1", testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, next := l.batch(t, 60, 20)
	if err := one.Integrate(ctx, l.name, b); err != nil {
		t.Fatalf("Integrate on a pool of one connection: %v", err)
	}
	l.edge, l.count = next, l.count+len(b.Entries)
	dup, _ := l.batch(t, 5, 20)
	dup.Entries[3].Identity = first.Entries[42].Identity
	if err := one.Integrate(ctx, l.name, dup); !errors.Is(err, storage.ErrDuplicate) {
		t.Errorf("Integrate(a duplicate of entry 42) on a pool of one connection = %v, want ErrDuplicate", err)
	}
	verifyLog(t, one, l)
}

// TestLookupsBeside: a batch's look-ups run on a connection of their own
// if one is free before the transaction needs their answer, and are left to
// the transaction if not; a duplicate is found either way.
func TestLookupsBeside(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	l := newTestLog(t, s, "log")
	first := l.integrate(t, s, 250, 20)
	waitFilters(t, conn(t, url), 2)
	id, err := s.logID(ctx, l.name)
	if err != nil {
		t.Fatal(err)
	}
	write := func(dupOf int) (*batchWrite, [][]byte) {
		t.Helper()
		b, _ := l.batch(t, 5, 20)
		if dupOf >= 0 {
			b.Entries[2].Identity = first.Entries[dupOf].Identity
		}
		w, err := newBatchWrite(b)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := s.filters(ctx, id, w.prevSize/s.parts.size)
		if err != nil {
			t.Fatal(err)
		}
		return w, fs
	}

	// A free connection: the look-ups run beside, before they are needed.
	w, fs := write(17)
	look := s.startLookups(ctx, id, w, fs)
	<-look.done
	rest, err := look.result()
	var dup *duplicateError
	if len(rest) != 0 || !errors.As(err, &dup) || dup.idx != 17 {
		t.Errorf("look-ups of a duplicate of entry 17 beside: left %d, err %v; want none left and a duplicate at 17", len(rest), err)
	}
	w, fs = write(-1)
	look = s.startLookups(ctx, id, w, fs)
	<-look.done
	if rest, err := look.result(); len(rest) != 0 || err != nil {
		t.Errorf("look-ups of fresh identities beside: left %d, err %v", len(rest), err)
	}
	if n := s.asideLookups.Load(); n < 1 {
		t.Errorf("%d look-ups ran beside, want at least 1 (fresh identities need none unless a filter errs)", n)
	}

	// Every connection taken: needed at once, they are left to the
	// transaction, which finds the duplicate itself.
	var held []*pgxpool.Conn
	for range s.pool.Config().MaxConns {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	w, fs = write(99)
	look = s.startLookups(ctx, id, w, fs)
	rest, err = look.result()
	if err != nil || len(rest) == 0 {
		t.Fatalf("look-ups with no free connection: left %d, err %v; want them left to the transaction", len(rest), err)
	}
	c := held[0]
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	queueProbes(b, id, rest)
	if err := checkProbes(c.SendBatch(ctx, b), len(rest)); !errors.As(err, &dup) || dup.idx != 99 {
		t.Errorf("the transaction's look-ups of a duplicate of entry 99: %v", err)
	}
	c.Exec(ctx, "ROLLBACK")

	// Stopped (a transaction that failed early) before a connection was
	// free: they take none, not even the ones released right after.
	before := s.asideLookups.Load()
	w, fs = write(99)
	look = s.startLookups(ctx, id, w, fs)
	look.stop()
	for _, c := range held {
		c.Release()
	}
	<-look.done
	if rest, err := look.result(); err != nil || len(rest) == 0 || s.asideLookups.Load() != before {
		t.Errorf("stopped look-ups: left %d, err %v, %d ran beside; want all left undone", len(rest), err, s.asideLookups.Load()-before)
	}
	verifyLog(t, s, l)
}

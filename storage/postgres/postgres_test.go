package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tlog-dev/tlog/internal/pgtest"
	"github.com/tlog-dev/tlog/migrations"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/storagetest"
)

// testPartitionSize is the entries of a log per partition in tests' databases
// (see newDatabase): small, and not a multiple of the tile width, so that
// batches cross partitions and full partitions are made quickly.
const testPartitionSize = 100

// newDatabase returns the URL of a fresh database with tlog's schema and
// entry partitions of size entries of a log (0: the production size, 2^19).
func newDatabase(t testing.TB, size int) string {
	t.Helper()
	url := pgtest.NewDatabase(t)
	if size == 0 {
		return url
	}
	s, err := Open(t.Context(), url, testConfig(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s.Close()
	if _, err := conn(t, url).Exec(t.Context(), `UPDATE entry_partitioning SET size = $1`, size); err != nil {
		t.Fatal(err)
	}
	return url
}

// openStore opens a Store on a fresh database with testPartitionSize and
// closes it at cleanup.
func openStore(t testing.TB) (*Store, string) { return openStoreSize(t, testPartitionSize) }

// openStoreSize opens a Store on newDatabase(t, size) and closes it at cleanup.
func openStoreSize(t testing.TB, size int) (*Store, string) {
	t.Helper()
	url := newDatabase(t, size)
	s, err := Open(t.Context(), url, testConfig(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

// testConfig routes the store's log to the test's output and keeps a tile
// file in a temporary directory, as tlogd does by default, so that every
// test's reads go through it. Benchmarks log nowhere and read the database
// only.
func testConfig(t testing.TB) Config {
	if _, ok := t.(*testing.B); ok {
		return Config{Logger: slog.New(slog.DiscardHandler)}
	}
	return Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), TileFileDir: t.TempDir(), TileFileBytes: 1 << 20}
}

// conn opens a plain connection for inspecting the database behind the
// driver's back.
func conn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// testLog builds valid batches for one log, as a sequencer would.
type testLog struct {
	name  string
	edge  *tree.Edge
	count int // entries made so far, to make their data unique
}

// newTestLog creates a log in s with the signed empty tree as its checkpoint.
func newTestLog(t testing.TB, s storage.Store, name string) *testLog {
	t.Helper()
	l := &testLog{name: name, edge: tree.EmptyEdge()}
	err := s.CreateLog(t.Context(), storage.Log{
		Name:        name,
		Origin:      "example.com/" + name,
		VerifierKey: "example.com/" + name + "+01234567+AQ==",
	}, l.checkpoint(l.edge))
	if err != nil {
		t.Fatalf("CreateLog(%q): %v", name, err)
	}
	return l
}

func (l *testLog) checkpoint(e *tree.Edge) storage.Checkpoint {
	root := e.Root()
	note := fmt.Sprintf("example.com/%s\n%d\n%x\n\n— fake signature\n", l.name, e.Size(), root)
	return storage.Checkpoint{TreeHead: storage.TreeHead{Size: e.Size(), Root: root}, Note: []byte(note)}
}

func (l *testLog) head() storage.TreeHead {
	return storage.TreeHead{Size: l.edge.Size(), Root: l.edge.Root()}
}

// batch returns the next batch of n entries of size bytes (at least 8) and
// the edge after it, without advancing l. Entries whose position is in keyed
// get an idempotency-key identity instead of their leaf hash.
func (l *testLog) batch(t testing.TB, n, size int, keyed ...int) (*storage.Batch, *tree.Edge) {
	t.Helper()
	b := &storage.Batch{Prev: l.head(), Entries: make([]storage.Entry, n)}
	leaves := make([]tree.Hash, n)
	for i := range b.Entries {
		data := bytes.Repeat([]byte{byte(l.count + i)}, max(size, 8))
		copy(data, strconv.Itoa(l.count+i)+":"+l.name+":")
		leaves[i] = tree.LeafHash(data)
		b.Entries[i] = storage.Entry{Index: l.edge.Size() + uint64(i), Identity: leaves[i], LeafHash: leaves[i], Data: data}
	}
	for _, i := range keyed {
		b.Entries[i].Identity = sha256.Sum256([]byte("key " + string(b.Entries[i].Data)))
	}
	next, tiles, err := l.edge.Append(leaves)
	if err != nil {
		t.Fatal(err)
	}
	b.Tiles = tiles
	b.Checkpoint = l.checkpoint(next)
	return b, next
}

// integrate stores the next batch and advances l.
func (l *testLog) integrate(t testing.TB, s storage.Store, n, size int, keyed ...int) *storage.Batch {
	t.Helper()
	b, next := l.batch(t, n, size, keyed...)
	if err := s.Integrate(t.Context(), l.name, b); err != nil {
		t.Fatalf("Integrate(%d entries at %d): %v", n, l.edge.Size(), err)
	}
	l.edge = next
	l.count += n
	return b
}

// counts returns the number of rows of each table.
func counts(t testing.TB, c *pgx.Conn) map[string]int {
	t.Helper()
	m := make(map[string]int)
	for _, table := range []string{"logs", "entries", "tiles", "checkpoints", "cosignatures"} {
		var n int
		if err := c.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		m[table] = n
	}
	var tileBytes int
	if err := c.QueryRow(t.Context(), "SELECT coalesce(sum(length(hashes)), 0) FROM tiles").Scan(&tileBytes); err != nil {
		t.Fatal(err)
	}
	m["tile bytes"] = tileBytes
	return m
}

func sameCounts(t testing.TB, c *pgx.Conn, before map[string]int) {
	t.Helper()
	after := counts(t, c)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %d rows after a failed call, %d before", k, after[k], v)
		}
	}
}

// verifyLog recomputes the log from what is stored: every checkpoint's root
// from the stored tiles and from the stored entries, and the latest
// checkpoint against the test's own edge.
func verifyLog(t testing.TB, s storage.Store, l *testLog) {
	t.Helper()
	ctx := t.Context()
	latest, err := s.LatestCheckpoint(ctx, l.name)
	if err != nil {
		t.Fatalf("LatestCheckpoint: %v", err)
	}
	if latest.TreeHead != l.head() {
		t.Fatalf("latest checkpoint is at %d, want %d", latest.Size, l.edge.Size())
	}
	entries, err := s.ReadEntries(ctx, l.name, 0, latest.Size)
	if err != nil {
		t.Fatalf("ReadEntries: %v", err)
	}
	leaves := make([]tree.Hash, len(entries))
	for i, e := range entries {
		if e.Index != uint64(i) || e.LeafHash != tree.LeafHash(e.Data) {
			t.Fatalf("entry %d: index %d, leaf hash does not match data", i, e.Index)
		}
		leaves[i] = e.LeafHash
	}
	reader := tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) { return s.ReadTiles(ctx, l.name, ts) })
	cps, err := s.ListCheckpoints(ctx, l.name, 0, math.MaxInt32)
	if err != nil {
		t.Fatalf("ListCheckpoints: %v", err)
	}
	first, err := s.CheckpointAt(ctx, l.name, 0)
	if err != nil {
		t.Fatalf("CheckpointAt(0): %v", err)
	}
	for _, c := range append([]storage.Checkpoint{first}, cps...) {
		fromTiles, err := tree.RootHash(reader, c.Size)
		if err != nil {
			t.Fatalf("root of size %d from tiles: %v", c.Size, err)
		}
		e, _, err := tree.EmptyEdge().Append(leaves[:c.Size])
		if err != nil {
			t.Fatal(err)
		}
		if fromTiles != c.Root || e.Root() != c.Root {
			t.Errorf("checkpoint %d: root %x, from tiles %x, from entries %x", c.Size, c.Root, fromTiles, e.Root())
		}
		if !bytes.Contains(c.Note, fmt.Appendf(nil, "\n%d\n%x\n", c.Size, c.Root)) {
			t.Errorf("checkpoint %d: note does not match its tree head", c.Size)
		}
	}
}

func TestMigrations(t *testing.T) {
	ctx := t.Context()
	ms, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	url := pgtest.NewDatabase(t)

	// Concurrent first starts: the advisory lock serializes them.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(ctx, url, testConfig(t))
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open %d: %v", i, err)
		}
	}

	c := conn(t, url)
	var rows, version int
	if err := c.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_version`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || version != len(ms) {
		t.Fatalf("schema_version: %d rows, version %d; want 1 row, version %d", rows, version, len(ms))
	}

	// Re-open: nothing to apply, data kept.
	s, err := Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatalf("re-Open: %v", err)
	}
	l := newTestLog(t, s, "kept")
	l.integrate(t, s, 3, 10)
	s.Close()
	s, err = Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatalf("re-Open: %v", err)
	}
	defer s.Close()
	if v, err := s.SchemaVersion(ctx); err != nil || v != len(ms) {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, len(ms))
	}
	verifyLog(t, s, l)
}

// TestMigrateSteps runs later migrations than the binary has: each is applied
// with its version bump in one transaction, and a failing one leaves no trace.
func TestMigrateSteps(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	ms, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	n := len(ms)
	ms = append(ms,
		migrations.Migration{Version: n + 1, Name: "next.sql", SQL: "CREATE TABLE step_two (x int); INSERT INTO step_two VALUES (2);"},
		migrations.Migration{Version: n + 2, Name: "broken.sql", SQL: "CREATE TABLE step_three (x int); SELECT no_such_function();"},
	)
	log := testConfig(t).Logger
	if err := migrate(ctx, s.pool, ms, log); err == nil || !strings.Contains(err.Error(), "broken.sql") {
		t.Fatalf("migrate with a broken migration = %v, want an error naming broken.sql", err)
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v != n+1 {
		t.Fatalf("SchemaVersion = %d, %v; want %d (the good migration only)", v, err, n+1)
	}
	c := conn(t, url)
	var tables int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename IN ('step_two', 'step_three')`).Scan(&tables); err != nil || tables != 1 {
		t.Fatalf("%d of step_two, step_three exist (%v), want step_two only", tables, err)
	}
	// Re-running applies nothing twice.
	if err := migrate(ctx, s.pool, ms[:n+1], log); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	var rows int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM step_two`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("step_two has %d rows (%v), want 1", rows, err)
	}
	// This binary knows only n.
	if _, err := Open(ctx, url, testConfig(t)); !errors.Is(err, storage.ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	s.Close()
	ms, _ := migrations.All()
	newer := len(ms) + 1
	if _, err := conn(t, url).Exec(ctx, `UPDATE schema_version SET version = $1`, newer); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, url, testConfig(t))
	if !errors.Is(err, storage.ErrSchemaTooNew) {
		t.Fatalf("Open on a newer schema: %v, want ErrSchemaTooNew", err)
	}
	for _, v := range []int{newer, len(ms)} {
		if !strings.Contains(err.Error(), strconv.Itoa(v)) {
			t.Errorf("error %q does not mention version %d", err, v)
		}
	}
}

func TestLogs(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t)
	created := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	empty := storage.Checkpoint{TreeHead: storage.TreeHead{Root: tree.EmptyRoot()}, Note: []byte("empty\n")}
	for _, name := range []string{"b", "a", "B", "é"} {
		if err := s.CreateLog(ctx, storage.Log{Name: name, Origin: "o/" + name, VerifierKey: "k", CreatedAt: created}, empty); err != nil {
			t.Fatalf("CreateLog(%q): %v", name, err)
		}
	}
	if err := s.CreateLog(ctx, storage.Log{Name: "a"}, empty); !errors.Is(err, storage.ErrLogExists) {
		t.Fatalf("CreateLog of an existing name: %v, want ErrLogExists", err)
	}
	if err := s.CreateLog(ctx, storage.Log{}, empty); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("CreateLog without a name: %v, want ErrInvalid", err)
	}
	l, err := s.GetLog(ctx, "é")
	if err != nil {
		t.Fatal(err)
	}
	if want := (storage.Log{Name: "é", Origin: "o/é", VerifierKey: "k", CreatedAt: created}); l != want {
		t.Errorf("GetLog = %+v, want %+v", l, want)
	}
	logs, err := s.ListLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range logs {
		names = append(names, l.Name)
	}
	if got, want := strings.Join(names, " "), "B a b é"; got != want {
		t.Errorf("ListLogs names = %q, want %q (byte order)", got, want)
	}
	c, err := s.LatestCheckpoint(ctx, "a")
	if err != nil || c.TreeHead != empty.TreeHead || string(c.Note) != "empty\n" {
		t.Errorf("LatestCheckpoint of a new log = %+v, %v; want the initial checkpoint", c, err)
	}

	// A log created without CreatedAt gets the current time.
	before := time.Now().Add(-time.Minute)
	if err := s.CreateLog(ctx, storage.Log{Name: "now"}, empty); err != nil {
		t.Fatal(err)
	}
	if l, err := s.GetLog(ctx, "now"); err != nil || l.CreatedAt.Before(before) {
		t.Errorf("GetLog(now) = %+v, %v; want CreatedAt about now", l, err)
	}
}

func TestIntegrateAndRead(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t)
	l := newTestLog(t, s, "log")
	other := newTestLog(t, s, "other") // the same entries in another log must not collide
	var batches []*storage.Batch
	for _, n := range []int{1, 2, 300, 0, 255, 1000, 70000 - 1558} {
		var keyed []int
		if n > 0 {
			keyed = []int{0}
		}
		batches = append(batches, l.integrate(t, s, n, 40, keyed...))
		other.integrate(t, s, n, 40)
	}
	verifyLog(t, s, l)
	verifyLog(t, s, other)

	// Entries: identities, keyed entries, LookupIdentities, FindLeaf.
	keyed := batches[2].Entries[0] // an entry with an idempotency key
	plain := batches[2].Entries[1]
	es, err := s.ReadEntries(ctx, l.name, keyed.Index, plain.Index+1)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []storage.Entry{keyed, plain} {
		got := es[i]
		if got.Index != want.Index || got.Identity != want.Identity || got.LeafHash != want.LeafHash || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("ReadEntries[%d] = %+v, want %+v", i, got, want)
		}
	}
	var unknown storage.Hash
	unknown[0] = 1
	found, err := s.LookupIdentities(ctx, l.name, []storage.Hash{keyed.Identity, plain.Identity, unknown, keyed.LeafHash})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[keyed.Identity] != keyed.Index || found[plain.Identity] != plain.Index {
		t.Errorf("LookupIdentities = %v, want {%x: %d, %x: %d}", found, keyed.Identity, keyed.Index, plain.Identity, plain.Index)
	}
	for _, c := range []struct {
		h    storage.Hash
		want uint64
	}{
		{keyed.LeafHash, keyed.Index},
		{keyed.Identity, keyed.Index},
		{plain.LeafHash, plain.Index},
	} {
		if got, err := s.FindLeaf(ctx, l.name, c.h); err != nil || got != c.want {
			t.Errorf("FindLeaf(%x) = %d, %v; want %d", c.h, got, err, c.want)
		}
	}
	if _, err := s.FindLeaf(ctx, l.name, unknown); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("FindLeaf(unknown) = %v, want ErrNotFound", err)
	}
	if es, err := s.ReadEntries(ctx, l.name, 5, 5); err != nil || len(es) != 0 {
		t.Errorf("ReadEntries(5, 5) = %v, %v; want none", es, err)
	}
	if _, err := s.ReadEntries(ctx, l.name, l.edge.Size()-1, l.edge.Size()+1); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ReadEntries past the end = %v, want ErrNotFound", err)
	}

	// Checkpoints.
	cps, err := s.ListCheckpoints(ctx, l.name, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != 2 || cps[0].Size != 303 || cps[1].Size != 558 {
		t.Errorf("ListCheckpoints(after 3, limit 2) sizes = %v, want 303, 558", cps)
	}
	if cps, err := s.ListCheckpoints(ctx, l.name, l.edge.Size(), 10); err != nil || cps == nil || len(cps) != 0 {
		t.Errorf("ListCheckpoints after the last = %v, %v; want empty", cps, err)
	}
	if _, err := s.CheckpointAt(ctx, l.name, 2); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("CheckpointAt(2) = %v, want ErrNotFound", err)
	}

	// Tiles: partial reads of grown tiles, missing tiles.
	ts, err := s.ReadTiles(ctx, l.name, []tile.Tile{{Level: 0, Index: 0, Width: 3}, {Level: 1, Index: 0, Width: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts[0]) != tile.Width*tile.HashSize || !bytes.Equal(ts[0][32:64], batches[1].Entries[0].LeafHash[:]) {
		t.Errorf("ReadTiles(0/0.p/3): %d bytes or wrong second hash", len(ts[0]))
	}
	full := l.edge.Size() / tile.Width
	for _, missing := range []tile.Tile{
		{Level: 0, Index: full + 1, Width: 1},
		{Level: 0, Index: full, Width: tile.Width},
		{Level: 3, Index: 0, Width: 1},
	} {
		if _, err := s.ReadTiles(ctx, l.name, []tile.Tile{missing}); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("ReadTiles(%s) = %v, want ErrNotFound", missing.Path(), err)
		}
	}
	if _, err := s.ReadTiles(ctx, l.name, []tile.Tile{{Level: tile.EntriesLevel, Width: 1}}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("ReadTiles(entries) = %v, want ErrInvalid", err)
	}

	// Cosignatures.
	size := l.edge.Size()
	if err := s.AddCosignatures(ctx, l.name, size, []storage.Cosignature{
		{KeyID: "w2", Signature: []byte("old")}, {KeyID: "w1", Signature: []byte("one")},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCosignatures(ctx, l.name, size, []storage.Cosignature{
		{KeyID: "w2", Signature: []byte("two?")}, {KeyID: "w2", Signature: []byte("two")},
	}); err != nil {
		t.Fatal(err)
	}
	cs, err := s.CosignaturesAt(ctx, l.name, size)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%s", cs); got != "[{w1 one} {w2 two}]" {
		t.Errorf("CosignaturesAt = %s, want [{w1 one} {w2 two}]", got)
	}
	if cs, err := s.CosignaturesAt(ctx, l.name, 3); err != nil || len(cs) != 0 {
		t.Errorf("CosignaturesAt(3) = %v, %v; want none", cs, err)
	}
	if cs, err := s.CosignaturesAt(ctx, other.name, size); err != nil || len(cs) != 0 {
		t.Errorf("CosignaturesAt(other log) = %v, %v; want none", cs, err)
	}
	for _, cs := range [][]storage.Cosignature{nil, {{KeyID: "w", Signature: []byte("s")}}} {
		if err := s.AddCosignatures(ctx, l.name, 2, cs); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("AddCosignatures(no checkpoint, %d cosignatures) = %v, want ErrNotFound", len(cs), err)
		}
	}
}

func TestIntegrateEmptyBatchResigns(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t)
	l := newTestLog(t, s, "log")
	l.integrate(t, s, 5, 10)
	b := &storage.Batch{Prev: l.head(), Checkpoint: l.checkpoint(l.edge)}
	b.Checkpoint.Note = append(b.Checkpoint.Note, "— another signature\n"...)
	if err := s.Integrate(ctx, l.name, b); err != nil {
		t.Fatalf("Integrate(empty batch): %v", err)
	}
	c, err := s.LatestCheckpoint(ctx, l.name)
	if err != nil || !bytes.Equal(c.Note, b.Checkpoint.Note) {
		t.Errorf("LatestCheckpoint after re-signing = %q, %v; want the new note", c.Note, err)
	}
	b.Checkpoint.Root[0] ^= 1
	if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Integrate(empty batch, other root) = %v, want ErrInvalid", err)
	}
	verifyLog(t, s, l)
}

func TestIntegrateConflict(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	c := conn(t, url)
	l := newTestLog(t, s, "log")
	stale, _ := l.batch(t, 10, 20)
	l.integrate(t, s, 10, 20)
	before := counts(t, c)

	// The stale batch (prev = the empty tree) and one whose prev has the
	// right size but another root.
	wrongRoot, _ := l.batch(t, 3, 20)
	wrongRoot.Prev.Root[5] ^= 1
	for name, b := range map[string]*storage.Batch{"stale": stale, "wrong root": wrongRoot} {
		if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("Integrate(%s) = %v, want ErrConflict", name, err)
		}
	}
	sameCounts(t, c, before)
	verifyLog(t, s, l)
}

func TestIntegrateConcurrent(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	l := newTestLog(t, s, "log")
	l.integrate(t, s, 7, 20)
	// Two sequencers on separate pools extend the same head with different
	// entries.
	s2, err := Open(ctx, url, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for round := range 10 {
		b1, e1 := l.batch(t, 50, 20)
		l2 := *l
		l2.count += 1000 // different data
		b2, e2 := l2.batch(t, 60, 20)
		var wg sync.WaitGroup
		var err1, err2 error
		wg.Go(func() { err1 = s.Integrate(ctx, l.name, b1) })
		wg.Go(func() { err2 = s2.Integrate(ctx, l.name, b2) })
		wg.Wait()
		switch {
		case err1 == nil && errors.Is(err2, storage.ErrConflict):
			l.edge, l.count = e1, l.count+50
		case err2 == nil && errors.Is(err1, storage.ErrConflict):
			l.edge, l.count = e2, l.count+1060
		default:
			t.Fatalf("round %d: Integrate results %v and %v, want exactly one nil and one ErrConflict", round, err1, err2)
		}
	}
	verifyLog(t, s, l)
}

func TestIntegrateTileMayOnlyGrow(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	c := conn(t, url)
	l := newTestLog(t, s, "log")
	first := l.integrate(t, s, 10, 20)
	before := counts(t, c)

	shrink, _ := l.batch(t, 1, 20)
	shrink.Tiles = append(shrink.Tiles, tree.TileData{
		Tile:   tile.Tile{Level: 0, Index: 0, Width: 5},
		Hashes: first.Tiles[0].Hashes[:5*tile.HashSize],
	})
	shrink.Tiles = shrink.Tiles[1:] // the grown level-0 tile is replaced by the narrower one
	changed, _ := l.batch(t, 1, 20)
	changed.Tiles[0].Hashes = bytes.Clone(changed.Tiles[0].Hashes)
	changed.Tiles[0].Hashes[40] ^= 1 // the second stored hash
	for name, b := range map[string]*storage.Batch{"shrink": shrink, "changed prefix": changed} {
		if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Integrate(%s) = %v, want ErrInvalid", name, err)
		}
	}
	sameCounts(t, c, before)
	var head int64
	if err := c.QueryRow(ctx, `SELECT tree_size FROM logs WHERE name = 'log'`).Scan(&head); err != nil || head != 10 {
		t.Errorf("tree head = %d, %v; want 10", head, err)
	}
	verifyLog(t, s, l)
}

func TestIntegrateDuplicateIdentity(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	c := conn(t, url)
	l := newTestLog(t, s, "log")
	first := l.integrate(t, s, 10, 20, 3)
	before := counts(t, c)

	for name, dup := range map[string]storage.Hash{
		"leaf hash identity": first.Entries[2].Identity,
		"keyed identity":     first.Entries[3].Identity,
	} {
		b, _ := l.batch(t, 5, 20)
		b.Entries[4].Identity = dup
		if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrDuplicate) {
			t.Errorf("Integrate(%s already stored) = %v, want ErrDuplicate", name, err)
		}
	}
	b, _ := l.batch(t, 5, 20)
	b.Entries[4].Identity = b.Entries[1].Identity
	if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Integrate(identity twice in the batch) = %v, want ErrInvalid", err)
	}
	sameCounts(t, c, before)
	verifyLog(t, s, l)
}

func TestIntegrateInvalid(t *testing.T) {
	ctx := t.Context()
	s, url := openStore(t)
	c := conn(t, url)
	l := newTestLog(t, s, "log")
	l.integrate(t, s, 3, 20)
	before := counts(t, c)

	for _, tc := range []struct {
		name   string
		break_ func(b *storage.Batch)
	}{
		{"gap in indices", func(b *storage.Batch) { b.Entries[1].Index++ }},
		{"not from prev size", func(b *storage.Batch) {
			for i := range b.Entries {
				b.Entries[i].Index++
			}
		}},
		{"checkpoint size", func(b *storage.Batch) { b.Checkpoint.Size++ }},
		{"checkpoint size below prev", func(b *storage.Batch) { b.Checkpoint.Size = 1 }},
		{"entry too large", func(b *storage.Batch) {
			b.Entries[0].Data = make([]byte, tile.MaxEntrySize+1)
			b.Entries[0].LeafHash = tree.LeafHash(b.Entries[0].Data)
		}},
		{"leaf hash not of data", func(b *storage.Batch) { b.Entries[0].LeafHash[0] ^= 1 }},
		{"tile hash length", func(b *storage.Batch) { b.Tiles[0].Hashes = b.Tiles[0].Hashes[:31] }},
		{"tile width 0", func(b *storage.Batch) { b.Tiles[0].Width, b.Tiles[0].Hashes = 0, nil }},
		{"tile level", func(b *storage.Batch) { b.Tiles[0].Level = -1 }},
		{"tile twice", func(b *storage.Batch) { b.Tiles = append(b.Tiles, b.Tiles[0]) }},
		{"tile index too large", func(b *storage.Batch) { b.Tiles[0].Index = math.MaxInt64 + 1 }},
		{"prev size too large", func(b *storage.Batch) { b.Prev.Size = math.MaxInt64 + 1 }},
		{"checkpoint size too large", func(b *storage.Batch) { b.Checkpoint.Size = math.MaxUint64 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := l.batch(t, 4, 20)
			tc.break_(b)
			if err := s.Integrate(ctx, l.name, b); !errors.Is(err, storage.ErrInvalid) {
				t.Errorf("Integrate = %v, want ErrInvalid", err)
			}
		})
	}
	if err := s.Integrate(ctx, l.name, nil); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Integrate(nil) = %v, want ErrInvalid", err)
	}
	sameCounts(t, c, before)

	// Sizes and indices beyond bigint in reads.
	huge := uint64(math.MaxInt64) + 1
	if _, err := s.CheckpointAt(ctx, l.name, huge); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("CheckpointAt(2^63) = %v, want ErrInvalid", err)
	}
	if _, err := s.ReadEntries(ctx, l.name, 0, huge); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("ReadEntries(0, 2^63) = %v, want ErrInvalid", err)
	}
	if _, err := s.ReadTiles(ctx, l.name, []tile.Tile{{Index: huge, Width: 1}}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("ReadTiles(index 2^63) = %v, want ErrInvalid", err)
	}
	verifyLog(t, s, l)
}

func TestUnknownLog(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t)
	l := &testLog{name: "nope", edge: tree.EmptyEdge()}
	b, _ := l.batch(t, 2, 10)
	calls := map[string]func() error{
		"GetLog":           func() error { _, err := s.GetLog(ctx, "nope"); return err },
		"Integrate":        func() error { return s.Integrate(ctx, "nope", b) },
		"LatestCheckpoint": func() error { _, err := s.LatestCheckpoint(ctx, "nope"); return err },
		"CheckpointAt":     func() error { _, err := s.CheckpointAt(ctx, "nope", 0); return err },
		"ListCheckpoints":  func() error { _, err := s.ListCheckpoints(ctx, "nope", 0, 10); return err },
		"ReadTiles":        func() error { _, err := s.ReadTiles(ctx, "nope", []tile.Tile{{Width: 1}}); return err },
		"ReadEntries":      func() error { _, err := s.ReadEntries(ctx, "nope", 0, 1); return err },
		"LookupIdentities": func() error { _, err := s.LookupIdentities(ctx, "nope", nil); return err },
		"FindLeaf":         func() error { _, err := s.FindLeaf(ctx, "nope", storage.Hash{}); return err },
		"AddCosignatures":  func() error { return s.AddCosignatures(ctx, "nope", 0, nil) },
		"CosignaturesAt":   func() error { _, err := s.CosignaturesAt(ctx, "nope", 0); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, storage.ErrLogNotFound) || !strings.Contains(err.Error(), "nope") {
			t.Errorf("%s(unknown log) = %v, want ErrLogNotFound naming the log", name, err)
		}
	}
}

func TestContextCanceled(t *testing.T) {
	s, url := openStore(t)
	l := newTestLog(t, s, "log")
	l.integrate(t, s, 3, 10)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b, _ := l.batch(t, 2, 10)
	if err := s.Integrate(ctx, l.name, b); !errors.Is(err, context.Canceled) {
		t.Errorf("Integrate(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.ReadEntries(ctx, l.name, 0, 3); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadEntries(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.GetLog(ctx, l.name); !errors.Is(err, context.Canceled) {
		t.Errorf("GetLog(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := Open(ctx, "postgres://127.0.0.1:1/x", Config{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open(cancelled) = %v, want context.Canceled", err)
	}

	// Cancelled while the statement waits for the tree head's row lock.
	locker, err := conn(t, url).Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := locker.Exec(t.Context(), `SELECT 1 FROM logs WHERE name = 'log' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err = s.Integrate(ctx, l.name, b)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Integrate(deadline while waiting) = %v, want context.DeadlineExceeded", err)
	}
	if err := locker.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	verifyLog(t, s, l) // not written
	l.integrate(t, s, 2, 10)
	verifyLog(t, s, l)
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) func() (storage.Store, error) {
		url := newDatabase(t, testPartitionSize)
		return func() (storage.Store, error) { return Open(t.Context(), url, testConfig(t)) }
	})
}

// TestNoMigrate opens databases without changing them, as tlogd fsck does:
// an empty database and an older schema are refused and left as they were,
// a current one opens, a newer one is refused as by Open.
func TestNoMigrate(t *testing.T) {
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	cfg := testConfig(t)
	cfg.NoMigrate = true
	if _, err := Open(ctx, url, cfg); err == nil || !strings.Contains(err.Error(), "no tlog schema") {
		t.Fatalf("NoMigrate Open of an empty database = %v, want an error saying it has no tlog schema", err)
	}
	c := conn(t, url)
	var tables int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("NoMigrate Open left %d tables (%v) in an empty database, want 0", tables, err)
	}

	s, err := Open(ctx, url, testConfig(t)) // migrates
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(ctx, url, cfg); err != nil {
		t.Fatalf("NoMigrate Open of a current database: %v", err)
	}
	s.Close()

	ms, _ := migrations.All()
	for _, v := range []int{len(ms) - 1, len(ms) + 1} {
		if _, err := c.Exec(ctx, `UPDATE schema_version SET version = $1`, v); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx, url, cfg)
		if err == nil || !strings.Contains(err.Error(), strconv.Itoa(v)) || (v > len(ms)) != errors.Is(err, storage.ErrSchemaTooNew) {
			t.Fatalf("NoMigrate Open at schema version %d = %v", v, err)
		}
		var got int
		if err := c.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&got); err != nil || got != v {
			t.Fatalf("schema version %d (%v) after NoMigrate Open, want %d unchanged", got, err, v)
		}
	}
}

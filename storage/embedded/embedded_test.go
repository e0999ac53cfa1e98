package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/storagetest"
)

// TestConformance runs the storage contract's conformance suite.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) func() (storage.Store, error) {
		path := filepath.Join(t.TempDir(), "tlog.db")
		return func() (storage.Store, error) { return Open(path, Config{Logger: testLogger(t)}) }
	})
}

// testLogger routes the driver's logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tLogWriter struct{ t testing.TB }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func openTest(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path, Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testLog builds valid batches for one log, tracking its right edge.
type testLog struct {
	t    testing.TB
	s    *Store
	name string
	edge *tree.Edge
	next uint64 // entry counter for generated data
	salt string // makes idempotency keys differ for the same data
}

func newTestLog(t testing.TB, s *Store, name string) *testLog {
	t.Helper()
	l := &testLog{t: t, s: s, name: name, edge: tree.EmptyEdge()}
	err := s.CreateLog(context.Background(), storage.Log{Name: name, Origin: "example.com/" + name, VerifierKey: "vkey"},
		storage.Checkpoint{TreeHead: l.head(), Note: note(l.head())})
	if err != nil {
		t.Fatalf("CreateLog: %v", err)
	}
	return l
}

func (l *testLog) head() storage.TreeHead {
	return storage.TreeHead{Size: l.edge.Size(), Root: l.edge.Root()}
}

func note(h storage.TreeHead) []byte {
	return fmt.Appendf(nil, "example.com/log\n%d\n%x\n\n— test signature\n", h.Size, h.Root)
}

// batch returns the next batch of n generated entries (with an idempotency
// key as identity if keyed) and the edge after it; integrate commits it.
func (l *testLog) batch(n int, keyed bool) (*storage.Batch, *tree.Edge) {
	l.t.Helper()
	b := &storage.Batch{Prev: l.head()}
	leaves := make([]tree.Hash, n)
	for i := range n {
		data := fmt.Appendf(nil, "entry %d of %s", l.next, l.name)
		l.next++
		e := storage.Entry{Index: l.edge.Size() + uint64(i), LeafHash: tree.LeafHash(data), Data: data}
		e.Identity = e.LeafHash
		if keyed {
			e.Identity = tree.LeafHash(append([]byte("key "+l.salt), data...))
		}
		b.Entries = append(b.Entries, e)
		leaves[i] = e.LeafHash
	}
	next, tiles, err := l.edge.Append(leaves)
	if err != nil {
		l.t.Fatal(err)
	}
	b.Tiles = tiles
	b.Checkpoint = storage.Checkpoint{TreeHead: storage.TreeHead{Size: next.Size(), Root: next.Root()}}
	b.Checkpoint.Note = note(b.Checkpoint.TreeHead)
	return b, next
}

func (l *testLog) integrate(n int, keyed bool) *storage.Batch {
	l.t.Helper()
	b, next := l.batch(n, keyed)
	if err := l.s.Integrate(context.Background(), l.name, b); err != nil {
		l.t.Fatalf("Integrate %d entries at %d: %v", n, l.edge.Size(), err)
	}
	l.edge = next
	return b
}

// verifyLog checks everything stored for a log: every entry's leaf hash,
// the root recomputed from the leaves against the latest checkpoint, the
// root computed from the stored tiles at every checkpoint, and inclusion
// proofs from the tiles.
func verifyLog(t testing.TB, s storage.Store, name string) {
	t.Helper()
	ctx := context.Background()
	latest, err := s.LatestCheckpoint(ctx, name)
	if err != nil {
		t.Fatalf("LatestCheckpoint: %v", err)
	}
	entries, err := s.ReadEntries(ctx, name, 0, latest.Size)
	if err != nil {
		t.Fatalf("ReadEntries(0, %d): %v", latest.Size, err)
	}
	leaves := make([]tree.Hash, len(entries))
	for i, e := range entries {
		if e.Index != uint64(i) || e.LeafHash != tree.LeafHash(e.Data) {
			t.Fatalf("entry %d: index %d, leaf hash %x, want leaf hash %x", i, e.Index, e.LeafHash, tree.LeafHash(e.Data))
		}
		leaves[i] = e.LeafHash
		if got, err := s.FindLeaf(ctx, name, e.LeafHash); err != nil || got > uint64(i) {
			t.Fatalf("FindLeaf(entry %d) = %d, %v", i, got, err)
		}
		ids, err := s.LookupIdentities(ctx, name, []storage.Hash{e.Identity})
		if err != nil || ids[e.Identity] != uint64(i) {
			t.Fatalf("LookupIdentities(entry %d) = %v, %v", i, ids, err)
		}
	}
	edge, _, err := tree.EmptyEdge().Append(leaves)
	if err != nil {
		t.Fatal(err)
	}
	if edge.Root() != latest.Root {
		t.Fatalf("root recomputed from %d entries is %x, latest checkpoint says %x", len(leaves), edge.Root(), latest.Root)
	}
	reader := tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) { return s.ReadTiles(ctx, name, ts) })
	cps, err := s.ListCheckpoints(ctx, name, 0, 1<<20)
	if err != nil {
		t.Fatalf("ListCheckpoints: %v", err)
	}
	for _, c := range cps {
		root, err := tree.RootHash(reader, c.Size)
		if err != nil || root != c.Root {
			t.Fatalf("root from tiles at size %d = %x, %v; checkpoint says %x", c.Size, root, err, c.Root)
		}
		if !bytes.Equal(c.Note, note(c.TreeHead)) {
			t.Fatalf("checkpoint %d: note %q", c.Size, c.Note)
		}
	}
	if len(cps) > 0 && cps[len(cps)-1].TreeHead != latest.TreeHead {
		t.Fatalf("last listed checkpoint %v is not the latest %v", cps[len(cps)-1].TreeHead, latest.TreeHead)
	}
	for _, i := range []uint64{0, latest.Size / 2, latest.Size - 1} {
		if latest.Size == 0 {
			break
		}
		if _, err := tree.InclusionProof(reader, i, latest.Size); err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", i, latest.Size, err)
		}
	}
}

func TestIntegrateAndRead(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	l := newTestLog(t, s, "a")
	other := newTestLog(t, s, "b") // logs do not see each other's data
	for _, n := range []int{1, 2, 253, 0, 1000, 300, 65536 + 7} {
		l.integrate(n, n == 300)
	}
	other.integrate(10, false)
	verifyLog(t, s, "a")
	verifyLog(t, s, "b")

	got, err := s.ReadEntries(ctx, "a", 256, 260)
	if err != nil || len(got) != 4 || got[0].Index != 256 || got[3].Index != 259 {
		t.Fatalf("ReadEntries(256, 260) = %v, %v", got, err)
	}
	if got, err := s.ReadEntries(ctx, "a", 5, 5); err != nil || len(got) != 0 {
		t.Fatalf("ReadEntries(5, 5) = %v, %v", got, err)
	}
	if _, err := s.ReadEntries(ctx, "a", l.edge.Size()-1, l.edge.Size()+1); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("ReadEntries past the end: %v, want ErrNotFound", err)
	}
	if _, err := s.ReadEntries(ctx, "b", 0, 11); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("ReadEntries past the end of b: %v, want ErrNotFound", err)
	}

	// A partial tile may be read at any width up to what is stored.
	full, err := s.ReadTiles(ctx, "a", []tile.Tile{{Level: 0, Index: 0, Width: 256}, {Level: 0, Index: 1, Width: 3}})
	if err != nil || len(full[0]) != 256*32 || len(full[1]) != 3*32 {
		t.Fatalf("ReadTiles: %d tiles, %v", len(full), err)
	}
	for _, ts := range [][]tile.Tile{
		{{Level: 2, Index: 1, Width: 1}},                     // not in the tree
		{{Level: 0, Index: l.edge.Size() / 256, Width: 256}}, // partial, asked full
	} {
		if _, err := s.ReadTiles(ctx, "a", ts); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("ReadTiles(%v): %v, want ErrNotFound", ts, err)
		}
	}
	if _, err := s.ReadTiles(ctx, "a", []tile.Tile{{Level: tile.EntriesLevel, Index: 0, Width: 1}}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("ReadTiles(entry bundle): %v, want ErrInvalid", err)
	}

	cp, err := s.CheckpointAt(ctx, "a", 3)
	if err != nil || cp.Size != 3 {
		t.Fatalf("CheckpointAt(3) = %v, %v", cp.TreeHead, err)
	}
	if _, err := s.CheckpointAt(ctx, "a", 4); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("CheckpointAt(4): %v, want ErrNotFound", err)
	}
	cps, err := s.ListCheckpoints(ctx, "a", 1, 2)
	if err != nil || len(cps) != 2 || cps[0].Size != 3 || cps[1].Size != 256 {
		t.Fatalf("ListCheckpoints(after 1, limit 2) = %v, %v", cps, err)
	}
	if cps, err := s.ListCheckpoints(ctx, "a", l.edge.Size(), 10); err != nil || len(cps) != 0 {
		t.Fatalf("ListCheckpoints(after the head) = %v, %v", cps, err)
	}
	if _, err := s.ListCheckpoints(ctx, "a", 0, -1); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("ListCheckpoints(limit -1): %v, want ErrInvalid", err)
	}
}

// TestManyBatches integrates enough batches for the identity and leaf hash
// indexes to merge their runs several times, with data repeated under other
// idempotency keys, and checks every lookup before and after reopening.
func TestManyBatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tlog.db")
	s, err := Open(path, Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	l := newTestLog(t, s, "log")
	for i := range 700 {
		n := []int{1, 3, 17, 64, 200, 40}[i%6]
		if i%10 == 9 && l.next > uint64(n) {
			// Data seen before, under new keys.
			next := l.next
			l.next -= uint64(n)
			l.salt = fmt.Sprint(i)
			l.integrate(n, true)
			l.next = next
			continue
		}
		l.integrate(n, i%3 == 0)
	}
	check := func() {
		t.Helper()
		verifyLog(t, s, "log")
		es, err := s.ReadEntries(ctx, "log", 0, l.edge.Size())
		if err != nil {
			t.Fatal(err)
		}
		first := map[storage.Hash]uint64{}
		for _, e := range es {
			if _, ok := first[e.LeafHash]; !ok {
				first[e.LeafHash] = e.Index
			}
		}
		for h, i := range first {
			if got, err := s.FindLeaf(ctx, "log", h); err != nil || got != i {
				t.Fatalf("FindLeaf(%x) = %d, %v, want %d", h, got, err, i)
			}
		}
		absent := make([]storage.Hash, 100)
		for i := range absent {
			absent[i] = tree.LeafHash(fmt.Appendf(nil, "absent %d", i))
		}
		if ids, err := s.LookupIdentities(ctx, "log", absent); err != nil || len(ids) != 0 {
			t.Fatalf("LookupIdentities(absent) = %v, %v", ids, err)
		}
	}
	check()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path)
	l.s = s
	check()
}

func TestLogs(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, name := range []string{"zeta", "alpha", "mid"} {
		err := s.CreateLog(ctx, storage.Log{Name: name, Origin: "o/" + name, VerifierKey: "k", CreatedAt: created}, storage.Checkpoint{
			TreeHead: storage.TreeHead{Root: tree.EmptyRoot()}, Note: []byte("empty"),
		})
		if err != nil {
			t.Fatalf("CreateLog(%s): %v", name, err)
		}
	}
	err := s.CreateLog(ctx, storage.Log{Name: "mid"}, storage.Checkpoint{})
	if !errors.Is(err, storage.ErrLogExists) {
		t.Fatalf("CreateLog(existing): %v, want ErrLogExists", err)
	}
	if err := s.CreateLog(ctx, storage.Log{}, storage.Checkpoint{}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("CreateLog(no name): %v, want ErrInvalid", err)
	}
	logs, err := s.ListLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range logs {
		names = append(names, l.Name)
	}
	if !reflect.DeepEqual(names, []string{"alpha", "mid", "zeta"}) {
		t.Fatalf("ListLogs names = %v", names)
	}
	got, err := s.GetLog(ctx, "mid")
	want := storage.Log{Name: "mid", Origin: "o/mid", VerifierKey: "k", CreatedAt: created}
	if err != nil || got.Name != want.Name || got.Origin != want.Origin || got.VerifierKey != want.VerifierKey || !got.CreatedAt.Equal(created) {
		t.Fatalf("GetLog = %+v, %v, want %+v", got, err, want)
	}
	cp, err := s.LatestCheckpoint(ctx, "mid")
	if err != nil || cp.Size != 0 || cp.Root != tree.EmptyRoot() || string(cp.Note) != "empty" {
		t.Fatalf("LatestCheckpoint = %+v, %v", cp, err)
	}
}

// snapshot reads everything a failed Integrate must not have changed.
func snapshot(t *testing.T, s *Store, name string, b *storage.Batch) string {
	t.Helper()
	ctx := context.Background()
	cp, err := s.LatestCheckpoint(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var ids []storage.Hash
	for _, e := range b.Entries {
		ids = append(ids, e.Identity, e.LeafHash)
	}
	found, err := s.LookupIdentities(ctx, name, ids)
	if err != nil {
		t.Fatal(err)
	}
	_, entryErr := s.ReadEntries(ctx, name, b.Prev.Size, b.Prev.Size+1)
	_, cpErr := s.CheckpointAt(ctx, name, b.Checkpoint.Size)
	var ts []tile.Tile
	for _, td := range b.Tiles {
		ts = append(ts, td.Tile)
	}
	_, tileErr := s.ReadTiles(ctx, name, ts)
	return fmt.Sprintf("head %d %x note %q ids %v entry %v checkpoint %v tiles %v", cp.Size, cp.Root, cp.Note, found, entryErr, cpErr, tileErr)
}

func TestIntegrateRefused(t *testing.T) {
	for _, tt := range []struct {
		name  string
		edit  func(l *testLog, b *storage.Batch)
		want  error
		keyed bool
	}{
		{"stale root", func(l *testLog, b *storage.Batch) { b.Prev.Root[0] ^= 1 }, storage.ErrConflict, false},
		{"unknown log", func(l *testLog, b *storage.Batch) { l.name = "nope" }, storage.ErrLogNotFound, false},
		{"empty batch changes root", func(l *testLog, b *storage.Batch) {
			*b = storage.Batch{Prev: b.Prev, Checkpoint: storage.Checkpoint{TreeHead: l.head()}}
			b.Checkpoint.Root[0] ^= 1
		}, storage.ErrInvalid, false},
		{"gap in indices", func(l *testLog, b *storage.Batch) { b.Entries[1].Index++ }, storage.ErrInvalid, false},
		{"first index", func(l *testLog, b *storage.Batch) {
			for i := range b.Entries {
				b.Entries[i].Index++
			}
		}, storage.ErrInvalid, false},
		{"entry too big", func(l *testLog, b *storage.Batch) { b.Entries[2].Data = make([]byte, tile.MaxEntrySize+1) }, storage.ErrInvalid, false},
		{"checkpoint size", func(l *testLog, b *storage.Batch) { b.Checkpoint.Size++ }, storage.ErrInvalid, false},
		{"duplicate in batch", func(l *testLog, b *storage.Batch) { b.Entries[3].Identity = b.Entries[1].Identity }, storage.ErrInvalid, false},
		{"duplicate of stored", func(l *testLog, b *storage.Batch) {
			b.Entries[3].Identity = tree.LeafHash([]byte("entry 0 of log"))
		}, storage.ErrDuplicate, false},
		{"duplicate of stored key", func(l *testLog, b *storage.Batch) {
			b.Entries[3].Identity = tree.LeafHash([]byte("key entry 0 of log"))
		}, storage.ErrDuplicate, true},
		{"tile short", func(l *testLog, b *storage.Batch) { b.Tiles[0].Hashes = b.Tiles[0].Hashes[:len(b.Tiles[0].Hashes)-1] }, storage.ErrInvalid, false},
		{"tile negative level", func(l *testLog, b *storage.Batch) { b.Tiles[0].Level = -1 }, storage.ErrInvalid, false},
		{"tile beyond the tree", func(l *testLog, b *storage.Batch) {
			b.Tiles = append(b.Tiles, tree.TileData{Tile: tile.Tile{Level: 0, Index: 5, Width: 1}, Hashes: make([]byte, 32)})
		}, storage.ErrInvalid, false},
		{"tile shrinks", func(l *testLog, b *storage.Batch) {
			b.Tiles[0].Width = 2
			b.Tiles[0].Hashes = b.Tiles[0].Hashes[:64]
		}, storage.ErrInvalid, false},
		{"tile prefix changes", func(l *testLog, b *storage.Batch) { b.Tiles[0].Hashes[5] ^= 1 }, storage.ErrInvalid, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
			l := newTestLog(t, s, "log")
			l.integrate(3, tt.keyed)
			l.next = 100
			b, _ := l.batch(5, tt.keyed)
			orig := *b
			orig.Entries = slices.Clone(b.Entries)
			orig.Tiles = slices.Clone(b.Tiles)
			before := snapshot(t, s, "log", &orig)
			tt.edit(l, b)
			err := s.Integrate(context.Background(), l.name, b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Integrate: %v, want %v", err, tt.want)
			}
			t.Logf("Integrate: %v", err)
			if after := snapshot(t, s, "log", &orig); after != before {
				t.Fatalf("a refused batch changed the store:\nbefore %s\nafter  %s", before, after)
			}
			l.name = "log"
			verifyLog(t, s, "log")
			l.next = 200
			l.integrate(5, false) // the log still takes the right batch
			verifyLog(t, s, "log")
		})
	}
}

// TestStaleHead runs two sequencers on one log: the one that extends a head
// that has moved on gets ErrConflict and writes nothing.
func TestStaleHead(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	l := newTestLog(t, s, "log")
	l.integrate(10, false)
	stale := *l
	stale.next = 1000
	l.integrate(5, false)
	b, _ := stale.batch(7, false)
	before := snapshot(t, s, "log", b)
	err := s.Integrate(ctx, "log", b)
	if !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("Integrate(stale): %v, want ErrConflict", err)
	}
	t.Logf("Integrate(stale): %v", err)
	if after := snapshot(t, s, "log", b); after != before {
		t.Fatalf("a refused batch changed the store:\nbefore %s\nafter  %s", before, after)
	}
	cp, err := s.LatestCheckpoint(ctx, "log")
	if err != nil || cp.TreeHead != l.head() {
		t.Fatalf("LatestCheckpoint = %v, %v, want %v", cp.TreeHead, err, l.head())
	}
	// Same size, other root: also a conflict.
	stale = *l
	stale.edge = tree.EmptyEdge()
	stale.next = 2000
	b, _ = stale.batch(15, false)
	b.Prev.Size = l.edge.Size()
	for i := range b.Entries {
		b.Entries[i].Index += b.Prev.Size
	}
	b.Checkpoint.Size += b.Prev.Size
	b.Tiles = nil
	if err := s.Integrate(ctx, "log", b); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("Integrate(other root): %v, want ErrConflict", err)
	}
	verifyLog(t, s, "log")
}

func TestNilBatch(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	newTestLog(t, s, "log")
	if err := s.Integrate(context.Background(), "log", nil); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("Integrate(nil): %v, want ErrInvalid", err)
	}
}

func TestEmptyBatchReplacesCheckpoint(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	l := newTestLog(t, s, "log")
	l.integrate(5, false)
	if err := s.AddCosignatures(ctx, "log", 5, []storage.Cosignature{{KeyID: "w", Signature: []byte("sig")}}); err != nil {
		t.Fatal(err)
	}
	b := &storage.Batch{Prev: l.head(), Checkpoint: storage.Checkpoint{TreeHead: l.head(), Note: []byte("re-signed")}}
	if err := s.Integrate(ctx, "log", b); err != nil {
		t.Fatal(err)
	}
	cp, err := s.LatestCheckpoint(ctx, "log")
	if err != nil || cp.Size != 5 || string(cp.Note) != "re-signed" {
		t.Fatalf("LatestCheckpoint = %+v, %v", cp, err)
	}
	if cs, err := s.CosignaturesAt(ctx, "log", 5); err != nil || len(cs) != 1 {
		t.Fatalf("CosignaturesAt(5) = %v, %v", cs, err)
	}
}

func TestKeyedEntries(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	l := newTestLog(t, s, "log")
	l.integrate(3, true)
	// The same data again under another key: FindLeaf keeps the first index.
	b, next := l.batch(2, true)
	b.Entries[1].Data = []byte("entry 1 of log")
	b.Entries[1].LeafHash = tree.LeafHash(b.Entries[1].Data)
	_, tiles, err := l.edge.Append([]tree.Hash{b.Entries[0].LeafHash, b.Entries[1].LeafHash})
	if err != nil {
		t.Fatal(err)
	}
	next, _, _ = l.edge.Append([]tree.Hash{b.Entries[0].LeafHash, b.Entries[1].LeafHash})
	b.Tiles, b.Checkpoint.TreeHead = tiles, storage.TreeHead{Size: next.Size(), Root: next.Root()}
	b.Checkpoint.Note = note(b.Checkpoint.TreeHead)
	if err := s.Integrate(ctx, "log", b); err != nil {
		t.Fatal(err)
	}
	l.edge = next
	verifyLog(t, s, "log")
	leaf := tree.LeafHash([]byte("entry 1 of log"))
	if i, err := s.FindLeaf(ctx, "log", leaf); err != nil || i != 1 {
		t.Fatalf("FindLeaf(entry 1) = %d, %v, want 1", i, err)
	}
	if i, err := s.FindLeaf(ctx, "log", b.Entries[1].Identity); err != nil || i != 4 {
		t.Fatalf("FindLeaf(key of entry 4) = %d, %v, want 4", i, err)
	}
	if _, err := s.FindLeaf(ctx, "log", tree.LeafHash([]byte("nope"))); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("FindLeaf(absent): %v, want ErrNotFound", err)
	}
	es, err := s.ReadEntries(ctx, "log", 4, 5)
	if err != nil || es[0].Identity != b.Entries[1].Identity || es[0].LeafHash != leaf {
		t.Fatalf("ReadEntries(4) = %+v, %v", es, err)
	}
	ids, err := s.LookupIdentities(ctx, "log", []storage.Hash{leaf, b.Entries[1].Identity})
	if err != nil || len(ids) != 1 || ids[b.Entries[1].Identity] != 4 {
		t.Fatalf("LookupIdentities = %v, %v (a leaf hash is not an identity of a keyed entry)", ids, err)
	}
}

func TestCosignatures(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	l := newTestLog(t, s, "log")
	l.integrate(4, false)
	if err := s.AddCosignatures(ctx, "log", 3, []storage.Cosignature{{KeyID: "w", Signature: []byte("x")}}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("AddCosignatures(no checkpoint): %v, want ErrNotFound", err)
	}
	if err := s.AddCosignatures(ctx, "log", 4, []storage.Cosignature{{Signature: []byte("x")}}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("AddCosignatures(no key ID): %v, want ErrInvalid", err)
	}
	add := func(size uint64, cs ...storage.Cosignature) {
		t.Helper()
		if err := s.AddCosignatures(ctx, "log", size, cs); err != nil {
			t.Fatal(err)
		}
	}
	add(4, storage.Cosignature{KeyID: "w2", Signature: []byte("— w2 old")}, storage.Cosignature{KeyID: "w1", Signature: []byte("— w1")})
	add(4, storage.Cosignature{KeyID: "w2", Signature: []byte("— w2 new")})
	add(0, storage.Cosignature{KeyID: "w1", Signature: []byte("— w1 empty")})
	cs, err := s.CosignaturesAt(ctx, "log", 4)
	want := []storage.Cosignature{{KeyID: "w1", Signature: []byte("— w1")}, {KeyID: "w2", Signature: []byte("— w2 new")}}
	if err != nil || !reflect.DeepEqual(cs, want) {
		t.Fatalf("CosignaturesAt(4) = %q, %v, want %q", cs, err, want)
	}
	if cs, err := s.CosignaturesAt(ctx, "log", 2); err != nil || len(cs) != 0 {
		t.Fatalf("CosignaturesAt(2) = %q, %v, want none", cs, err)
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "tlog.db")
	s, err := Open(path, Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	l := newTestLog(t, s, "log")
	l.integrate(300, false)
	l.integrate(10, true)
	if err := s.AddCosignatures(context.Background(), "log", 310, []storage.Cosignature{{KeyID: "w", Signature: []byte("s")}}); err != nil {
		t.Fatal(err)
	}
	before := snapshotAll(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]os.FileMode{false: 0o600, true: 0o700 | os.ModeDir}[fi.IsDir()]; fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), want)
		}
	}

	s = openTest(t, path)
	if after := snapshotAll(t, s); after != before {
		t.Fatalf("reopened store differs:\nbefore %s\nafter  %s", before, after)
	}
	verifyLog(t, s, "log")
	l.s = s
	l.integrate(5, false) // the reopened store goes on where it stopped
	verifyLog(t, s, "log")
}

// snapshotAll reads a store's logs, checkpoints, entries and cosignatures.
func snapshotAll(t *testing.T, s storage.Store) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	logs, err := s.ListLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		fmt.Fprintf(&b, "log %q %q %q %v\n", l.Name, l.Origin, l.VerifierKey, l.CreatedAt.UnixNano())
		cps, err := s.ListCheckpoints(ctx, l.Name, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cps {
			cs, err := s.CosignaturesAt(ctx, l.Name, c.Size)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "checkpoint %d %x %q %q\n", c.Size, c.Root, c.Note, cs)
		}
		latest, err := s.LatestCheckpoint(ctx, l.Name)
		if err != nil {
			t.Fatal(err)
		}
		es, err := s.ReadEntries(ctx, l.Name, 0, latest.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			fmt.Fprintf(&b, "entry %d %x %x %q\n", e.Index, e.Identity, e.LeafHash, e.Data)
		}
	}
	return b.String()
}

func TestLockedSameProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	openTest(t, path)
	start := time.Now()
	s2, err := Open(path, Config{Logger: testLogger(t), LockTimeout: 200 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a file in use succeeded")
	}
	checkLockedError(t, err, path)
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("second Open gave up after %v, want about 200ms", d)
	}
}

func checkLockedError(t *testing.T, err error, path string) {
	t.Helper()
	if !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	for _, want := range []string{path, "another tlogd"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("second Open: %v", err)
}

// lockChildEnv makes the test binary, re-executed by TestLockedOtherProcess,
// open the store named by its value and report the error.
const lockChildEnv = "TLOG_EMBEDDED_TEST_OPEN"

func TestLockedOtherProcess(t *testing.T) {
	if path := os.Getenv(lockChildEnv); path != "" {
		s, err := Open(path, Config{LockTimeout: -1})
		if err == nil {
			s.Close()
			fmt.Println("OPENED")
			os.Exit(0)
		}
		fmt.Printf("ERR locked=%v %v\n", errors.Is(err, storage.ErrLocked), err)
		os.Exit(0)
	}
	path := filepath.Join(t.TempDir(), "tlog.db")
	s := openTest(t, path)
	newTestLog(t, s, "log").integrate(10, false)
	child := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockedOtherProcess$")
		cmd.Env = append(os.Environ(), lockChildEnv+"="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return string(out)
	}
	out := child()
	if !strings.Contains(out, "ERR locked=true") || !strings.Contains(out, path) || !strings.Contains(out, "another tlogd") {
		t.Fatalf("child opening a locked store said:\n%s", out)
	}
	t.Logf("child: %s", out)
	verifyLog(t, s, "log")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out := child(); !strings.Contains(out, "OPENED") {
		t.Fatalf("child opening a released store said:\n%s", out)
	}
}

func TestNewerFormatRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	s := openTest(t, path)
	newTestLog(t, s, "log")
	s.Close()
	setFormat(t, path, formatVersion+1)
	if _, err := Open(path, Config{Logger: testLogger(t)}); !errors.Is(err, storage.ErrSchemaTooNew) {
		t.Fatalf("Open(newer format): %v, want ErrSchemaTooNew", err)
	} else {
		t.Logf("Open(newer format): %v", err)
	}
	// The refusal left the file alone and released it.
	setFormat(t, path, formatVersion)
	verifyLog(t, openTest(t, path), "log")
}

// TestOlderFormatUpgraded opens a format 1 file: it is read as it was, and
// marked as of the current format, which format 1 binaries refuse.
func TestOlderFormatUpgraded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlog.db")
	s := openTest(t, path)
	newTestLog(t, s, "log").integrate(100, false)
	s.Close()
	setFormat(t, path, 1)
	s = openTest(t, path)
	verifyLog(t, s, "log")
	s.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("format")); binary.BigEndian.Uint64(v) != formatVersion || formatVersion < 2 {
			t.Errorf("format after opening a format 1 file: %x, want %d (at least 2)", v, formatVersion)
		}
		return nil
	})
}

func setFormat(t *testing.T, path string, version uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("format"), binary.BigEndian.AppendUint64(nil, version))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPageSize(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "bad.db"), Config{PageSize: 1000}); err == nil {
		t.Fatal("Open with page size 1000 succeeded")
	}
	path := filepath.Join(dir, "tlog.db")
	s, err := Open(path, Config{PageSize: 16384})
	if err != nil {
		t.Fatal(err)
	}
	newTestLog(t, s, "log").integrate(1000, false)
	s.Close()
	s = openTest(t, path) // the file keeps its page size
	if ps := s.db.Info().PageSize; ps != 16384 {
		t.Fatalf("page size %d after reopening, want 16384", ps)
	}
	verifyLog(t, s, "log")
}

func TestNotATlogStore(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(other, Config{}); err == nil || !strings.Contains(err.Error(), "not a tlog store") {
		t.Fatalf("Open(other bbolt file): %v", err)
	}
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(junk, Config{}); err == nil {
		t.Fatal("Open(junk) succeeded")
	}
}

// everyCall calls every method of the store on a log.
func everyCall(ctx context.Context, s storage.Store, name string) map[string]error {
	errs := map[string]error{}
	_, errs["GetLog"] = s.GetLog(ctx, name)
	errs["Integrate"] = s.Integrate(ctx, name, &storage.Batch{Checkpoint: storage.Checkpoint{TreeHead: storage.TreeHead{Root: tree.EmptyRoot()}}, Prev: storage.TreeHead{Root: tree.EmptyRoot()}})
	_, errs["LatestCheckpoint"] = s.LatestCheckpoint(ctx, name)
	_, errs["CheckpointAt"] = s.CheckpointAt(ctx, name, 0)
	_, errs["ListCheckpoints"] = s.ListCheckpoints(ctx, name, 0, 10)
	_, errs["ReadTiles"] = s.ReadTiles(ctx, name, []tile.Tile{{Level: 0, Index: 0, Width: 1}})
	_, errs["ReadEntries"] = s.ReadEntries(ctx, name, 0, 1)
	_, errs["LookupIdentities"] = s.LookupIdentities(ctx, name, []storage.Hash{{}})
	_, errs["FindLeaf"] = s.FindLeaf(ctx, name, storage.Hash{})
	errs["AddCosignatures"] = s.AddCosignatures(ctx, name, 0, []storage.Cosignature{{KeyID: "w", Signature: []byte("s")}})
	_, errs["CosignaturesAt"] = s.CosignaturesAt(ctx, name, 0)
	return errs
}

func TestUnknownLog(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	newTestLog(t, s, "log")
	for _, name := range []string{"nope", ""} {
		for call, err := range everyCall(context.Background(), s, name) {
			if !errors.Is(err, storage.ErrLogNotFound) {
				t.Errorf("%s(%q): %v, want ErrLogNotFound", call, name, err)
			}
		}
	}
}

func TestCancelledContext(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	newTestLog(t, s, "log")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs := everyCall(ctx, s, "log")
	_, errs["ListLogs"] = s.ListLogs(ctx)
	errs["CreateLog"] = s.CreateLog(ctx, storage.Log{Name: "new"}, storage.Checkpoint{})
	for call, err := range errs {
		if err != context.Canceled {
			t.Errorf("%s: %v, want context.Canceled itself", call, err)
		}
	}
	if _, err := s.GetLog(context.Background(), "new"); !errors.Is(err, storage.ErrLogNotFound) {
		t.Errorf("CreateLog with a cancelled context created the log: %v", err)
	}
}

// TestConcurrentReads reads while batches commit: readers always see a
// committed, consistent state.
func TestConcurrentReads(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "tlog.db"))
	l := newTestLog(t, s, "log")
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for {
			select {
			case <-done:
				return
			default:
			}
			cp, err := s.LatestCheckpoint(ctx, "log")
			if err == nil && cp.Size > 0 {
				reader := tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) { return s.ReadTiles(ctx, "log", ts) })
				var root tree.Hash
				if root, err = tree.RootHash(reader, cp.Size); err == nil && root != cp.Root {
					err = fmt.Errorf("root at %d is %x from tiles, %x in the checkpoint", cp.Size, root, cp.Root)
				}
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	for range 50 {
		l.integrate(37, false)
	}
	close(done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	verifyLog(t, s, "log")
}

// TestReadOnly: a read-only Store reads a format 1 file without upgrading
// it, refuses writes, and refuses a missing or empty file.
func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tlog.db")
	s := openTest(t, path)
	l := newTestLog(t, s, "log")
	l.integrate(100, false)
	s.Close()
	setFormat(t, path, 1)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	ro, err := Open(path, Config{ReadOnly: true})
	if err != nil {
		t.Fatalf("Open read-only: %v", err)
	}
	verifyLog(t, ro, "log")
	b, _ := l.batch(1, false)
	if err := ro.Integrate(t.Context(), "log", b); err == nil {
		t.Error("Integrate on a read-only store: no error")
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
		t.Errorf("the file changed under a read-only Store (%v)", err)
	}

	if _, err := Open(filepath.Join(dir, "missing", "tlog.db"), Config{ReadOnly: true}); err == nil {
		t.Error("Open read-only of a missing file: no error")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open read-only made the missing directory (%v)", err)
	}
}

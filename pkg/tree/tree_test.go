package tree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"github.com/tlog-dev/tlog/pkg/tile"
)

// memTiles is a tile store in memory that, like real storage, keeps the
// widest version of each tile and refuses to shrink or rewrite one.
type memTiles struct {
	t     testing.TB
	tiles map[tile.Tile][]byte // keyed with Width 0
	reads int
}

func newMemTiles(t testing.TB) *memTiles { return &memTiles{t: t, tiles: map[tile.Tile][]byte{}} }

// memTree returns the stored tiles and the edge of the tree of leaves
// entry(0), ..., entry(n-1).
func memTree(tb testing.TB, n int) (*memTiles, *Edge) {
	tb.Helper()
	leaves := make([]Hash, n)
	for i := range leaves {
		leaves[i] = LeafHash(entry(uint64(i)))
	}
	e, tiles, err := EmptyEdge().Append(leaves)
	if err != nil {
		tb.Fatal(err)
	}
	m := newMemTiles(tb)
	m.put(tiles)
	return m, e
}

func (m *memTiles) put(ts []TileData) {
	for _, td := range ts {
		key := td.Tile
		key.Width = 0
		old := m.tiles[key]
		if len(td.Hashes) < len(old) || string(td.Hashes[:len(old)]) != string(old) {
			m.t.Fatalf("tile %s rewritten: had %d bytes, new %d bytes do not extend it", td.Path(), len(old), len(td.Hashes))
		}
		if len(td.Hashes) != td.Width*tile.HashSize {
			m.t.Fatalf("tile %s has %d bytes", td.Path(), len(td.Hashes))
		}
		m.tiles[key] = append([]byte(nil), td.Hashes...)
	}
}

func (m *memTiles) ReadTiles(ts []tile.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, t := range ts {
		m.reads++
		key := t
		key.Width = 0
		d, ok := m.tiles[key]
		if !ok || len(d) < t.Width*tile.HashSize {
			return nil, fmt.Errorf("%w: %s", ErrMissingTile, t.Path())
		}
		out[i] = d
	}
	return out, nil
}

// sliceTiles is memTiles that also reads slices of tiles, counting them
// apart from whole tiles.
type sliceTiles struct {
	*memTiles
	slices int
}

func (s *sliceTiles) ReadTileSlices(ss []TileSlice) ([][]byte, error) {
	out := make([][]byte, len(ss))
	for i, sl := range ss {
		s.slices++
		if !sl.InRange() {
			s.t.Fatalf("slice %d..%d of %s asked for", sl.From, sl.To, sl.Tile.Path())
		}
		key := sl.Tile
		key.Width = 0
		d, ok := s.tiles[key]
		if !ok || len(d) < sl.To*tile.HashSize {
			return nil, fmt.Errorf("%w: %s", ErrMissingTile, sl.Tile.Path())
		}
		out[i] = d[sl.From*tile.HashSize : sl.To*tile.HashSize]
	}
	return out, nil
}

// sumdbHashes is an independent model: golang.org/x/mod/sumdb/tlog's stored
// hash layout, grown one leaf at a time.
type sumdbHashes []sumdb.Hash

func (s sumdbHashes) ReadHashes(idx []int64) ([]sumdb.Hash, error) {
	out := make([]sumdb.Hash, len(idx))
	for i, x := range idx {
		out[i] = s[x]
	}
	return out, nil
}

func entry(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte("entry "), i) }

// TestAgainstSumdb appends leaves in batches of varied sizes and checks every
// root, and inclusion and consistency proofs at every size up to 600 (and a
// sample beyond), against golang.org/x/mod/sumdb/tlog.
func TestAgainstSumdb(t *testing.T) {
	m := newMemTiles(t)
	var model sumdbHashes
	edge := EmptyEdge()
	roots := []sumdb.Hash{sumdb.Hash(EmptyRoot())}
	batches := []int{1, 1, 3, 250, 1, 255, 256, 257, 1000, 77, 2000}
	for _, n := range batches {
		leaves := make([]Hash, n)
		for i := range leaves {
			idx := edge.Size() + uint64(i)
			leaves[i] = LeafHash(entry(idx))
			hs, err := sumdb.StoredHashes(int64(idx), entry(idx), model)
			if err != nil {
				t.Fatal(err)
			}
			model = append(model, hs...)
			root, err := sumdb.TreeHash(int64(idx+1), model)
			if err != nil {
				t.Fatal(err)
			}
			roots = append(roots, root)
		}
		next, tiles, err := edge.Append(leaves)
		if err != nil {
			t.Fatal(err)
		}
		m.put(tiles)
		if next.Root() != roots[next.Size()] {
			t.Fatalf("size %d: edge root %x, sumdb %x", next.Size(), next.Root(), roots[next.Size()])
		}
		// Reloading the edge from storage gives the same edge.
		loaded, err := LoadEdge(m, next.Size())
		if err != nil {
			t.Fatal(err)
		}
		if loaded.Root() != next.Root() || !loaded.rng.Equal(next.rng) || fmt.Sprint(loaded.partials) != fmt.Sprint(next.partials) {
			t.Fatalf("size %d: reloaded edge differs", next.Size())
		}
		edge = next
	}
	size := edge.Size()
	sizes := []uint64{}
	for s := uint64(1); s <= 600; s++ {
		sizes = append(sizes, s)
	}
	sizes = append(sizes, 1023, 1024, 1025, 4096, 65535, 65536)
	// Every check runs on the plain store and through a small cache (so
	// that tiles are evicted and read again).
	cache := NewCache(3)
	sliced := &sliceTiles{memTiles: m}
	for _, r := range []TileReader{m, cache.Reader("log", m), NewCache(3).Reader("log", sliced)} {
		checkProofs(t, r, sizes, size, roots)
	}
	if sliced.slices == 0 {
		t.Fatal("no proof read a slice of a tile through a SliceReader")
	}
}

func checkProofs(t *testing.T, m TileReader, sizes []uint64, size uint64, roots []sumdb.Hash) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, n := range sizes {
		if n > size {
			continue
		}
		root, err := RootHash(m, n)
		if err != nil {
			t.Fatal(err)
		}
		if root != roots[n] {
			t.Fatalf("RootHash(%d) = %x, want %x", n, root, roots[n])
		}
		for _, i := range []uint64{0, n - 1, n / 2, rnd.Uint64N(n)} {
			p, err := InclusionProof(m, i, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := sumdb.CheckRecord(sumdb.RecordProof(toSumdb(p)), int64(n), roots[n], int64(i), sumdb.RecordHash(entry(i))); err != nil {
				t.Fatalf("inclusion %d in %d: sumdb: %v", i, n, err)
			}
			lh := LeafHash(entry(i))
			if err := proof.VerifyInclusion(hasher, i, n, lh[:], p, root[:]); err != nil {
				t.Fatalf("inclusion %d in %d: merkle: %v", i, n, err)
			}
		}
		for _, m0 := range []uint64{1, n - 1, n / 2, rnd.Uint64N(n) + 1} {
			if m0 == 0 {
				continue
			}
			p, err := ConsistencyProof(m, m0, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := sumdb.CheckTree(toSumdb(p), int64(n), roots[n], int64(m0), roots[m0]); err != nil {
				t.Fatalf("consistency %d..%d: sumdb: %v", m0, n, err)
			}
		}
	}
}

func toSumdb(p [][]byte) sumdb.TreeProof {
	out := make(sumdb.TreeProof, len(p))
	for i := range p {
		out[i] = sumdb.Hash(p[i])
	}
	return out
}

func TestProofErrors(t *testing.T) {
	m := newMemTiles(t)
	e, tiles, err := EmptyEdge().Append([]Hash{LeafHash([]byte("a")), LeafHash([]byte("b"))})
	if err != nil {
		t.Fatal(err)
	}
	m.put(tiles)
	if _, err := InclusionProof(m, 2, e.Size()); !errors.Is(err, ErrIndexOutOfRange) {
		t.Errorf("index == size: got %v", err)
	}
	if _, err := ConsistencyProof(m, 2, 1); !errors.Is(err, ErrSizeOutOfRange) {
		t.Errorf("first > second: got %v", err)
	}
	if _, err := InclusionProof(m, 0, 300); !errors.Is(err, ErrMissingTile) {
		t.Errorf("size beyond stored tiles: got %v", err)
	}
	if p, err := ConsistencyProof(m, 2, 2); err != nil || len(p) != 0 {
		t.Errorf("consistency n..n: %v, %d hashes", err, len(p))
	}
}

// TestAppendDoesNotMutate checks that an Edge stays valid after Append, so a
// failed commit can be retried from the same edge.
func TestAppendDoesNotMutate(t *testing.T) {
	e, _, err := EmptyEdge().Append([]Hash{LeafHash([]byte("x"))})
	if err != nil {
		t.Fatal(err)
	}
	a, ta, _ := e.Append([]Hash{LeafHash([]byte("a"))})
	b, tb, _ := e.Append([]Hash{LeafHash([]byte("b"))})
	if e.Size() != 1 || a.Root() == b.Root() {
		t.Fatal("append mutated the edge")
	}
	if string(ta[0].Hashes[32:]) == string(tb[0].Hashes[32:]) {
		t.Fatal("two appends from one edge share tile memory")
	}
}

// TestProofReadsFewTiles checks that proofs read O(log n) tiles.
func TestProofReadsFewTiles(t *testing.T) {
	m, e := memTree(t, 70000)
	for _, i := range []uint64{0, 1, 12345, 69999} {
		m.reads = 0
		if _, err := InclusionProof(m, i, e.Size()); err != nil {
			t.Fatal(err)
		}
		// One tile per tile level, plus the partial tiles on the right edge.
		if m.reads > 6 {
			t.Errorf("inclusion proof of %d read %d tiles", i, m.reads)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 256, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e := EmptyEdge()
			leaves := make([]Hash, batch)
			for i := range leaves {
				leaves[i] = LeafHash(entry(uint64(i)))
			}
			b.ResetTimer()
			for b.Loop() {
				var err error
				if e, _, err = e.Append(leaves); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "leaves/s")
		})
	}
}

func BenchmarkInclusionProof(b *testing.B) {
	b.Run("uncached", func(b *testing.B) { benchmarkInclusionProof(b, 0) })
	// 512 tiles kept whole, 8,192 summaries: most proofs miss the whole
	// tiles and use a summary.
	b.Run("summaries", func(b *testing.B) { benchmarkInclusionProof(b, 512) })
	b.Run("cached", func(b *testing.B) { benchmarkInclusionProof(b, 1<<13) })
}

func benchmarkInclusionProof(b *testing.B, cacheTiles int) {
	m, e := memTree(b, 1<<20)
	var r TileReader = m
	if cacheTiles > 0 {
		r = NewCache(cacheTiles).Reader("log", m)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		if _, err := InclusionProof(r, rnd.Uint64N(e.Size()), e.Size()); err != nil {
			b.Fatal(err)
		}
	}
}

// prover returns a function that proves leaf i of memTree's tree with edge
// e through r, and checks the proof with sumdb.
func prover(t *testing.T, r TileReader, e *Edge) func(i uint64) {
	root, n := e.Root(), int64(e.Size())
	return func(i uint64) {
		t.Helper()
		p, err := InclusionProof(r, i, e.Size())
		if err != nil {
			t.Fatal(err)
		}
		lh := LeafHash(entry(i))
		if err := sumdb.CheckRecord(sumdb.RecordProof(toSumdb(p)), n, sumdb.Hash(root), int64(i), sumdb.Hash(lh)); err != nil {
			t.Fatalf("inclusion %d: %v", i, err)
		}
	}
}

// TestCacheSummaries checks proofs into tiles the cache no longer holds
// but has summaries of: they verify, the tile is read once and cached again
// with its summary instead of its interior levels (not recomputed), and
// later proofs into it read nothing.
func TestCacheSummaries(t *testing.T) {
	const n = 64 * tile.Width
	m, e := memTree(t, n)
	c := NewCache(8) // 8 whole tiles' worth of bytes, 256 summaries
	prove := prover(t, c.Reader("log", m), e)
	// First touch of every level-0 tile: expanded, cached, summarized.
	for i := uint64(0); i < n; i += tile.Width {
		prove(i)
	}
	if got := len(c.sums) + len(c.old); got != 64 {
		t.Fatalf("%d summaries after touching 64 full level-0 tiles, want 64", got)
	}
	// Every leaf of every tile evicted since: the first proof reads its
	// tile, which comes back with its summary; the others read nothing.
	for ti := uint64(0); ti < n/tile.Width; ti++ {
		k := cacheKey{"log", 0, ti, tile.Width}
		if _, ok := c.tiles[k]; ok {
			continue
		}
		for i := ti * tile.Width; i < (ti+1)*tile.Width; i++ {
			before := m.reads
			prove(i)
			want := 0
			if i == ti*tile.Width {
				want = 1
			}
			if m.reads-before != want {
				t.Fatalf("proof of %d read %d tiles, want %d", i, m.reads-before, want)
			}
		}
		el, ok := c.tiles[k]
		if !ok {
			t.Fatalf("tile %d was not cached again", ti)
		}
		if ct := el.Value.(*cachedTile); ct.levels[1] != nil || ct.levels[summaryLevel] == nil {
			t.Fatalf("tile %d was cached with its interior levels recomputed, not from its summary", ti)
		}
	}
	// The cache is bounded by bytes: tiles cached from their summaries take
	// half the room of whole ones, so more of them fit.
	if c.bytes > c.maxBytes || c.lru.Len() <= 8 {
		t.Fatalf("cache holds %d tiles in %d bytes, want more than 8 in at most %d", c.lru.Len(), c.bytes, c.maxBytes)
	}
}

// TestCacheSlices checks proofs through a SliceReader into tiles the cache
// no longer holds but has summaries of: they verify, and each reads one
// slice of 32 hashes and no whole tile. A slice reader's short answer is a
// missing tile.
func TestCacheSlices(t *testing.T) {
	const n = 64 * tile.Width
	m, e := memTree(t, n)
	st := &sliceTiles{memTiles: m}
	c := NewCache(8)
	prove := prover(t, c.Reader("log", st), e)
	for i := uint64(0); i < n; i += tile.Width {
		prove(i) // first touch: read whole, summarized
	}
	evicted := 0
	for ti := uint64(0); ti < n/tile.Width; ti++ {
		if _, ok := c.tiles[cacheKey{"log", 0, ti, tile.Width}]; ok {
			continue
		}
		evicted++
		for i := ti * tile.Width; i < (ti+1)*tile.Width; i += 7 {
			reads, slices := m.reads, st.slices
			prove(i)
			if m.reads != reads || st.slices != slices+1 {
				t.Fatalf("proof of %d read %d tiles and %d slices, want 0 and 1", i, m.reads-reads, st.slices-slices)
			}
		}
		if _, ok := c.tiles[cacheKey{"log", 0, ti, tile.Width}]; ok {
			t.Fatalf("tile %d was cached from a slice", ti)
		}
	}
	if evicted < 32 {
		t.Fatalf("only %d of 64 tiles evicted from a cache of 8", evicted)
	}

	short := TileReaderFunc(m.ReadTiles)
	bad := &shortSlices{TileReader: short}
	c = NewCache(1)
	r := c.Reader("log", bad)
	for i := uint64(0); i < n; i += tile.Width {
		if _, err := InclusionProof(r, i, n); err != nil {
			t.Fatal(err)
		}
	}
	// The second-to-last tile: evicted, its summary kept.
	if _, err := InclusionProof(r, n-tile.Width-1, n); !errors.Is(err, ErrMissingTile) {
		t.Fatalf("proof from a short slice: %v, want ErrMissingTile", err)
	}
}

// shortSlices answers every slice with one hash.
type shortSlices struct{ TileReader }

func (shortSlices) ReadTileSlices(ss []TileSlice) ([][]byte, error) {
	out := make([][]byte, len(ss))
	for i := range out {
		out[i] = make([]byte, tile.HashSize)
	}
	return out, nil
}

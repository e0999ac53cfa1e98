package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"runtime"
	"testing"

	"github.com/tlog-dev/tlog/internal/bloom"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/disktiles"
)

// BenchmarkIntegrate measures durable batches of 256-byte entries (the
// server's synchronous_commit, on by default), one batch per iteration:
//
//   - copy: Integrate as shipped (BEGIN + compare-and-swap, COPY of the
//     entries, tiles + checkpoint + COMMIT: three round trips);
//   - unnest: the alternative kept here for comparison, one statement that
//     calls a PL/pgSQL function doing the compare-and-swap and inserting the
//     entries from arrays (INSERT ... SELECT FROM unnest): one round trip.
//
// Building batches (hashing, tiles) is not timed.
func BenchmarkIntegrate(b *testing.B) {
	for _, n := range []int{1000, 4096} {
		for _, strategy := range []string{"copy", "unnest"} {
			b.Run(fmt.Sprintf("entries=%d/%s", n, strategy), func(b *testing.B) {
				s, _ := openStoreSize(b, 0)
				ctx := b.Context()
				integrate := s.Integrate
				if strategy == "unnest" {
					if _, err := s.pool.Exec(ctx, createIntegrateUnnest); err != nil {
						b.Fatal(err)
					}
					integrate = s.integrateUnnest
				}
				l := newTestLog(b, s, "bench")
				// Warm up the connection and its prepared statements.
				if err := integrate(ctx, l.name, l.integrateBatch(b, 1)); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(n * 256))
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					batch := l.integrateBatch(b, n)
					b.StartTimer()
					if err := integrate(ctx, l.name, batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}

// integrateBatch returns the next batch of n 256-byte entries and advances l
// as if it were stored.
func (l *testLog) integrateBatch(t testing.TB, n int) *storage.Batch {
	b, next := l.batch(t, n, 256)
	l.edge, l.count = next, l.count+n
	return b
}

// createIntegrateUnnest is the one-statement strategy's function.
const createIntegrateUnnest = `
CREATE FUNCTION bench_integrate_unnest(
    p_log bigint,
    p_prev_size bigint, p_prev_root bytea,
    p_size bigint, p_root bytea, p_note bytea,
    p_identities bytea[], p_leaf_hashes bytea[], p_data bytea[],
    p_tile_levels smallint[], p_tile_idxs bigint[], p_tile_hashes bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tlog_advance_head(p_log, p_prev_size, p_prev_root, p_size, p_root);
    INSERT INTO entries (log_id, idx, identity, leaf_hash, data)
    SELECT p_log, p_prev_size + e.ord - 1, e.identity, e.leaf_hash, e.data
      FROM unnest(p_identities, p_leaf_hashes, p_data) WITH ORDINALITY AS e (identity, leaf_hash, data, ord);
    INSERT INTO tiles AS t (log_id, level, idx, hashes)
    SELECT p_log, n.level, n.idx, n.hashes
      FROM unnest(p_tile_levels, p_tile_idxs, p_tile_hashes) AS n (level, idx, hashes)
    ON CONFLICT (log_id, level, idx) DO UPDATE SET hashes = excluded.hashes
     WHERE t.hashes <> excluded.hashes;
    INSERT INTO checkpoints (log_id, size, root_hash, note) VALUES (p_log, p_size, p_root, p_note);
END $$`

// integrateUnnest is the one-statement strategy (without Integrate's error
// mapping, which the benchmark does not need).
func (s *Store) integrateUnnest(ctx context.Context, log string, b *storage.Batch) error {
	w, err := newBatchWrite(b)
	if err != nil {
		return err
	}
	id, err := s.logID(ctx, log)
	if err != nil {
		return err
	}
	if err := s.addPartitions(ctx, w.size); err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `SELECT bench_integrate_unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		id, w.prevSize, w.prevRoot, w.size, w.root, w.note,
		w.identities, w.leafHashes, w.data, w.levels, w.idxs, w.hashes)
	return err
}

// BenchmarkReadTilesConcurrent measures ReadTiles from 64 goroutines, each
// reading one random full level-0 tile per call, as inclusion proofs over a
// large tree do when their tile misses the server's cache. The log holds the
// hash tiles of 1M entries (3,907 level-0 tiles), written directly with
// random hashes: reads do not check them. Sub-benchmarks set how many tile
// queries may run at once; "queries=all" lets every call run its own, as
// without coalescing.
func BenchmarkReadTilesConcurrent(b *testing.B) {
	const entries = 1 << 20
	s, _ := openStoreSize(b, 0)
	ctx := b.Context()
	l := newTestLog(b, s, "bench")
	id, err := s.logID(ctx, l.name)
	if err != nil {
		b.Fatal(err)
	}
	var (
		levels []int16
		idxs   []int64
		hashes [][]byte
	)
	for level, n := 0, entries; n >= tile.Width; level, n = level+1, n/tile.Width {
		for i := range n / tile.Width {
			h := make([]byte, tile.Width*tile.HashSize)
			rand.Read(h)
			levels, idxs, hashes = append(levels, int16(level)), append(idxs, int64(i)), append(hashes, h)
		}
	}
	if _, err := s.pool.Exec(ctx, `
INSERT INTO tiles (log_id, level, idx, hashes)
SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])`, id, levels, idxs, hashes); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `VACUUM (ANALYZE) tiles`); err != nil {
		b.Fatal(err)
	}
	const level0 = entries / tile.Width
	// Warm the server's buffers: every run reads from memory.
	for i := 0; i < level0; i += 256 {
		ts := make([]tile.Tile, min(256, level0-i))
		for j := range ts {
			ts[j] = tile.Tile{Level: 0, Index: uint64(i + j), Width: tile.Width}
		}
		if _, err := s.ReadTiles(ctx, l.name, ts); err != nil {
			b.Fatal(err)
		}
	}
	for _, limit := range []int{1, maxTileQueries, 4, math.MaxInt} {
		name := fmt.Sprintf("queries=%d", limit)
		if limit == math.MaxInt {
			name = "queries=all"
		}
		b.Run(name, func(b *testing.B) {
			s.tiles.limit = limit
			q := s.tiles.queries.Load()
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					t := tile.Tile{Level: 0, Index: uint64(mrand.IntN(level0)), Width: tile.Width}
					ts, err := s.ReadTiles(ctx, l.name, []tile.Tile{t})
					if err != nil {
						b.Error(err)
						return
					}
					if len(ts[0]) != tile.Width*tile.HashSize {
						b.Errorf("ReadTiles(%s): %d bytes", t.Path(), len(ts[0]))
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tiles/s")
			b.ReportMetric(float64(b.N)/float64(s.tiles.queries.Load()-q), "tiles/query")
		})
	}
	// What a proof into a tile with a cached summary reads: 32 hashes, from
	// the database, then from a tile file that holds every tile.
	b.Run("slices", func(b *testing.B) { benchSlices(b, s, l.name, level0) })
	disk, err := disktiles.Open(b.TempDir(), level0*disktiles.TileBytes)
	if err != nil {
		b.Fatal(err)
	}
	defer disk.Close()
	s.disk = disk
	for i := range level0 {
		if _, err := s.ReadTiles(ctx, l.name, []tile.Tile{{Level: 0, Index: uint64(i), Width: tile.Width}}); err != nil {
			b.Fatal(err)
		}
	}
	if disk.Tiles() != level0 {
		b.Fatalf("tile file holds %d tiles, want %d", disk.Tiles(), level0)
	}
	b.Run("slices-from-file", func(b *testing.B) { benchSlices(b, s, l.name, level0) })
	s.disk = nil
}

// benchSlices reads random 32-hash slices of level-0 tiles from 64 goroutines.
func benchSlices(b *testing.B, s *Store, log string, level0 int) {
	ctx := b.Context()
	s.tiles.limit = maxTileQueries
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t := tile.Tile{Level: 0, Index: uint64(mrand.IntN(level0)), Width: tile.Width}
			from := mrand.IntN(tile.Width/32) * 32
			sl := []tree.TileSlice{{Tile: t, From: from, To: from + 32}}
			hs, err := s.ReadTileSlices(ctx, log, sl)
			if err != nil {
				b.Error(err)
				return
			}
			if len(hs[0]) != 32*tile.HashSize {
				b.Errorf("ReadTileSlices(%s): %d bytes", t.Path(), len(hs[0]))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "slices/s")
}

// BenchmarkFullProbes measures the Bloom filter side of a batch's look-ups
// at 10M entries: 4,096 identities against the filters of 19 full
// partitions of 2^19 entries (no database: filters are in memory).
func BenchmarkFullProbes(b *testing.B) {
	const parts, batch = 19, 4096
	fs := make([][]byte, parts)
	key := make([]byte, 32)
	for k := range fs {
		fs[k] = bloom.New(1 << 19)
		for range 1 << 19 {
			rand.Read(key)
			bloom.Add(fs[k], bloom.Hash(key))
		}
	}
	keys := make([][]byte, batch)
	for i := range keys {
		keys[i] = make([]byte, 32)
		rand.Read(keys[i])
	}
	probed := 0
	for b.Loop() {
		for _, p := range fullProbes(fs, keys, bloomHashes(keys)) {
			probed += len(p.keys)
		}
	}
	b.ReportMetric(float64(probed)/float64(b.N), "probed/batch")
}

package postgres

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// TestTileFile checks that full tiles read once are then read from the tile
// file, without a query and with the database's hashes, and that a tile is
// kept only once it is full and only up to the file's maximum.
func TestTileFile(t *testing.T) {
	ctx := t.Context()
	url := newDatabase(t, testPartitionSize)
	cfg := testConfig(t)
	cfg.TileFileBytes = 2 * tile.Width * tile.HashSize // two tiles
	s, err := Open(ctx, url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	plain, err := Open(ctx, url, Config{}) // reads the database only
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	l := newTestLog(t, s, "files")
	l.integrate(t, s, 3*tile.Width+100, 8)
	full := func(i uint64) tile.Tile { return tile.Tile{Level: 0, Index: i, Width: tile.Width} }
	want, err := plain.ReadTiles(ctx, l.name, []tile.Tile{full(0), full(1), full(2)})
	if err != nil {
		t.Fatal(err)
	}

	// A tile not yet full is neither answered nor kept as full.
	if _, err := s.ReadTiles(ctx, l.name, []tile.Tile{full(3)}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("ReadTiles of the partial tile 0/3 at full width: %v, want ErrNotFound", err)
	}
	// Slices of a tile not read whole yet query the database and keep nothing.
	if _, err := s.ReadTileSlices(ctx, l.name, []tree.TileSlice{{Tile: full(0), From: 0, To: 32}}); err != nil {
		t.Fatal(err)
	}
	if n := s.disk.Tiles(); n != 0 {
		t.Fatalf("tile file holds %d tiles before any full tile was read whole", n)
	}

	got, err := s.ReadTiles(ctx, l.name, []tile.Tile{full(0), full(1), full(2)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("tile 0/%d differs from the database's", i)
		}
	}
	if n := s.disk.Tiles(); n != 2 {
		t.Fatalf("tile file holds %d tiles after reading three, want its maximum of 2", n)
	}

	// Tiles 0 and 1 now come from the file: no query, the database's hashes.
	queries := s.tiles.queries.Load()
	got, err = s.ReadTiles(ctx, l.name, []tile.Tile{full(1), full(0)})
	if err != nil {
		t.Fatal(err)
	}
	slices := []tree.TileSlice{{Tile: full(0), From: 32, To: 64}, {Tile: full(1), From: 200, To: 256}, {Tile: full(0), From: 0, To: 1}}
	sl, err := s.ReadTileSlices(ctx, l.name, slices)
	if err != nil {
		t.Fatal(err)
	}
	if q := s.tiles.queries.Load() - queries; q != 0 {
		t.Errorf("%d queries for tiles the file holds, want 0", q)
	}
	if !bytes.Equal(got[0], want[1]) || !bytes.Equal(got[1], want[0]) {
		t.Error("tiles read from the file differ from the database's")
	}
	for i, x := range slices {
		if w := want[x.Tile.Index][x.From*tile.HashSize : x.To*tile.HashSize]; !bytes.Equal(sl[i], w) {
			t.Errorf("slice %d..%d of tile 0/%d from the file differs from the database's", x.From, x.To, x.Tile.Index)
		}
	}

	// Tile 2, beyond the file's maximum, and the partial tile still query.
	queries = s.tiles.queries.Load()
	if _, err := s.ReadTiles(ctx, l.name, []tile.Tile{full(2), {Level: 0, Index: 3, Width: 100}}); err != nil {
		t.Fatal(err)
	}
	if q := s.tiles.queries.Load() - queries; q != 1 {
		t.Errorf("%d queries for tiles the file does not hold, want 1", q)
	}

	// Tile 3, once full, is read whole with its new hashes.
	l.integrate(t, s, tile.Width, 8)
	got, err = s.ReadTiles(ctx, l.name, []tile.Tile{full(3)})
	if err != nil {
		t.Fatal(err)
	}
	want, err = plain.ReadTiles(ctx, l.name, []tile.Tile{full(3)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[0], want[0]) {
		t.Error("tile 0/3, full now, differs from the database's")
	}
	verifyLog(t, s, l)
}

// TestTileFileUnavailable: a tile file that cannot be created does not stop
// the store, which reads its tiles from the database.
func TestTileFileUnavailable(t *testing.T) {
	ctx := t.Context()
	url := newDatabase(t, testPartitionSize)
	cfg := testConfig(t)
	cfg.TileFileDir = t.TempDir() + "/missing"
	s, err := Open(ctx, url, cfg)
	if err != nil {
		t.Fatalf("Open with a tile file that cannot be created: %v", err)
	}
	defer s.Close()
	if s.disk != nil {
		t.Fatal("the store has a tile file in a missing directory")
	}
	l := newTestLog(t, s, "nofile")
	l.integrate(t, s, tile.Width+3, 8)
	if _, err := s.ReadTiles(ctx, l.name, []tile.Tile{{Level: 0, Index: 0, Width: tile.Width}}); err != nil {
		t.Fatal(err)
	}
	verifyLog(t, s, l)
}

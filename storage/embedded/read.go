package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// All reads run in bbolt read transactions: they see one committed state,
// run in parallel with each other and with Integrate, and never block it.
// Values are copied out before the transaction ends.

// LatestCheckpoint returns the checkpoint of the current tree head.
func (s *Store) LatestCheckpoint(ctx context.Context, name string) (storage.Checkpoint, error) {
	var c storage.Checkpoint
	err := s.view(ctx, name, func(lb *logBuckets) error {
		rec, err := lb.record()
		if err != nil {
			return err
		}
		v := lb.checkpoints.Get(u64(rec.Size))
		if v == nil {
			return fmt.Errorf("log %q: embedded store is damaged: no checkpoint for the tree head (size %d)", name, rec.Size)
		}
		c, err = decodeCheckpoint(rec.Size, v)
		return err
	})
	return c, err
}

// CheckpointAt returns the checkpoint signed at tree size size, or an error
// wrapping storage.ErrNotFound.
func (s *Store) CheckpointAt(ctx context.Context, name string, size uint64) (storage.Checkpoint, error) {
	var c storage.Checkpoint
	err := s.view(ctx, name, func(lb *logBuckets) error {
		v := lb.checkpoints.Get(u64(size))
		if v == nil {
			return fmt.Errorf("log %q: checkpoint at size %d: %w", name, size, storage.ErrNotFound)
		}
		var err error
		c, err = decodeCheckpoint(size, v)
		return err
	})
	return c, err
}

// ListCheckpoints returns up to limit checkpoints with size > after, in
// increasing size order. A negative limit is invalid.
func (s *Store) ListCheckpoints(ctx context.Context, name string, after uint64, limit int) ([]storage.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("%w: negative limit %d", storage.ErrInvalid, limit)
	}
	cs := []storage.Checkpoint{}
	err := s.view(ctx, name, func(lb *logBuckets) error {
		if limit == 0 || after == ^uint64(0) {
			return nil
		}
		c := lb.checkpoints.Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(cs) < limit; k, v = c.Next() {
			cp, err := decodeCheckpoint(decodeIndex(k), v)
			if err != nil {
				return err
			}
			cs = append(cs, cp)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cs, nil
}

// ReadTiles returns the hashes of each hash tile, exactly Width*32 bytes
// each. A tile that is absent or narrower than asked for is an error
// wrapping storage.ErrNotFound.
func (s *Store) ReadTiles(ctx context.Context, name string, tiles []tile.Tile) ([][]byte, error) {
	for _, t := range tiles {
		if t.Level < 0 || t.Level > tile.MaxLevel || t.Width < 1 || t.Width > tile.Width {
			return nil, fmt.Errorf("%w: tile %s: want a hash tile of width 1..%d", storage.ErrInvalid, t.Path(), tile.Width)
		}
	}
	return s.readHashes(ctx, name, len(tiles), func(i int) (tile.Tile, int, int) { return tiles[i], 0, tiles[i].Width })
}

// ReadTileSlices returns hashes [From, To) of each tile.
func (s *Store) ReadTileSlices(ctx context.Context, name string, slices []tree.TileSlice) ([][]byte, error) {
	for _, sl := range slices {
		if t := sl.Tile; t.Level < 0 || t.Level > tile.MaxLevel || t.Width < 1 || t.Width > tile.Width || !sl.InRange() {
			return nil, fmt.Errorf("%w: hashes %d..%d of tile %s: want a hash tile of width 1..%d and 0 <= from < to <= width",
				storage.ErrInvalid, sl.From, sl.To, t.Path(), tile.Width)
		}
	}
	return s.readHashes(ctx, name, len(slices), func(i int) (tile.Tile, int, int) {
		return slices[i].Tile, slices[i].From, slices[i].To
	})
}

// readHashes returns copies of hashes [from, to) of n tiles, each named by
// at(i).
func (s *Store) readHashes(ctx context.Context, name string, n int, at func(i int) (t tile.Tile, from, to int)) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	err := s.db.View(func(tx *bolt.Tx) error {
		tb, err := openTiles(tx, name)
		if err != nil {
			return err
		}
		for i := range out {
			t, from, to := at(i)
			v := tb.Get(tileKey(t.Level, t.Index))
			if len(v) < to*tile.HashSize {
				return fmt.Errorf("log %q: tile %s: %w", name, t.Path(), storage.ErrNotFound)
			}
			out[i] = bytes.Clone(v[from*tile.HashSize : to*tile.HashSize])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadEntries returns entries [start, end) in order, or an error wrapping
// storage.ErrNotFound if any of them is absent.
func (s *Store) ReadEntries(ctx context.Context, name string, start, end uint64) ([]storage.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if start > end {
		return nil, fmt.Errorf("%w: entry range [%d, %d)", storage.ErrInvalid, start, end)
	}
	var es []storage.Entry
	err := s.view(ctx, name, func(lb *logBuckets) error {
		es = make([]storage.Entry, 0, min(end-start, 1<<16))
		if start == end {
			return nil
		}
		c := lb.entries.Cursor()
		want := start
		for k, v := c.Seek(u64(start)); want < end; k, v = c.Next() {
			if k == nil || len(k) != 8 || binary.BigEndian.Uint64(k) != want {
				return fmt.Errorf("log %q: entry %d: %w", name, want, storage.ErrNotFound)
			}
			e, err := decodeEntry(want, v)
			if err != nil {
				return fmt.Errorf("log %q: %w", name, err)
			}
			es = append(es, e)
			want++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return es, nil
}

// LookupIdentities returns the index of each identity already in the log.
func (s *Store) LookupIdentities(ctx context.Context, name string, ids []storage.Hash) (map[storage.Hash]uint64, error) {
	found := make(map[storage.Hash]uint64)
	err := s.view(ctx, name, func(lb *logBuckets) error {
		for _, id := range ids {
			idx, ok, err := lb.identities.get(id[:])
			if err != nil {
				return err
			}
			if ok {
				found[id] = idx
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// FindLeaf returns the lowest index whose leaf hash or identity is h, or an
// error wrapping storage.ErrNotFound.
func (s *Store) FindLeaf(ctx context.Context, name string, h storage.Hash) (uint64, error) {
	var index uint64
	err := s.view(ctx, name, func(lb *logBuckets) error {
		i1, ok1, err := lb.identities.get(h[:])
		if err != nil {
			return err
		}
		i2, ok2, err := lb.leaves.get(h[:])
		if err != nil {
			return err
		}
		switch {
		case !ok1 && !ok2:
			return fmt.Errorf("log %q: leaf %x: %w", name, h, storage.ErrNotFound)
		case !ok2:
			index = i1
		case !ok1:
			index = i2
		default:
			index = min(i1, i2)
		}
		return nil
	})
	return index, err
}

package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/disktiles"
)

func scanCheckpoint(row pgx.Row) (storage.Checkpoint, error) {
	var (
		c    storage.Checkpoint
		size int64
		root []byte
	)
	if err := row.Scan(&size, &root, &c.Note); err != nil {
		return c, err
	}
	c.Size = uint64(size)
	var err error
	c.Root, err = toHash("checkpoint root hash", root)
	return c, err
}

// LatestCheckpoint returns the checkpoint of the current tree head.
func (s *Store) LatestCheckpoint(ctx context.Context, log string) (storage.Checkpoint, error) {
	id, err := s.logID(ctx, log)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	c, err := scanCheckpoint(s.pool.QueryRow(ctx, `
SELECT c.size, c.root_hash, c.note
  FROM logs l JOIN checkpoints c ON c.log_id = l.id AND c.size = l.tree_size
 WHERE l.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		// CreateLog and Integrate store a checkpoint with every head.
		return c, fmt.Errorf("postgres: %w: log %q has no checkpoint for its tree head", storage.ErrNotFound, log)
	}
	if err != nil {
		return c, s.fail(ctx, err, "latest checkpoint of %q", log)
	}
	return c, nil
}

// CheckpointAt returns the checkpoint signed at size, or storage.ErrNotFound.
func (s *Store) CheckpointAt(ctx context.Context, log string, size uint64) (storage.Checkpoint, error) {
	sz, err := bigint("tree size", size)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	id, err := s.logID(ctx, log)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	c, err := scanCheckpoint(s.pool.QueryRow(ctx,
		`SELECT size, root_hash, note FROM checkpoints WHERE log_id = $1 AND size = $2`, id, sz))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("postgres: %w: log %q has no checkpoint at size %d", storage.ErrNotFound, log, size)
	}
	if err != nil {
		return c, s.fail(ctx, err, "checkpoint of %q at size %d", log, size)
	}
	return c, nil
}

// ListCheckpoints returns up to limit checkpoints with size > after, in
// increasing size order. A limit of 0 returns none; a negative one is
// storage.ErrInvalid.
func (s *Store) ListCheckpoints(ctx context.Context, log string, after uint64, limit int) ([]storage.Checkpoint, error) {
	a, err := bigint("tree size", after)
	if err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("postgres: %w: negative limit %d", storage.ErrInvalid, limit)
	}
	id, err := s.logID(ctx, log)
	if err != nil {
		return nil, err
	}
	cs := []storage.Checkpoint{}
	if limit == 0 {
		return cs, nil
	}
	rows, err := s.pool.Query(ctx, `
SELECT size, root_hash, note FROM checkpoints
 WHERE log_id = $1 AND size > $2 ORDER BY size LIMIT $3`, id, a, limit)
	if err != nil {
		return nil, s.fail(ctx, err, "list checkpoints of %q", log)
	}
	for rows.Next() {
		c, err := scanCheckpoint(rows)
		if err != nil {
			rows.Close()
			return nil, s.fail(ctx, err, "list checkpoints of %q", log)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, err, "list checkpoints of %q", log)
	}
	return cs, nil
}

// ReadTiles reads all the requested hash tiles in one query, which it may
// share with concurrent calls (see tileReads). A tile stored narrower than
// requested is missing: storage.ErrNotFound.
func (s *Store) ReadTiles(ctx context.Context, log string, tiles []tile.Tile) ([][]byte, error) {
	hs, err := s.readHashes(ctx, log, len(tiles), func(i int) (tile.Tile, int, int) { return tiles[i], 0, tile.Width })
	if err != nil {
		return nil, err
	}
	for i, t := range tiles {
		if h := hs[i]; len(h) < t.Width*tile.HashSize {
			return nil, fmt.Errorf("postgres: %w: log %q has tile %s only %d hashes wide", storage.ErrNotFound, log, t.Path(), len(h)/tile.HashSize)
		}
	}
	return hs, nil
}

// ReadTileSlices reads hashes [From, To) of each tile as ReadTiles reads
// whole tiles. A large tile is stored out of line (TOAST) uncompressed, so
// PostgreSQL fetches only the chunks that hold the slice: 1 KiB of 32 hashes
// is one or two 2 KiB chunks of a full tile's five.
func (s *Store) ReadTileSlices(ctx context.Context, log string, slices []tree.TileSlice) ([][]byte, error) {
	for i, sl := range slices {
		if !sl.InRange() {
			return nil, fmt.Errorf("postgres: %w: slice %d: hashes %d..%d of tile %s, want 0 <= from < to <= width",
				storage.ErrInvalid, i, sl.From, sl.To, sl.Tile.Path())
		}
	}
	hs, err := s.readHashes(ctx, log, len(slices), func(i int) (tile.Tile, int, int) {
		return slices[i].Tile, slices[i].From, slices[i].To
	})
	if err != nil {
		return nil, err
	}
	for i, sl := range slices {
		if len(hs[i]) != (sl.To-sl.From)*tile.HashSize {
			return nil, fmt.Errorf("postgres: %w: log %q has tile %s only %d hashes wide, want %d",
				storage.ErrNotFound, log, sl.Tile.Path(), sl.From+len(hs[i])/tile.HashSize, sl.To)
		}
	}
	return hs, nil
}

// readHashes reads hashes [from, to) of n hash tiles, each named by at(i):
// from the store's tile file where it holds the (full) tile, else with
// tileReads, each at most to-from hashes wide, fewer if less is stored. A
// tile not stored at all is storage.ErrNotFound. A full tile read whole from
// the database is added to the tile file.
func (s *Store) readHashes(ctx context.Context, log string, n int, at func(i int) (t tile.Tile, from, to int)) ([][]byte, error) {
	tiles, from, to := make([]tile.Tile, n), make([]int, n), make([]int, n)
	for i := range n {
		t, f, e := at(i)
		if t.Level < 0 || t.Level > tile.MaxLevel {
			return nil, fmt.Errorf("postgres: %w: tile %d has level %d, want 0..%d (hash tiles only)", storage.ErrInvalid, i, t.Level, tile.MaxLevel)
		}
		if t.Width < 1 || t.Width > tile.Width {
			return nil, fmt.Errorf("postgres: %w: tile %d has width %d, want 1..%d", storage.ErrInvalid, i, t.Width, tile.Width)
		}
		if _, err := bigint("tile index", t.Index); err != nil {
			return nil, err
		}
		tiles[i], from[i], to[i] = t, f, e
	}
	id, err := s.logID(ctx, log)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	r := &tileRead{log: log, id: id}
	var read []int // the tiles r reads, by index in out
	for i, t := range tiles {
		if s.disk != nil && t.Width == tile.Width {
			if out[i] = s.disk.Read(log, t.Level, t.Index, from[i], to[i]); out[i] != nil {
				continue
			}
		}
		read = append(read, i)
		r.levels = append(r.levels, int16(t.Level))
		r.idxs = append(r.idxs, int64(t.Index))
		r.from, r.to = append(r.from, int16(from[i])), append(r.to, int16(to[i]))
	}
	if len(read) > 0 {
		if err := s.readTiles(ctx, r); err != nil {
			return nil, err
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	for j, i := range read {
		h, t := r.hashes[j], tiles[i]
		if h == nil {
			return nil, fmt.Errorf("postgres: %w: log %q has no tile %s", storage.ErrNotFound, log, t.Path())
		}
		out[i] = h
		if s.disk != nil && t.Width == tile.Width && from[i] == 0 && len(h) == disktiles.TileBytes {
			s.keepTile(log, t, h)
		}
	}
	return out, nil
}

// keepTile adds a full tile read from the database to the tile file. The
// file failing is not the read's failure: it is logged once, and reads go
// to the database.
func (s *Store) keepTile(log string, t tile.Tile, hashes []byte) {
	err := s.disk.Write(log, t.Level, t.Index, hashes)
	if err != nil && s.diskWarned.CompareAndSwap(false, true) {
		if errors.Is(err, disktiles.ErrFull) {
			s.log.Info("tile file full: further full tiles are read from PostgreSQL only", "tiles", s.disk.Tiles())
		} else {
			s.log.Warn("tile file failed: tiles are read from PostgreSQL only", "err", err)
		}
	}
}

// ReadEntries returns entries [start, end) in order, with their leaf hashes
// computed from their data, or storage.ErrNotFound if any is absent.
func (s *Store) ReadEntries(ctx context.Context, log string, start, end uint64) ([]storage.Entry, error) {
	if start > end {
		return nil, fmt.Errorf("postgres: %w: entry range [%d, %d) runs backwards", storage.ErrInvalid, start, end)
	}
	lo, err := bigint("entry index", start)
	if err != nil {
		return nil, err
	}
	hi, err := bigint("entry index", end)
	if err != nil {
		return nil, err
	}
	id, err := s.logID(ctx, log)
	if err != nil || start == end {
		return []storage.Entry{}, err
	}
	rows, err := s.pool.Query(ctx, `
SELECT idx, identity, data FROM entries
 WHERE log_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx`, id, lo, hi)
	if err != nil {
		return nil, s.fail(ctx, err, "read entries of %q", log)
	}
	es := make([]storage.Entry, 0, min(end-start, 4096))
	for rows.Next() {
		var (
			idx      int64
			identity []byte
			e        storage.Entry
		)
		if err := rows.Scan(&idx, &identity, &e.Data); err != nil {
			rows.Close()
			return nil, s.fail(ctx, err, "read entries of %q", log)
		}
		e.Index = uint64(idx)
		if e.Index != start+uint64(len(es)) {
			rows.Close()
			return nil, fmt.Errorf("postgres: %w: log %q has no entry %d", storage.ErrNotFound, log, start+uint64(len(es)))
		}
		if e.Identity, err = toHash("entry identity", identity); err != nil {
			rows.Close()
			return nil, err
		}
		e.LeafHash = tree.LeafHash(e.Data)
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, err, "read entries of %q", log)
	}
	if uint64(len(es)) != end-start {
		return nil, fmt.Errorf("postgres: %w: log %q has no entry %d", storage.ErrNotFound, log, start+uint64(len(es)))
	}
	return es, nil
}

// FindLeaf returns the lowest index whose leaf hash or identity is h, or
// storage.ErrNotFound. An entry whose leaf_hash column is NULL has the leaf
// hash of its identity, so the two indexes cover every case.
func (s *Store) FindLeaf(ctx context.Context, log string, h storage.Hash) (uint64, error) {
	id, err := s.logID(ctx, log)
	if err != nil {
		return 0, err
	}
	var idx *int64
	err = s.pool.QueryRow(ctx, `
SELECT least(
    (SELECT min(idx) FROM entries WHERE log_id = $1 AND identity = $2),
    (SELECT min(idx) FROM entries WHERE log_id = $1 AND leaf_hash = $2))`, id, h[:]).Scan(&idx)
	if err != nil {
		return 0, s.fail(ctx, err, "find leaf in %q", log)
	}
	if idx == nil {
		return 0, fmt.Errorf("postgres: %w: log %q has no leaf with hash or identity %x", storage.ErrNotFound, log, h)
	}
	return uint64(*idx), nil
}

// AddCosignatures stores cosignatures on the checkpoint at size, replacing
// any from the same KeyID, in one statement.
func (s *Store) AddCosignatures(ctx context.Context, log string, size uint64, cs []storage.Cosignature) error {
	sz, err := bigint("tree size", size)
	if err != nil {
		return err
	}
	// The last cosignature of a KeyID wins; one statement cannot update a
	// row twice.
	pos := make(map[string]int, len(cs))
	var keys []string
	var sigs [][]byte
	for _, c := range cs {
		if c.KeyID == "" {
			return fmt.Errorf("postgres: %w: cosignature with an empty key ID", storage.ErrInvalid)
		}
		if i, ok := pos[c.KeyID]; ok {
			sigs[i] = nonNil(c.Signature)
			continue
		}
		pos[c.KeyID] = len(keys)
		keys = append(keys, c.KeyID)
		sigs = append(sigs, nonNil(c.Signature))
	}
	id, err := s.logID(ctx, log)
	if err != nil {
		return err
	}
	// The CTE reads the checkpoint so that an empty cs is still checked.
	var exists bool
	err = s.pool.QueryRow(ctx, `
WITH c AS (SELECT 1 FROM checkpoints WHERE log_id = $1 AND size = $2),
ins AS (
    INSERT INTO cosignatures (log_id, size, key_id, signature)
    SELECT $1, $2, k, sig FROM unnest($3::text[], $4::bytea[]) AS u (k, sig)
     WHERE EXISTS (SELECT 1 FROM c)
    ON CONFLICT (log_id, size, key_id) DO UPDATE SET signature = excluded.signature
)
SELECT EXISTS (SELECT 1 FROM c)`, id, sz, keys, sigs).Scan(&exists)
	if err != nil {
		return s.fail(ctx, err, "add cosignatures to %q at size %d", log, size)
	}
	if !exists {
		return fmt.Errorf("postgres: %w: log %q has no checkpoint at size %d", storage.ErrNotFound, log, size)
	}
	return nil
}

// CosignaturesAt returns the cosignatures stored for size, ordered by KeyID
// (none: empty).
func (s *Store) CosignaturesAt(ctx context.Context, log string, size uint64) ([]storage.Cosignature, error) {
	sz, err := bigint("tree size", size)
	if err != nil {
		return nil, err
	}
	id, err := s.logID(ctx, log)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
SELECT key_id, signature FROM cosignatures
 WHERE log_id = $1 AND size = $2 ORDER BY key_id COLLATE "C"`, id, sz)
	if err != nil {
		return nil, s.fail(ctx, err, "cosignatures of %q at size %d", log, size)
	}
	cs := []storage.Cosignature{}
	for rows.Next() {
		var c storage.Cosignature
		if err := rows.Scan(&c.KeyID, &c.Signature); err != nil {
			rows.Close()
			return nil, s.fail(ctx, err, "cosignatures of %q at size %d", log, size)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, err, "cosignatures of %q at size %d", log, size)
	}
	return cs, nil
}

package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// Integrate writes a batch in one transaction of three or four round trips:
//
//  1. BEGIN and tlog_advance_head, the compare-and-swap of the tree head
//     (its row lock holds off any other writer of the log until commit);
//  2. COPY of the entries;
//  3. the tile upsert, the checkpoint and COMMIT.
//
// Beside them, a goroutine chooses the look-ups of the batch's identities
// in partitions it does not write (identities.go: each full partition's
// filter is asked about every identity, CPU time that grows with the log)
// and runs them on a connection of its own, so that neither is on the
// transaction's path; a duplicate they find rolls the batch back before
// COMMIT. The partitions they read hold only committed entries, below the
// head the transaction advances from, so the look-ups see what they would
// see inside it. Measured at 10M entries (2026-11-26, eighth session), the
// look-ups inside the transaction cost ~10% of the append rate. If no
// connection is free by the time COPY ends (a pool of one: the transaction
// holds it), the look-ups go in round trip 3 instead, and COMMIT waits for
// their answers in a fourth.
//
// COPY was measured against one statement that does it all, inserting the
// entries from arrays (INSERT ... SELECT FROM unnest, one round trip; see
// BenchmarkIntegrate): with batches of 1,000 entries of 256 bytes the two
// are level (80,000-110,000 entries/s each on 2 cores), with 4,096 COPY is
// about 1.5 times faster (about 150,000 against 100,000 entries/s), which
// outweighs its two extra round trips.
const (
	advanceHeadSQL = `SELECT tlog_advance_head($1, $2, $3, $4, $5)`
	upsertTilesSQL = `
INSERT INTO tiles AS t (log_id, level, idx, hashes)
SELECT $1, n.level, n.idx, n.hashes
  FROM unnest($2::smallint[], $3::bigint[], $4::bytea[]) AS n (level, idx, hashes)
ON CONFLICT (log_id, level, idx) DO UPDATE SET hashes = excluded.hashes
 WHERE t.hashes <> excluded.hashes`
	insertCheckpointSQL = `INSERT INTO checkpoints (log_id, size, root_hash, note) VALUES ($1, $2, $3, $4)`
	// An empty batch re-signs the head: its note replaces the stored one.
	resignCheckpointSQL = `UPDATE checkpoints SET note = $4 WHERE log_id = $1 AND size = $2 AND root_hash = $3`
)

// entryColumns are the columns COPY fills, in the order of batchRows.
var entryColumns = []string{"log_id", "idx", "identity", "leaf_hash", "data"}

// Integrate stores b atomically and durably (synchronous_commit is left at
// the server's setting, on by default). See storage.Integrator.
//
// If the connection is lost while COMMIT is in flight, the batch may or may
// not have been committed, and the error cannot say which: read the latest
// checkpoint to find out (a retry of the same batch fails with
// storage.ErrConflict if the first attempt committed). A cancelled context
// is safe: the server is asked to cancel and its answer awaited.
func (s *Store) Integrate(ctx context.Context, log string, b *storage.Batch) error {
	w, err := newBatchWrite(b)
	if err != nil {
		return err
	}
	id, err := s.logID(ctx, log)
	if err != nil {
		return err
	}
	var fs [][]byte
	if len(w.data) > 0 {
		if err := s.addPartitions(ctx, w.size); err != nil {
			return err
		}
		// Reading missing filters takes a connection of the pool: here, not
		// while this batch holds one, so that a pool of one cannot deadlock.
		if fs, err = s.filters(ctx, id, w.prevSize/s.parts.size); err != nil {
			return s.fail(ctx, err, "integrate into %q", log)
		}
	}
	look := s.startLookups(ctx, id, w, fs)
	// Whatever happens, the look-ups are done before Integrate returns.
	defer look.result()
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.fail(ctx, err, "integrate into %q", log)
	}
	defer c.Release() // destroys the connection if a transaction is still open
	// A transaction that fails early does not wait for the look-ups to find
	// a connection (with a pool of one, the one it releases).
	defer look.stop()
	err = w.run(ctx, c.Conn(), id, look.result)
	if err == nil {
		if len(w.data) > 0 {
			s.grow(id, w)
		}
		return nil
	}
	if c.Conn().PgConn().TxStatus() != 'I' && !c.Conn().IsClosed() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelWait)
		c.Conn().Exec(rctx, "ROLLBACK") // on failure, Release drops the connection
		cancel()
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	code, constraint := pgCode(err)
	var dup *duplicateError
	switch {
	case errors.As(err, &dup):
		return fmt.Errorf("postgres: integrate into %q: %w: %v", log, storage.ErrDuplicate, dup)
	case code == codeConflict:
		return fmt.Errorf("postgres: integrate into %q: %w: %v", log, storage.ErrConflict, err)
	case code == codeLogNotFound:
		return fmt.Errorf("postgres: integrate: %w: %q", storage.ErrLogNotFound, log)
	case code == codeTileShrinks:
		return fmt.Errorf("postgres: integrate into %q: %w: %v", log, storage.ErrInvalid, err)
	case code == codeUniqueViolation && strings.HasPrefix(constraint, "entries_p") && strings.HasSuffix(constraint, "_identity"):
		return fmt.Errorf("postgres: integrate into %q: %w: an entry's identity is already in the log (%v)", log, storage.ErrDuplicate, err)
	}
	return s.fail(ctx, err, "integrate into %q", log)
}

// batchWrite is a validated batch in the shapes the statements take.
type batchWrite struct {
	prevSize, size       int64
	prevRoot, root, note []byte

	identities, leafHashes, data [][]byte // leafHashes[i] nil (NULL) if equal to the identity

	levels []int16
	idxs   []int64
	hashes [][]byte

	keyHashes []uint64 // bloom.Hash of each identity, set by batchProbes
}

// run executes the transaction; on error the caller rolls back. lookups
// waits for the look-ups of identities the partitions' indexes do not see,
// run meanwhile beside the transaction, and returns those it must still run
// itself, or their error (a *duplicateError for a duplicate).
func (w *batchWrite) run(ctx context.Context, c *pgx.Conn, id int64, lookups func() ([]probe, error)) error {
	begin := &pgx.Batch{}
	begin.Queue("BEGIN")
	begin.Queue(advanceHeadSQL, id, w.prevSize, w.prevRoot, w.size, w.root)
	if err := c.SendBatch(ctx, begin).Close(); err != nil {
		return err
	}
	if len(w.data) > 0 {
		n, err := c.CopyFrom(ctx, pgx.Identifier{"entries"}, entryColumns, &batchRows{w: w, id: id, i: -1})
		if err != nil {
			return err
		}
		if n != int64(len(w.data)) {
			return fmt.Errorf("copied %d entries, want %d", n, len(w.data))
		}
	}
	ps, err := lookups()
	if err != nil {
		return err
	}
	end := &pgx.Batch{}
	queueProbes(end, id, ps)
	if len(w.levels) > 0 {
		end.Queue(upsertTilesSQL, id, w.levels, w.idxs, w.hashes)
	}
	if w.size == w.prevSize {
		// Every tree head has its checkpoint (CreateLog, Integrate).
		end.Queue(resignCheckpointSQL, id, w.size, w.root, w.note)
	} else {
		end.Queue(insertCheckpointSQL, id, w.size, w.root, w.note)
	}
	if len(ps) == 0 {
		end.Queue("COMMIT")
	}
	if err := checkProbes(c.SendBatch(ctx, end), len(ps)); err != nil || len(ps) == 0 {
		return err
	}
	_, err = c.Exec(ctx, "COMMIT")
	return err
}

// batchRows feeds the entries to COPY.
type batchRows struct {
	w   *batchWrite
	id  int64
	i   int
	row [5]any
}

func (r *batchRows) Next() bool { r.i++; return r.i < len(r.w.data) }
func (r *batchRows) Err() error { return nil }
func (r *batchRows) Values() ([]any, error) {
	r.row = [5]any{r.id, r.w.prevSize + int64(r.i), r.w.identities[r.i], r.w.leafHashes[r.i], r.w.data[r.i]}
	return r.row[:], nil
}

// newBatchWrite validates b. Every failure wraps storage.ErrInvalid.
func newBatchWrite(b *storage.Batch) (*batchWrite, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("postgres: %w: batch: %s", storage.ErrInvalid, fmt.Sprintf(format, args...))
	}
	if b == nil {
		return nil, invalid("nil")
	}
	w := &batchWrite{
		prevRoot: b.Prev.Root[:],
		root:     b.Checkpoint.Root[:],
		note:     nonNil(b.Checkpoint.Note),
	}
	var err error
	if w.prevSize, err = bigint("previous tree size", b.Prev.Size); err != nil {
		return nil, err
	}
	if w.size, err = bigint("checkpoint tree size", b.Checkpoint.Size); err != nil {
		return nil, err
	}
	n := uint64(len(b.Entries))
	if b.Checkpoint.Size < b.Prev.Size || b.Checkpoint.Size-b.Prev.Size != n {
		return nil, invalid("checkpoint size %d is not previous size %d + %d entries", b.Checkpoint.Size, b.Prev.Size, n)
	}
	if n == 0 && b.Checkpoint.Root != b.Prev.Root {
		return nil, invalid("no entries, but the checkpoint's root differs from the previous root")
	}

	w.identities = make([][]byte, n)
	w.leafHashes = make([][]byte, n)
	w.data = make([][]byte, n)
	seen := make(map[storage.Hash]struct{}, n)
	for i := range b.Entries {
		e := &b.Entries[i]
		if want := b.Prev.Size + uint64(i); e.Index != want {
			return nil, invalid("entry %d has index %d, want %d", i, e.Index, want)
		}
		if len(e.Data) > tile.MaxEntrySize {
			return nil, invalid("entry %d has %d bytes, more than %d", e.Index, len(e.Data), tile.MaxEntrySize)
		}
		if tree.LeafHash(e.Data) != e.LeafHash {
			return nil, invalid("entry %d: leaf hash is not the RFC 6962 leaf hash of its data", e.Index)
		}
		if _, dup := seen[e.Identity]; dup {
			return nil, invalid("entry %d repeats an identity of the same batch", e.Index)
		}
		seen[e.Identity] = struct{}{}
		w.identities[i] = e.Identity[:]
		if e.LeafHash != e.Identity {
			w.leafHashes[i] = e.LeafHash[:]
		}
		w.data[i] = nonNil(e.Data)
	}

	w.levels = make([]int16, len(b.Tiles))
	w.idxs = make([]int64, len(b.Tiles))
	w.hashes = make([][]byte, len(b.Tiles))
	tiles := make(map[tile.Tile]struct{}, len(b.Tiles))
	for i, t := range b.Tiles {
		if t.Level < 0 || t.Level > tile.MaxLevel {
			return nil, invalid("tile %d has level %d, want 0..%d (hash tiles only)", i, t.Level, tile.MaxLevel)
		}
		if t.Width < 1 || t.Width > tile.Width {
			return nil, invalid("tile %d has width %d, want 1..%d", i, t.Width, tile.Width)
		}
		if len(t.Hashes) != t.Width*tile.HashSize {
			return nil, invalid("tile %s has %d bytes, want %d", t.Path(), len(t.Hashes), t.Width*tile.HashSize)
		}
		if w.idxs[i], err = bigint("tile index", t.Index); err != nil {
			return nil, err
		}
		key := tile.Tile{Level: t.Level, Index: t.Index}
		if _, dup := tiles[key]; dup {
			return nil, invalid("tile %d/%d appears twice", t.Level, t.Index)
		}
		tiles[key] = struct{}{}
		w.levels[i] = int16(t.Level)
		w.hashes[i] = t.Hashes
	}
	return w, nil
}

package witness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// postgresSchema creates the witness's own table. The witness is a product of
// its own and does not share the log's migrations.
const postgresSchema = `
CREATE TABLE IF NOT EXISTS witness_state (
	origin     text        PRIMARY KEY,
	size       bigint      NOT NULL CHECK (size >= 0),
	root       bytea       NOT NULL CHECK (length(root) = 32),
	checkpoint bytea       NOT NULL,
	updated_at timestamptz NOT NULL
)`

// PostgresState is a State in the PostgreSQL table witness_state (origin,
// size, root, checkpoint, updated_at), which it creates if missing.
// updated_at is the timestamp of the cosignature. Several witness processes
// with the same key may share one table: updates are compare-and-swap.
type PostgresState struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
}

// OpenPostgresState connects to the database at url and creates the
// witness_state table if it does not exist. logger may be nil.
func OpenPostgresState(ctx context.Context, url string, logger *slog.Logger) (*PostgresState, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("witness state: %w", err)
	}
	// Serialize concurrent start-ups: CREATE TABLE IF NOT EXISTS is not
	// safe against itself.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tlog-witness witness_state'))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, postgresSchema)
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("witness state: creating table witness_state: %w", err)
	}
	return &PostgresState{pool: pool, logger: logger}, nil
}

// Get implements State.
func (s *PostgresState) Get(ctx context.Context, origin string) (Record, error) {
	r, found, err := getRecord(ctx, s.pool, origin, false)
	if err == nil && !found {
		err = ErrNoRecord
	}
	return r, err
}

// Update implements State. In one transaction it reads the row with SELECT
// ... FOR UPDATE, calls fn, and writes with an UPDATE guarded by the size and
// root it read (or an INSERT ... ON CONFLICT DO NOTHING for a new log); if
// the guard fails, or the transaction hits a serialization failure or
// deadlock, it starts over. The commit uses synchronous_commit = on, so it is
// durable when Update returns, whatever the server's default.
func (s *PostgresState) Update(ctx context.Context, origin string, fn func(Record, bool) (Record, error)) error {
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit TO on`); err != nil {
				return err
			}
			cur, found, err := getRecord(ctx, tx, origin, true)
			if err != nil {
				return err
			}
			next, err := fn(cur, found)
			if err != nil {
				return err
			}
			var tag pgconn.CommandTag
			if found {
				tag, err = tx.Exec(ctx, `
					UPDATE witness_state SET size = $2, root = $3, checkpoint = $4, updated_at = $5
					WHERE origin = $1 AND size = $6 AND root = $7`,
					origin, int64(next.Size), next.Root[:], next.Checkpoint, next.Time,
					int64(cur.Size), cur.Root[:])
			} else {
				tag, err = tx.Exec(ctx, `
					INSERT INTO witness_state (origin, size, root, checkpoint, updated_at)
					VALUES ($1, $2, $3, $4, $5)
					ON CONFLICT (origin) DO NOTHING`,
					origin, int64(next.Size), next.Root[:], next.Checkpoint, next.Time)
			}
			if err != nil {
				return err
			}
			if tag.RowsAffected() != 1 {
				return errRetry
			}
			return nil
		})
		if err == nil || !retryable(err) {
			return err
		}
		if attempt == maxRetries {
			return fmt.Errorf("witness state: giving up after %d attempts: %w", attempt+1, err)
		}
		s.logger.DebugContext(ctx, "witness state update retried", "origin", origin, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
}

// Close implements State.
func (s *PostgresState) Close() error {
	s.pool.Close()
	return nil
}

// retryable reports whether an Update that failed with err may run again.
func retryable(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	var pe *pgconn.PgError
	// serialization_failure, deadlock_detected
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func getRecord(ctx context.Context, q querier, origin string, lock bool) (Record, bool, error) {
	sql := `SELECT size, root, checkpoint, updated_at FROM witness_state WHERE origin = $1`
	if lock {
		sql += ` FOR UPDATE`
	}
	var (
		r    Record
		size int64
		root []byte
	)
	err := q.QueryRow(ctx, sql, origin).Scan(&size, &root, &r.Checkpoint, &r.Time)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("witness state: %w", err)
	}
	if size < 0 || len(root) != HashSize {
		return Record{}, false, errors.New("witness state: corrupt row for " + origin)
	}
	r.Size = uint64(size)
	copy(r.Root[:], root)
	return r, true, nil
}

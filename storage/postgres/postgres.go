// Package postgres is the production storage driver: it keeps any number of
// logs in one PostgreSQL database through a pgx connection pool.
//
// Open applies the schema in github.com/tlog-dev/tlog/migrations (under an
// advisory lock, so concurrent starts do not race) and refuses a database
// migrated by a newer tlog. Integrate writes a batch in one transaction that
// first compare-and-swaps the tree head (the PL/pgSQL function
// tlog_advance_head), then COPYs the entries and upserts the tiles and the
// checkpoint; the head's row lock serializes writers, so two processes that
// both extend the same head cannot both commit. A trigger refuses any update
// that would shrink a tile or change its stored hashes.
//
// Entries are range-partitioned on their index, so that appends write only
// the small identity index of the newest partition; identities stay unique
// across partitions through look-ups guided by Bloom filters of the full
// ones (identities.go).
//
// Concurrent ReadTiles calls share queries: under load, one query reads the
// tiles of many calls, of any log. With Config.TileFileBytes, full tiles read
// once are then read from a local file instead (package disktiles).
//
// Several tlogd processes may share a database: reads never take locks, and
// the compare-and-swap fences writers. Store implements storage.Elector:
// the leader of a log holds a session advisory lock on a connection of its
// own (see TryLead), and records its address in the log_leaders table.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tlog-dev/tlog/migrations"
	"github.com/tlog-dev/tlog/storage"
	"github.com/tlog-dev/tlog/storage/disktiles"
)

var _ storage.Store = (*Store)(nil)

// cancelWait is how long a call whose context is cancelled waits for the
// server to confirm the cancellation before it drops the connection.
const cancelWait = 5 * time.Second

// Config tunes Open. The zero Config is valid.
type Config struct {
	// MaxConns is the largest number of connections the pool opens. Zero
	// means the pool_max_conns parameter of the URL, or pgxpool's default
	// (the greater of 4 and the number of CPUs).
	MaxConns int32
	// Logger receives start-up notices such as applied migrations. Nil
	// discards them.
	Logger *slog.Logger
	// NoMigrate opens the database without changing it, for tools that
	// only read (tlogd fsck): Open fails if the schema is not exactly the
	// newest version this binary knows, instead of migrating it.
	NoMigrate bool
	// TileFileDir and TileFileBytes keep up to TileFileBytes of full hash
	// tiles, once read, in an unlinked file in the directory TileFileDir
	// (see package disktiles), and read them from there instead of the
	// database: under random inclusion proofs over a log too large for any
	// memory cache, nearly every proof would otherwise query one level-0
	// tile. Zero TileFileBytes keeps no file; if the file cannot be
	// created, Open logs a warning and keeps none.
	TileFileDir   string
	TileFileBytes int64
}

// Store is a storage.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	mu  sync.RWMutex
	ids map[string]int64 // log name -> logs.id; logs are never deleted

	tiles *tileReads  // coalesces ReadTiles calls
	parts *partitions // of the entries table; identity filters

	disk       *disktiles.Cache // full tiles read, or nil
	diskWarned atomic.Bool      // that disk failed or filled up

	asideLookups atomic.Int64 // batches whose look-ups ran beside their transaction, for tests
}

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string, as pgx accepts), migrates its schema to the newest
// version this binary knows, and returns a Store. It returns an error
// wrapping storage.ErrSchemaTooNew if the database was migrated by a newer
// tlog.
func Open(ctx context.Context, url string, cfg Config) (*Store, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse database URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	// pgx's default answer to a cancelled context is to drop the connection,
	// leaving the statement running on the server: an Integrate reported as
	// failed could still commit later. Ask the server to cancel it instead,
	// and wait for its answer, so that an error means nothing was written
	// (barring a cancel that races the commit itself, or a lost connection).
	pcfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelWait}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open pool: %w", err)
	}
	ms, err := migrations.All()
	switch {
	case err == nil && cfg.NoMigrate:
		err = checkSchema(ctx, pool, len(ms))
	case err == nil:
		err = migrate(ctx, pool, ms, logger)
	}
	var parts *partitions
	if err == nil {
		parts, err = newPartitions(ctx, pool)
	}
	var disk *disktiles.Cache
	if err == nil && cfg.TileFileBytes > 0 {
		// The file only spares queries: without it, tiles come from the
		// database as they would with TileFileBytes zero.
		if d, derr := disktiles.Open(cfg.TileFileDir, cfg.TileFileBytes); derr != nil {
			logger.Warn("no tile file: every tile is read from PostgreSQL", "err", derr)
		} else {
			disk = d
			logger.Info("keeping full tiles read in an unlinked file", "dir", cfg.TileFileDir, "max_mib", cfg.TileFileBytes>>20)
		}
	}
	if err != nil {
		pool.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	return &Store{pool: pool, log: logger, ids: make(map[string]int64), tiles: newTileReads(), parts: parts, disk: disk}, nil
}

// Close fails the tile reads waiting to share a query, cancels those that
// share one and the building of identity filters, and closes the connection
// pool, waiting for connections in use to be released.
func (s *Store) Close() error {
	s.closeTileReads()
	s.parts.close()
	s.pool.Close()
	if s.disk != nil {
		s.disk.Close()
	}
	return nil
}

// logID returns the id of the named log, from the cache or the database.
func (s *Store) logID(ctx context.Context, name string) (int64, error) {
	s.mu.RLock()
	id, ok := s.ids[name]
	s.mu.RUnlock()
	if ok {
		return id, nil
	}
	err := s.pool.QueryRow(ctx, `SELECT id FROM logs WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("postgres: %w: %q", storage.ErrLogNotFound, name)
	}
	if err != nil {
		return 0, s.fail(ctx, err, "look up log %q", name)
	}
	s.remember(name, id)
	return id, nil
}

func (s *Store) remember(name string, id int64) {
	s.mu.Lock()
	s.ids[name] = id
	s.mu.Unlock()
}

// fail wraps a database error with what was being done. A cancelled or
// expired context is returned as is: pgx may report it as a network timeout
// or a server-side cancellation.
func (s *Store) fail(ctx context.Context, err error, format string, args ...any) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return fmt.Errorf("postgres: %s: %w", fmt.Sprintf(format, args...), err)
}

// pgCode returns the SQLSTATE and constraint of a server error, if err is one.
func pgCode(err error) (code, constraint string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.ConstraintName
	}
	return "", ""
}

// SQLSTATEs raised by the schema's functions (0001_init.sql).
const (
	codeConflict    = "TL001" // tlog_advance_head: the head is not the expected one
	codeLogNotFound = "TL002" // tlog_advance_head: no such log
	codeTileShrinks = "TL003" // trigger tiles_grow_only

	codeUniqueViolation = "23505"
)

// bigint converts a size or index to PostgreSQL's bigint, or fails with
// storage.ErrInvalid.
func bigint(what string, v uint64) (int64, error) {
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("postgres: %w: %s %d does not fit in a bigint", storage.ErrInvalid, what, v)
	}
	return int64(v), nil
}

// toHash copies a 32-byte column into a Hash.
func toHash(what string, b []byte) (storage.Hash, error) {
	var h storage.Hash
	if len(b) != len(h) {
		return h, fmt.Errorf("postgres: stored %s has %d bytes, want %d", what, len(b), len(h))
	}
	copy(h[:], b)
	return h, nil
}

// nonNil returns b, or an empty slice if b is nil: pgx sends a nil slice as
// NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

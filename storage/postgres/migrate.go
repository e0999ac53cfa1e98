package postgres

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tlog-dev/tlog/migrations"
	"github.com/tlog-dev/tlog/storage"
)

// migrationLock is the pg_advisory_xact_lock key that serializes schema
// migrations among processes starting at once ("tlogmigr" in ASCII).
const migrationLock int64 = 0x746c6f676d696772

// createVersionTable creates the one-row table that records the schema version.
const createVersionTable = `
CREATE TABLE schema_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL CHECK (version >= 0)
);
INSERT INTO schema_version (version) VALUES (0);`

// migrate brings the schema up to the newest of ms, one migration per
// transaction.
func migrate(ctx context.Context, pool *pgxpool.Pool, ms []migrations.Migration, log *slog.Logger) error {
	for {
		done, err := migrateOne(ctx, pool, ms, log)
		if done || err != nil {
			return err
		}
	}
}

// migrateOne applies the next missing migration, if any, in one transaction
// that holds the migration lock, re-reads the version and bumps it. It
// reports done when the schema is current.
func migrateOne(ctx context.Context, pool *pgxpool.Pool, ms []migrations.Migration, log *slog.Logger) (done bool, err error) {
	latest := len(ms)
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("postgres: migrate: %w", err)
	}
	defer tx.Rollback(ctx) // no-op after Commit

	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return false, fmt.Errorf("postgres: migrate: take the migration lock: %w", err)
	}
	// Only create the table when it is missing: a role without CREATE on
	// the schema can still open an up-to-date database.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return false, fmt.Errorf("postgres: migrate: look for schema_version: %w", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, createVersionTable); err != nil {
			return false, fmt.Errorf("postgres: migrate: create schema_version: %w", err)
		}
	}
	var version int
	if err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&version); err != nil {
		return false, fmt.Errorf("postgres: migrate: read schema_version: %w", err)
	}
	switch {
	case version > latest:
		return false, fmt.Errorf("postgres: %w: the database has schema version %d, this binary knows up to %d",
			storage.ErrSchemaTooNew, version, latest)
	case version == latest:
		return true, tx.Commit(ctx)
	}
	m := ms[version] // versions run 1..latest, checked by migrations.All
	// No arguments: pgx uses the simple protocol, which runs the whole file.
	if _, err := tx.Exec(ctx, m.SQL); err != nil {
		return false, fmt.Errorf("postgres: migrate: apply %s: %w", m.Name, err)
	}
	tag, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1 WHERE version = $2`, m.Version, version)
	if err != nil {
		return false, fmt.Errorf("postgres: migrate: record version %d: %w", m.Version, err)
	}
	if tag.RowsAffected() != 1 {
		return false, fmt.Errorf("postgres: migrate: schema_version changed under the migration lock")
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("postgres: migrate: commit %s: %w", m.Name, err)
	}
	log.InfoContext(ctx, "applied schema migration", slog.String("migration", m.Name), slog.Int("version", m.Version))
	return m.Version == latest, nil
}

// checkSchema fails unless the database's schema is at version latest,
// changing nothing.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, latest int) error {
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("postgres: look for schema_version: %w", err)
	}
	if !exists {
		return fmt.Errorf("postgres: the database has no tlog schema (no schema_version table)")
	}
	var version int
	if err := pool.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&version); err != nil {
		return fmt.Errorf("postgres: read schema_version: %w", err)
	}
	switch {
	case version > latest:
		return fmt.Errorf("postgres: %w: the database has schema version %d, this binary knows up to %d",
			storage.ErrSchemaTooNew, version, latest)
	case version < latest:
		return fmt.Errorf("postgres: the database has schema version %d, older than this binary's %d: start tlogd once to migrate it (this command does not change the database)",
			version, latest)
	}
	return nil
}

// SchemaVersion returns the schema version recorded in the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if err != nil {
		return 0, s.fail(ctx, err, "read schema version")
	}
	return v, nil
}

package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tlog-dev/tlog/storage"
)

// CreateLog creates the log and stores its initial checkpoint, in one
// statement. A zero log.CreatedAt means now.
func (s *Store) CreateLog(ctx context.Context, log storage.Log, initial storage.Checkpoint) error {
	if log.Name == "" {
		return fmt.Errorf("postgres: %w: empty log name", storage.ErrInvalid)
	}
	size, err := bigint("initial tree size", initial.Size)
	if err != nil {
		return err
	}
	var created *time.Time
	if !log.CreatedAt.IsZero() {
		created = &log.CreatedAt
	}
	var id int64
	err = s.pool.QueryRow(ctx, `
WITH l AS (
    INSERT INTO logs (name, origin, verifier_key, created_at, tree_size, root_hash, witness_policy)
    VALUES ($1, $2, $3, COALESCE($4, now()), $5, $6, $8)
    RETURNING id
)
INSERT INTO checkpoints (log_id, size, root_hash, note)
SELECT id, $5, $6, $7 FROM l
RETURNING log_id`,
		log.Name, log.Origin, log.VerifierKey, created, size, initial.Root[:], nonNil(initial.Note), log.WitnessPolicy).Scan(&id)
	if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "logs_name_key" {
		return fmt.Errorf("postgres: %w: %q", storage.ErrLogExists, log.Name)
	}
	if err != nil {
		return s.fail(ctx, err, "create log %q", log.Name)
	}
	s.remember(log.Name, id)
	return nil
}

const selectLog = `SELECT id, name, origin, verifier_key, created_at, witness_policy FROM logs`

func scanLog(row pgx.Row) (int64, storage.Log, error) {
	var (
		id int64
		l  storage.Log
	)
	err := row.Scan(&id, &l.Name, &l.Origin, &l.VerifierKey, &l.CreatedAt, &l.WitnessPolicy)
	l.CreatedAt = l.CreatedAt.UTC()
	return id, l, err
}

// GetLog returns storage.ErrLogNotFound if there is no such log.
func (s *Store) GetLog(ctx context.Context, name string) (storage.Log, error) {
	id, l, err := scanLog(s.pool.QueryRow(ctx, selectLog+` WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Log{}, fmt.Errorf("postgres: %w: %q", storage.ErrLogNotFound, name)
	}
	if err != nil {
		return storage.Log{}, s.fail(ctx, err, "get log %q", name)
	}
	s.remember(name, id)
	return l, nil
}

// ListLogs returns every log ordered by name, byte by byte.
func (s *Store) ListLogs(ctx context.Context) ([]storage.Log, error) {
	rows, err := s.pool.Query(ctx, selectLog+` ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, s.fail(ctx, err, "list logs")
	}
	logs := []storage.Log{}
	for rows.Next() {
		_, l, err := scanLog(rows)
		if err != nil {
			rows.Close()
			return nil, s.fail(ctx, err, "list logs")
		}
		logs = append(logs, l)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, err, "list logs")
	}
	return logs, nil
}

// SetWitnessPolicy replaces the log's witness policy, or returns
// storage.ErrLogNotFound.
func (s *Store) SetWitnessPolicy(ctx context.Context, log, policy string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE logs SET witness_policy = $2 WHERE name = $1`, log, policy)
	if err != nil {
		return s.fail(ctx, err, "set witness policy of %q", log)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %w: %q", storage.ErrLogNotFound, log)
	}
	return nil
}

package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// baselineResult is how fast PostgreSQL ingests rows shaped like tlog's
// entries by plain COPY, with a durable commit per batch.
type baselineResult struct {
	RowsPerSec  float64           `json:"rows_per_sec"`
	Connections int               `json:"connections"`
	Batch       int               `json:"batch"`
	DurationSec float64           `json:"duration_s"`
	CommitMs    latencyJSON       `json:"commit_latency_ms"`
	Errors      uint64            `json:"errors"`
	ErrorKinds  map[string]uint64 `json:"errors_by_kind,omitempty"`
	// Ratio is the run's entries/s divided by RowsPerSec: the headline
	// figure, steadier than absolute numbers on a shared machine.
	Ratio float64 `json:"ratio"`
}

// baselineConnections is how many COPY connections stand for concurrency
// callers: one per 16, at least 1 and at most 4.
func baselineConnections(concurrency int) int { return min(max(concurrency/16, 1), 4) }

// runBaseline creates a table shaped like tlog's entries table (see
// migrations/0001_init.sql), COPYs random rows into it in transactions of
// batch rows from conns connections for warmup+duration, measures the rows
// committed during duration, and drops the table.
func runBaseline(ctx context.Context, url string, conns, batch, size int, warmup, duration time.Duration, progress func(string)) (*baselineResult, error) {
	var suffix [4]byte
	crand.Read(suffix[:])
	table := "tlog_bench_copy_" + hex.EncodeToString(suffix[:])

	pgConns := make([]*pgx.Conn, conns)
	defer func() {
		for _, c := range pgConns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	for i := range pgConns {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, fmt.Errorf("--baseline-copy: %w", err)
		}
		pgConns[i] = c
	}
	ident := pgx.Identifier{table}.Sanitize()
	for _, q := range []string{
		`CREATE TABLE ` + ident + ` (
			log_id   bigint NOT NULL,
			idx      bigint NOT NULL,
			identity bytea  NOT NULL,
			data     bytea  NOT NULL,
			PRIMARY KEY (log_id, idx))`,
		`ALTER TABLE ` + ident + ` ALTER COLUMN identity SET STORAGE PLAIN`,
		`CREATE UNIQUE INDEX ON ` + ident + ` (log_id, identity) INCLUDE (idx)`,
	} {
		if _, err := pgConns[0].Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("--baseline-copy: creating table %s: %w", table, err)
		}
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pgConns[0].Exec(dctx, `DROP TABLE IF EXISTS `+ident)
	}()

	var nextIdx atomic.Int64
	sources := make([]*copyRows, conns)
	r := &runner{
		Name:        "baseline COPY",
		Unit:        "rows",
		Concurrency: conns,
		Warmup:      warmup,
		Duration:    duration,
		Progress:    progress,
		Op: func(ctx context.Context, w int) (int, error) {
			src := sources[w]
			if src == nil {
				src = newCopyRows(batch, size)
				sources[w] = src
			}
			src.reset(nextIdx.Add(int64(batch)) - int64(batch))
			tx, err := pgConns[w].Begin(ctx)
			if err != nil {
				return 0, err
			}
			defer tx.Rollback(context.Background())
			n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, []string{"log_id", "idx", "identity", "data"}, src)
			if err != nil {
				return 0, err
			}
			if err := tx.Commit(ctx); err != nil {
				return 0, err
			}
			return int(n), nil
		},
	}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	kinds, total := r.errs.snapshot()
	res := &baselineResult{
		RowsPerSec:  round1(float64(r.units.Load()) / duration.Seconds()),
		Connections: conns,
		Batch:       batch,
		DurationSec: duration.Seconds(),
		CommitMs:    latencyOf(&r.hist),
		Errors:      total,
	}
	if total > 0 {
		res.ErrorKinds = kinds
	}
	return res, nil
}

// copyRows is a pgx.CopyFromSource of batch random rows, reused between
// transactions: the random bytes are refilled on each reset.
type copyRows struct {
	rng   *rand.ChaCha8
	buf   []byte // batch * (32 + size)
	size  int
	batch int
	first int64
	i     int
	row   []any
}

func newCopyRows(batch, size int) *copyRows {
	return &copyRows{rng: newRand(), buf: make([]byte, batch*(32+size)), size: size, batch: batch, row: make([]any, 4)}
}

func (c *copyRows) reset(first int64) {
	c.rng.Read(c.buf)
	c.first, c.i = first, -1
}

func (c *copyRows) Next() bool { c.i++; return c.i < c.batch }

func (c *copyRows) Values() ([]any, error) {
	rec := c.buf[c.i*(32+c.size) : (c.i+1)*(32+c.size)]
	c.row[0], c.row[1], c.row[2], c.row[3] = int64(1), c.first+int64(c.i), rec[:32], rec[32:]
	return c.row, nil
}

func (c *copyRows) Err() error { return nil }

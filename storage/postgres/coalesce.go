package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tlog-dev/tlog/pkg/tile"
)

const (
	// maxTileQueries is how many tile queries run at once. With one, the
	// queued calls wait for a whole round trip before their query is sent;
	// with two, the next merged query is under way while the previous one's
	// rows are read and handed out. BenchmarkReadTilesConcurrent on a 2-core
	// host (64 goroutines, database on the same host): 46k tiles/s with one,
	// 53k with two, 36k with four (more, smaller queries, and connections
	// taken from the rest of the store: pgxpool's default is 4 there), 15k
	// with one query per call.
	maxTileQueries = 2
	// maxQueryTiles caps the tiles one merged query reads: 512 full tiles are
	// 4 MiB.
	maxQueryTiles = 512
)

// errClosed is the error of reads queued or in flight when the store closes.
var errClosed = errors.New("store closed")

// tileReads merges concurrent ReadTiles calls, of any log, into shared
// queries. Under load (many inclusion proofs, each missing one level-0 tile in
// the server's cache) a query's round trip and fixed cost dominate its few
// kilobytes of data.
//
//   - A call that finds fewer than maxTileQueries tile queries in flight runs
//     its own at once, in its goroutine and under its own context, as it
//     would without coalescing: an idle store adds no latency.
//   - Otherwise it queues. When a query finishes, its slot goes to the queued
//     calls: the oldest, up to maxQueryTiles tiles (at least one call), are
//     read by one query on a new goroutine. Each call then gets its own
//     tiles; ReadTiles decides which are missing or too narrow, so those fail
//     only their own call.
//   - A merged query runs under a context of the store's, which Close
//     cancels, and is cancelled once all its callers have given up. A caller
//     whose context ends returns its error at once, leaving the query (or the
//     queue) to the others. A merged query's error goes to all its callers.
type tileReads struct {
	ctx   context.Context // parent of merged queries, cancelled by Close
	stop  context.CancelCauseFunc
	limit int            // maxTileQueries; tests may lower it before use
	wg    sync.WaitGroup // merged queries' goroutines

	queries atomic.Int64 // queries sent, for tests

	mu      sync.Mutex
	running int         // queries in flight, at most limit
	queue   []*tileRead // calls waiting for a slot, oldest first
	closed  bool
}

func newTileReads() *tileReads {
	ctx, stop := context.WithCancelCause(context.Background())
	return &tileReads{ctx: ctx, stop: stop, limit: maxTileQueries}
}

// tileRead is one ReadTiles or ReadTileSlices call: its validated tiles and
// the range [from, to) of hashes it wants of each, and their stored hashes
// in that range once read (nil for a tile not stored) or the error of its
// query.
type tileRead struct {
	log      string // name, for errors
	id       int64
	levels   []int16
	idxs     []int64
	from, to []int16

	hashes [][]byte
	err    error
	done   chan struct{} // closed when hashes or err is set, if queued
	q      *tileQuery    // the merged query it was taken into, under mu
}

// tileQuery is a merged query in flight.
type tileQuery struct {
	ctx     context.Context
	cancel  context.CancelFunc
	waiting int // callers still waiting for it, under mu
}

// readTiles sets r.hashes or r.err, or returns ctx's error if ctx ends while
// r waits for another call's query.
func (s *Store) readTiles(ctx context.Context, r *tileRead) error {
	c := s.tiles
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.queryTiles(ctx, []*tileRead{r}) // as without coalescing
		return nil
	}
	if c.running < c.limit {
		c.running++
		c.mu.Unlock()
		s.queryTiles(ctx, []*tileRead{r})
		s.nextTileQuery()
		return nil
	}
	r.done = make(chan struct{})
	c.queue = append(c.queue, r)
	c.mu.Unlock()

	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.q == nil {
		if i := slices.Index(c.queue, r); i >= 0 {
			c.queue = slices.Delete(c.queue, i, i+1)
		}
	} else if r.q.waiting--; r.q.waiting == 0 {
		r.q.cancel()
	}
	return ctx.Err()
}

// nextTileQuery hands the slot of a finished query to the queued calls, or
// frees it.
func (s *Store) nextTileQuery() {
	c := s.tiles
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		c.running--
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	q := &tileQuery{ctx: ctx, cancel: cancel}
	n := 0
	for tiles := 0; n < len(c.queue); n++ {
		tiles += len(c.queue[n].levels)
		if n > 0 && tiles > maxQueryTiles {
			break
		}
		c.queue[n].q = q
	}
	reads := c.queue[:n:n]
	c.queue = c.queue[n:]
	q.waiting = n
	c.wg.Go(func() {
		s.queryTiles(q.ctx, reads)
		q.cancel()
		for _, r := range reads {
			close(r.done)
		}
		s.nextTileQuery()
	})
}

// closeTileReads fails the queued calls, cancels the merged queries and
// waits for them to end. Calls made afterwards run their own queries.
func (s *Store) closeTileReads() {
	c := s.tiles
	c.mu.Lock()
	c.closed = true
	for _, r := range c.queue {
		r.err = fmt.Errorf("postgres: read tiles of %q: %w", r.log, errClosed)
		close(r.done)
	}
	c.queue = nil
	c.mu.Unlock()
	c.stop(errClosed)
	c.wg.Wait()
}

// queryTiles reads the tiles of all reads in one query, each stored tile
// once: the hashes of the smallest range that covers all reads of it.
func (s *Store) queryTiles(ctx context.Context, reads []*tileRead) {
	type key struct {
		id    int64
		level int16
		idx   int64
	}
	type hashes struct {
		from, to int16 // the range read, in hashes
		data     []byte
	}
	var (
		n          int
		ids, idxs  []int64
		levels     []int16
		offs, lens []int32
	)
	for _, r := range reads {
		n += len(r.levels)
	}
	found := make(map[key]*hashes, n)
	var order []*hashes // of ids, levels, idxs
	for _, r := range reads {
		for i := range r.levels {
			k := key{r.id, r.levels[i], r.idxs[i]}
			if h, ok := found[k]; ok {
				h.from, h.to = min(h.from, r.from[i]), max(h.to, r.to[i])
				continue
			}
			h := &hashes{from: r.from[i], to: r.to[i]}
			found[k] = h
			order = append(order, h)
			ids, levels, idxs = append(ids, k.id), append(levels, k.level), append(idxs, k.idx)
		}
	}
	for _, h := range order {
		offs = append(offs, int32(h.from)*tile.HashSize+1)
		lens = append(lens, int32(h.to-h.from)*tile.HashSize)
	}
	s.tiles.queries.Add(1)
	err := func() error {
		rows, err := s.pool.Query(ctx, `
SELECT t.log_id, t.level, t.idx, substring(t.hashes FROM u.off FOR u.len)
  FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::int[], $5::int[]) AS u (log_id, level, idx, off, len)
  JOIN tiles t USING (log_id, level, idx)`,
			ids, levels, idxs, offs, lens)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k    key
				data []byte
			)
			if err := rows.Scan(&k.id, &k.level, &k.idx, &data); err != nil {
				return err
			}
			if h := found[k]; h != nil {
				h.data = data
			}
		}
		return rows.Err()
	}()
	// Callers may keep or change what they get: a tile wanted by several
	// calls is copied for all but the first.
	owner := make(map[key]*tileRead)
	for _, r := range reads {
		if err != nil {
			if errors.Is(context.Cause(ctx), errClosed) {
				r.err = fmt.Errorf("postgres: read tiles of %q: %w", r.log, errClosed)
			} else {
				r.err = s.fail(ctx, err, "read tiles of %q", r.log)
			}
			continue
		}
		r.hashes = make([][]byte, len(r.levels))
		for i := range r.levels {
			k := key{r.id, r.levels[i], r.idxs[i]}
			h := found[k]
			if h.data == nil {
				continue // not stored
			}
			lo := min(int(r.from[i]-h.from)*tile.HashSize, len(h.data))
			hi := min(int(r.to[i]-h.from)*tile.HashSize, len(h.data))
			d := h.data[lo:hi:hi]
			if o, ok := owner[k]; ok && o != r {
				d = bytes.Clone(d)
			} else if !ok {
				owner[k] = r
			}
			r.hashes[i] = d
		}
	}
}

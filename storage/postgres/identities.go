package postgres

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tlog-dev/tlog/internal/bloom"
	"github.com/tlog-dev/tlog/storage"
)

// Entries are range-partitioned on their index (migration 0004): partition
// k holds indices [k·size, (k+1)·size) of every log, and its own unique index
// refuses an identity repeated within it. Across partitions the driver keeps
// identities unique: a batch's identities are looked up in the log's full
// partitions below it, each only for the identities its Bloom filter may
// hold (about 0.1% of them), and, for a batch that crosses into a new
// partition, in the partition it leaves (only for the identities its
// growing filter may hold, if it has one: see below). A full partition never
// changes (the tree head only grows), so its filter, once made, stays right;
// filters are kept in entry_filters and in memory, 2 bytes per entry.
//
// A Store that writes a partition from its first entry grows the partition's
// filter from the batches it commits, so the filter is there when the
// partition fills. Otherwise (a Store started, or made leader, in the middle
// of a partition) the filter is built from the partition's rows in the
// background when it is first needed, and until then its look-ups take every
// identity.
type partitions struct {
	size int64 // entries of a log per partition, fixed in the database

	mu       sync.Mutex
	bound    int64              // partitions exist for every index below bound
	filters  map[partKey][]byte // Bloom filters of full partitions
	building map[partKey]bool
	failed   map[partKey]time.Time // last failed build, retried after filterRetry
	growing  map[int64]*growing    // by log: the filter of the partition it fills
	fed      uint64                // count of batches fed to growing filters

	ctx    context.Context // of background builds, cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type partKey struct{ log, part int64 }

// growing is the filter of the partition a log is filling, holding the
// identities of its entries below next.
type growing struct {
	part, next int64
	filter     []byte
	fed        uint64 // partitions.fed when last fed
}

// maxGrowing bounds the filters grown at once (1 MiB each at the default
// partition size); a partition starting beyond it evicts the one fed least
// recently, whose partition's filter is then built from its rows.
const maxGrowing = 16

// partitionTimeout bounds the wait for the lock that adding a partition takes
// on the entries table, which a long read could hold: partitions are added
// half a partition ahead of need, so a later batch tries again.
const partitionTimeout = 2 * time.Second

// filterRetry is how long a filter whose build failed (say, its partition
// misses entries) is not built again: each build reads the partition.
const filterRetry = time.Minute

// newPartitions reads the partition size of the database behind pool.
func newPartitions(ctx context.Context, pool *pgxpool.Pool) (*partitions, error) {
	p := &partitions{
		filters:  make(map[partKey][]byte),
		building: make(map[partKey]bool),
		failed:   make(map[partKey]time.Time),
		growing:  make(map[int64]*growing),
	}
	if err := pool.QueryRow(ctx, `SELECT size FROM entry_partitioning`).Scan(&p.size); err != nil {
		return nil, fmt.Errorf("postgres: read entry partition size: %w", err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// close stops the filter builds and waits for them.
func (p *partitions) close() {
	p.cancel()
	p.wg.Wait()
}

// addPartitions makes sure the partitions holding indices below end exist,
// and makes the next one once end is within half a partition of it.
func (s *Store) addPartitions(ctx context.Context, end int64) error {
	p := s.parts
	p.mu.Lock()
	bound := p.bound
	p.mu.Unlock()
	if end+p.size/2 <= bound {
		return nil
	}
	var nb int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, partitionTimeout.Milliseconds())); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT tlog_add_entry_partitions($1)`, end-1+p.size/2).Scan(&nb)
	})
	if err != nil {
		if end <= bound {
			s.log.WarnContext(ctx, "adding the next entry partition failed; the next batch tries again", "err", err)
			return nil
		}
		return s.fail(ctx, err, "add entry partitions up to index %d", end-1)
	}
	p.mu.Lock()
	p.bound = max(p.bound, nb)
	p.mu.Unlock()
	return nil
}

// grow feeds the identities of a committed batch, whose look-ups were
// chosen (batchProbes hashed its identities), to the log's growing filter,
// which must have seen every entry of its partition before the batch; a
// batch that starts a partition starts a filter. A filter that is complete
// becomes its partition's, and is stored in the background.
func (s *Store) grow(id int64, w *batchWrite) {
	p := s.parts
	hashes := w.keyHashes
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fed++
	g := p.growing[id]
	for i := int64(0); i < int64(len(hashes)); {
		idx := w.prevSize + i
		part := idx / p.size
		end := min(int64(len(hashes)), (part+1)*p.size-w.prevSize)
		if g == nil || g.part != part || g.next != idx {
			delete(p.growing, id)
			g = nil
			if idx != part*p.size {
				i = end // the partition's first entries were not seen
				continue
			}
			if len(p.growing) >= maxGrowing {
				p.evictGrowing()
			}
			g = &growing{part: part, next: idx, filter: bloom.New(uint64(p.size))}
			p.growing[id] = g
		}
		for _, h := range hashes[i:end] {
			bloom.Add(g.filter, h)
		}
		i, g.next, g.fed = end, w.prevSize+end, p.fed
		if g.next == (part+1)*p.size {
			delete(p.growing, id)
			key := partKey{id, part}
			if p.filters[key] == nil {
				p.filters[key] = g.filter
				f := g.filter
				p.wg.Go(func() {
					if err := s.saveFilter(p.ctx, id, part, f); err != nil && p.ctx.Err() == nil {
						s.log.Warn("storing an identity filter failed; a Store started later builds it from the partition's rows",
							"log_id", id, "partition", part, "err", err)
					}
				})
			}
			g = nil
		}
	}
}

// evictGrowing drops the growing filter fed least recently. p.mu must be
// held.
func (p *partitions) evictGrowing() {
	var oldest int64
	var fed uint64 = math.MaxUint64
	for id, g := range p.growing {
		if g.fed < fed {
			oldest, fed = id, g.fed
		}
	}
	delete(p.growing, oldest)
}

// A probe looks identities up in a log's entries in one partition.
type probe struct {
	part int64
	keys [][]byte
}

// probeSQL is the query of a probe of partition part. It names the partition
// rather than a range of indices, which would also fit the primary key: a
// planner that misjudges a young partition's size then scans the range.
func probeSQL(part int64) string {
	return fmt.Sprintf(`SELECT identity, idx FROM entries_p%d WHERE log_id = $1 AND identity = ANY($2::bytea[])`, part)
}

// bloomHashes returns the filter hashes of keys.
func bloomHashes(keys [][]byte) []uint64 {
	hs := make([]uint64, len(keys))
	for i, k := range keys {
		hs[i] = bloom.Hash(k)
	}
	return hs
}

// fullProbes returns the probes that find which of keys (whose bloomHashes
// are hashes) the log's first full partitions hold, given their filters
// (Store.filters; nil if not built): one per partition whose filter may hold
// any of them.
func fullProbes(filters [][]byte, keys [][]byte, hashes []uint64) []probe {
	if len(filters) == 0 || len(keys) == 0 {
		return nil
	}
	var ps []probe
	for k, f := range filters {
		pr := probe{part: int64(k)}
		if f == nil {
			pr.keys = keys
		} else {
			for i, h := range hashes {
				if bloom.MayContain(f, h) {
					pr.keys = append(pr.keys, keys[i])
				}
			}
		}
		if len(pr.keys) > 0 {
			ps = append(ps, pr)
		}
	}
	return ps
}

// filters returns the filters of the log's partitions [0, full), nil for
// those not built yet. It loads missing ones from entry_filters, and starts
// building those not there.
func (s *Store) filters(ctx context.Context, id, full int64) ([][]byte, error) {
	p := s.parts
	fs := make([][]byte, full)
	var missing []int64
	p.mu.Lock()
	for k := range full {
		key := partKey{id, k}
		fs[k] = p.filters[key]
		if fs[k] == nil && !p.building[key] {
			missing = append(missing, k)
		}
	}
	p.mu.Unlock()
	if len(missing) == 0 {
		return fs, nil
	}

	rows, err := s.pool.Query(ctx, `SELECT part, filter FROM entry_filters WHERE log_id = $1 AND format = $2 AND part = ANY($3::bigint[])`,
		id, bloom.Format, missing)
	if err != nil {
		return nil, s.fail(ctx, err, "read identity filters")
	}
	loaded := make(map[int64][]byte)
	for rows.Next() {
		var (
			k int64
			f []byte
		)
		if err := rows.Scan(&k, &f); err != nil {
			rows.Close()
			return nil, s.fail(ctx, err, "read identity filters")
		}
		if k >= 0 && k < full && bloom.Valid(f) {
			loaded[k] = f
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, err, "read identity filters")
	}

	var build []int64
	p.mu.Lock()
	for _, k := range missing {
		key := partKey{id, k}
		switch {
		case loaded[k] != nil:
			p.filters[key], fs[k] = loaded[k], loaded[k]
		case p.filters[key] != nil: // built meanwhile
			fs[k] = p.filters[key]
		case !p.building[key] && time.Since(p.failed[key]) > filterRetry:
			p.building[key] = true
			build = append(build, k)
		}
	}
	p.mu.Unlock()
	if len(build) > 0 {
		p.wg.Go(func() { s.buildFilters(id, build) })
	}
	return fs, nil
}

// buildFilters builds, stores and keeps the filters of the log's partitions
// parts, one after the other.
func (s *Store) buildFilters(id int64, parts []int64) {
	p := s.parts
	for i, k := range parts {
		start := time.Now()
		f, err := s.buildFilter(p.ctx, id, k)
		key := partKey{id, k}
		p.mu.Lock()
		delete(p.building, key)
		if err == nil {
			p.filters[key] = f
		} else if p.ctx.Err() == nil {
			p.failed[key] = time.Now()
		}
		p.mu.Unlock()
		switch {
		case err == nil:
			s.log.Debug("built identity filter", "log_id", id, "partition", k, "took", time.Since(start))
		case p.ctx.Err() != nil:
			for _, k := range parts[i+1:] {
				p.mu.Lock()
				delete(p.building, partKey{id, k})
				p.mu.Unlock()
			}
			return
		default:
			s.log.Warn("building an identity filter failed; its partition's look-ups take every identity until a build succeeds (retried after a minute)",
				"log_id", id, "partition", k, "err", err)
		}
	}
}

// buildFilter builds the filter of the log's entries in partition k, which
// must be full, and stores it.
func (s *Store) buildFilter(ctx context.Context, id, k int64) ([]byte, error) {
	n := s.parts.size
	var size int64
	if err := s.pool.QueryRow(ctx, `SELECT tree_size FROM logs WHERE id = $1`, id).Scan(&size); err != nil {
		return nil, err
	}
	if size < (k+1)*n {
		return nil, fmt.Errorf("partition %d is not full: the log has %d entries", k, size)
	}
	f := bloom.New(uint64(n))
	rows, err := s.pool.Query(ctx, fmt.Sprintf(`SELECT identity FROM entries_p%d WHERE log_id = $1`, k), id)
	if err != nil {
		return nil, err
	}
	count := int64(0)
	for rows.Next() {
		identity := rows.RawValues()[0]
		bloom.Add(f, bloom.Hash(identity))
		count++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if count != n {
		return nil, fmt.Errorf("partition %d holds %d entries of the log, want %d: entries are missing (run tlogd fsck)", k, count, n)
	}
	return f, s.saveFilter(ctx, id, k, f)
}

// saveFilter stores the filter f of the log's partition k.
func (s *Store) saveFilter(ctx context.Context, id, k int64, f []byte) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO entry_filters (log_id, part, format, filter) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		id, k, bloom.Format, f)
	return err
}

// batchProbes returns the probes that find a batch's identities already in
// the log outside the partition its first entry goes to (whose index sees
// the rest): in the full partitions below it, whose filters are fs
// (Store.filters of the partitions below w.prevSize/size), and, for the
// entries that go to later partitions, in the entries of the first one.
// It sets w.keyHashes.
func (s *Store) batchProbes(id int64, w *batchWrite, fs [][]byte) []probe {
	n := s.parts.size
	first := w.prevSize / n
	w.keyHashes = bloomHashes(w.identities)
	ps := fullProbes(fs, w.identities, w.keyHashes)
	if in := (first+1)*n - w.prevSize; w.prevSize > first*n && in < int64(len(w.identities)) {
		if keys := s.parts.mayHold(id, first, w.prevSize, w.identities[in:], w.keyHashes[in:]); len(keys) > 0 {
			ps = append(ps, probe{part: first, keys: keys})
		}
	}
	return ps
}

// mayHold returns those of keys (whose bloomHashes are hashes) that the
// log's entries of partition part below index end may hold: all of them,
// unless the partition's growing filter has seen exactly those entries.
func (p *partitions) mayHold(id, part, end int64, keys [][]byte, hashes []uint64) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.growing[id]
	if g == nil || g.part != part || g.next != end {
		return keys
	}
	var may [][]byte
	for i, k := range keys {
		if bloom.MayContain(g.filter, hashes[i]) {
			may = append(may, k)
		}
	}
	return may
}

// duplicateError is a probe's find in Integrate.
type duplicateError struct {
	identity []byte
	idx      int64
}

func (e *duplicateError) Error() string {
	return fmt.Sprintf("identity %x is already in the log at index %d", e.identity, e.idx)
}

// queueProbes adds the probes of log id to b.
func queueProbes(b *pgx.Batch, id int64, ps []probe) {
	for _, pr := range ps {
		b.Queue(probeSQL(pr.part), id, pr.keys)
	}
}

// LookupIdentities returns the index of each identity already in the log:
// one query for the partition the log is filling (unless its growing filter
// holds none of ids), and one per full partition whose identity filter may
// hold some of them (see partitions).
func (s *Store) LookupIdentities(ctx context.Context, log string, ids []storage.Hash) (map[storage.Hash]uint64, error) {
	id, err := s.logID(ctx, log)
	if err != nil {
		return nil, err
	}
	found := make(map[storage.Hash]uint64)
	if len(ids) == 0 {
		return found, nil
	}
	keys := make([][]byte, len(ids))
	for i := range ids {
		keys[i] = ids[i][:]
	}
	var size int64
	if err := s.pool.QueryRow(ctx, `SELECT tree_size FROM logs WHERE id = $1`, id).Scan(&size); err != nil {
		return nil, s.fail(ctx, err, "look up identities in %q", log)
	}
	full := size / s.parts.size
	fs, err := s.filters(ctx, id, full)
	if err != nil {
		return nil, s.fail(ctx, err, "look up identities in %q", log)
	}
	hashes := bloomHashes(keys)
	ps := fullProbes(fs, keys, hashes)
	if size > full*s.parts.size {
		if keys := s.parts.mayHold(id, full, size, keys, hashes); len(keys) > 0 {
			ps = append(ps, probe{part: full, keys: keys})
		}
	}
	b := &pgx.Batch{}
	queueProbes(b, id, ps)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	for range ps {
		rows, err := br.Query()
		if err != nil {
			return nil, s.fail(ctx, err, "look up identities in %q", log)
		}
		for rows.Next() {
			var (
				identity []byte
				idx      int64
			)
			if err := rows.Scan(&identity, &idx); err != nil {
				rows.Close()
				return nil, s.fail(ctx, err, "look up identities in %q", log)
			}
			h, err := toHash("entry identity", identity)
			if err != nil {
				rows.Close()
				return nil, err
			}
			found[h] = uint64(idx)
		}
		if err := rows.Err(); err != nil {
			return nil, s.fail(ctx, err, "look up identities in %q", log)
		}
	}
	if err := br.Close(); err != nil {
		return nil, s.fail(ctx, err, "look up identities in %q", log)
	}
	return found, nil
}

// lookups are a batch's look-ups, chosen and run beside its transaction
// (see Integrate).
type lookups struct {
	acquire context.Context    // for their connection; cancelled by stop
	stop    context.CancelFunc // needed now, or not at all: take no connection
	done    chan struct{}      // closed once rest and err are set
	rest    []probe            // those left to the transaction: no connection was free
	err     error              // their failure, or a *duplicateError
}

// result waits for the look-ups and returns those the transaction must run
// itself, or their error.
func (l *lookups) result() ([]probe, error) {
	l.stop()
	<-l.done
	return l.rest, l.err
}

// startLookups chooses the look-ups of w's identities (batchProbes, with
// the filters fs) in a goroutine, and runs them there on a connection of
// their own if one is free before their answer is needed. A batch without
// entries has none.
func (s *Store) startLookups(ctx context.Context, id int64, w *batchWrite, fs [][]byte) *lookups {
	l := &lookups{done: make(chan struct{})}
	l.acquire, l.stop = context.WithCancel(ctx)
	if len(w.data) == 0 {
		close(l.done)
		return l
	}
	go func() {
		defer close(l.done)
		ps := s.batchProbes(id, w, fs)
		if len(ps) == 0 {
			return
		}
		c, err := s.pool.Acquire(l.acquire)
		if err == nil && l.acquire.Err() != nil {
			c.Release() // acquired as it was stopped
			err = l.acquire.Err()
		}
		if err != nil {
			// Needed before a connection was free (or ctx is done, and the
			// transaction fails on it): the transaction runs them.
			l.rest = ps
			return
		}
		defer c.Release()
		s.asideLookups.Add(1)
		b := &pgx.Batch{}
		queueProbes(b, id, ps)
		// ctx, not l.acquire: once started, they finish.
		l.err = checkProbes(c.SendBatch(ctx, b), len(ps))
	}()
	return l
}

// checkProbes reads the results of a batch that starts with n probes, and
// closes it: an error, or a *duplicateError for the first identity a probe
// found.
func checkProbes(br pgx.BatchResults, n int) error {
	defer br.Close()
	for range n {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		var dup duplicateError
		found := rows.Next()
		if found {
			err = rows.Scan(&dup.identity, &dup.idx)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return err
		}
		if found {
			return &dup
		}
	}
	return br.Close()
}

// Package sequencer turns appended entries into a growing, signed log.
//
// A Sequencer pools entries from concurrent callers for at most MaxBatchAge
// or MaxBatchSize entries, then integrates the pool as one batch: it
// de-duplicates, assigns indices, extends the tree's right edge, checks the
// new tree is consistent with the last signed checkpoint, signs a new
// checkpoint and stores everything in ONE storage transaction that
// compare-and-swaps the tree head. Callers are answered only after that
// transaction commits, each with its index, leaf hash and the signed
// checkpoint that contains it. While one batch commits, the next one fills
// and is prepared (and its checkpoint signed) on top of it; that one is
// stored only after the first has committed, and is prepared again on what
// storage holds if the first did not commit as prepared, so a checkpoint
// signed over a batch that was not stored is dropped unseen.
//
// Errors come in two kinds. A batch error (storage unavailable, say) fails
// the callers of that batch with an error wrapping ErrUnavailable; the
// sequencer then re-reads the tree head from storage before the next batch,
// so a batch that failed but was in fact persisted is never signed over.
// The same happens when the compare-and-swap on the tree head fails because
// another writer moved it. A fatal error (storage disagrees with what the
// log signed, or holds a tree that is not consistent with it) stops the
// sequencer: Run returns it and every caller gets it, because continuing
// could fork the log.
package sequencer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/storage"
)

// Domain errors of Add. The server maps them to status codes.
var (
	// ErrEmptyEntry: an entry with no data.
	ErrEmptyEntry = errors.New("entry is empty")
	// ErrEntryTooLarge: an entry over tile.MaxEntrySize bytes.
	ErrEntryTooLarge = fmt.Errorf("entry is larger than %d bytes", tile.MaxEntrySize)
	// ErrNoEntries: a request without entries.
	ErrNoEntries = errors.New("no entries to append")
	// ErrPushback: the pool is full; retry later.
	ErrPushback = errors.New("sequencer is busy: too many entries waiting, retry later")
	// ErrClosed: the sequencer is shutting down or has stopped.
	ErrClosed = errors.New("sequencer is not running")
	// ErrUnavailable: the batch could not be committed (it may or may not
	// have been; a retry is safe thanks to de-duplication).
	ErrUnavailable = errors.New("batch not committed")
	// ErrFatal: the sequencer stopped to avoid forking the log.
	ErrFatal = errors.New("sequencer stopped")
)

// Config configures a Sequencer. Zero values take the documented defaults.
type Config struct {
	// Store holds the log. Required.
	Store storage.Store
	// Log is the name of the log to sequence. Required; it must exist.
	Log string
	// Signer signs checkpoints; its name is the log's origin. Required.
	Signer note.Signer
	// Verifier verifies the log's own checkpoints at start-up. Required.
	Verifier note.Verifier
	// MaxBatchSize is the most entries integrated in one batch (default
	// 4096). A single request larger than that is integrated alone.
	MaxBatchSize int
	// MaxBatchAge is the longest an entry waits in the pool before its batch
	// is integrated (default 10ms).
	MaxBatchAge time.Duration
	// MaxPending is the most entries waiting in the pool or in the batch
	// being committed; Add beyond that fails with ErrPushback (default
	// 16 * MaxBatchSize).
	MaxPending int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives the sequencer's logs (default slog.Default()).
	Logger *slog.Logger
	// Signed, if set, is the latest checkpoint (signed note) the log is
	// known to have signed, kept outside storage (see package keyfile): New
	// refuses storage whose tree does not extend it, as after a restore of
	// an older backup or a rollback of entries, tiles, head and checkpoints
	// together, where signing on would fork the log. SignedFrom names where
	// it was kept, for messages.
	Signed     []byte
	SignedFrom string
	// OnCommit, if set, is called with the new checkpoint after each batch
	// commits (from the Run goroutine: it must return at once, e.g. by
	// signalling another goroutine). The witness client uses it.
	OnCommit func(storage.Checkpoint)
}

// Entry is an entry to append.
type Entry struct {
	// Data is the entry, 1..tile.MaxEntrySize bytes.
	Data []byte
	// IdempotencyKey, if not empty, identifies the entry for
	// de-duplication instead of its leaf hash.
	IdempotencyKey string
}

// Result says where an appended entry is.
type Result struct {
	// Index is the entry's position in the log.
	Index uint64
	// LeafHash is the RFC 6962 leaf hash of the entry at Index.
	LeafHash tree.Hash
	// Duplicate is true if the entry's identity was already in the log (or
	// earlier in the same batch); Index is then the original's.
	Duplicate bool
	// Checkpoint is the signed checkpoint that contains Index.
	Checkpoint storage.Checkpoint
}

type item struct {
	data     []byte
	leaf     tree.Hash
	identity tree.Hash
}

type request struct {
	items   []item
	results []Result
	err     error
	arrived time.Time
	done    chan struct{}
}

// Sequencer sequences one log. Create it with New, run it with Run.
type Sequencer struct {
	cfg    Config
	log    *slog.Logger
	origin string

	mu      sync.Mutex
	pool    []*request
	pooled  int   // entries in pool
	pending int   // entries in pool plus in the committing batch
	closed  bool  // Add refuses new entries
	stopped error // fatal error, once Run has stopped for good
	wake    chan struct{}

	// Owned by the Run goroutine.
	edge   *tree.Edge
	head   storage.Checkpoint
	resync bool
	// lookups counts the next batches whose identities are looked up
	// before they are integrated; see integrate.
	lookups int

	latest latestCheckpoint
}

// New loads the log's state from storage and checks it: the latest
// checkpoint must verify with cfg.Verifier, and the tree stored in the tiles
// must have exactly that checkpoint's root. It fails (wrapping ErrFatal) if
// storage disagrees with what the log signed.
func New(ctx context.Context, cfg Config) (*Sequencer, error) {
	if cfg.Store == nil || cfg.Log == "" || cfg.Signer == nil || cfg.Verifier == nil {
		return nil, errors.New("sequencer: Store, Log, Signer and Verifier are required")
	}
	if cfg.Signer.Name() != cfg.Verifier.Name() || cfg.Signer.KeyHash() != cfg.Verifier.KeyHash() {
		return nil, errors.New("sequencer: signer and verifier are not the same key")
	}
	if cfg.MaxBatchSize <= 0 {
		cfg.MaxBatchSize = 4096
	}
	if cfg.MaxBatchAge <= 0 {
		cfg.MaxBatchAge = 10 * time.Millisecond
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 16 * cfg.MaxBatchSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Sequencer{
		cfg:    cfg,
		log:    cfg.Logger.With("log", cfg.Log),
		origin: cfg.Signer.Name(),
		wake:   make(chan struct{}, 1),
	}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	if err := s.checkSigned(ctx); err != nil {
		return nil, err
	}
	s.log.Info("sequencer loaded", "size", s.edge.Size(), "root", fmt.Sprintf("%x", s.edge.Root()))
	return s, nil
}

// load reads the latest checkpoint and the right edge of the tree from
// storage and checks that they agree.
func (s *Sequencer) load(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := s.loadOnce(ctx)
		if !errors.Is(err, errHeadMoved) || attempt == 2 {
			return err
		}
	}
}

// errHeadMoved: the tree head moved while load read it; read again.
var errHeadMoved = errors.New("tree head moved while loading")

func (s *Sequencer) loadOnce(ctx context.Context) error {
	cp, err := s.cfg.Store.LatestCheckpoint(ctx, s.cfg.Log)
	if err != nil {
		return fmt.Errorf("sequencer: reading latest checkpoint: %w", err)
	}
	c, _, err := checkpoint.Open(cp.Note, s.cfg.Verifier)
	if err != nil {
		return fmt.Errorf("%w: latest stored checkpoint does not verify with the log's key: %w", ErrFatal, err)
	}
	if c.Size != cp.Size || c.Hash != cp.Root {
		return fmt.Errorf("%w: stored tree head %d/%x differs from its signed checkpoint %d/%x", ErrFatal, cp.Size, cp.Root, c.Size, c.Hash)
	}
	edge, err := tree.LoadEdge(s.tileReader(ctx, nil), c.Size)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, tree.ErrMissingTile) {
			return fmt.Errorf("%w: stored tiles cannot rebuild the tree at the signed size %d: %w", ErrFatal, c.Size, err)
		}
		return fmt.Errorf("sequencer: loading the tree edge: %w", err)
	}
	if edge.Root() != c.Hash {
		return fmt.Errorf("%w: stored tiles give root %x at size %d, but the log signed %x", ErrFatal, edge.Root(), c.Size, c.Hash)
	}
	if err := s.checkNothingBeyond(ctx, cp); err != nil {
		return err
	}
	if s.edge != nil && s.edge.Size() == edge.Size() && s.edge.Root() != edge.Root() {
		return fmt.Errorf("%w: stored tree at size %d has root %x, but this sequencer signed %x", ErrFatal, edge.Size(), edge.Root(), s.edge.Root())
	}
	if s.edge != nil && s.edge.Size() != edge.Size() {
		// A resync after a failed commit: the stored head may only have
		// moved forward, consistently with what this sequencer signed.
		if s.edge.Size() > edge.Size() {
			return fmt.Errorf("%w: stored tree head went back from %d to %d", ErrFatal, s.edge.Size(), edge.Size())
		}
		if err := s.checkConsistency(ctx, s.edge, edge, nil); err != nil {
			return err
		}
	}
	s.edge, s.head = edge, cp
	s.latest.set(cp)
	s.lookups = lookupWindow // clients may be retrying what the last run stored
	return nil
}

// checkSigned refuses a loaded tree that does not extend the checkpoint
// Config.Signed: a smaller tree, or one that is not consistent with it.
func (s *Sequencer) checkSigned(ctx context.Context) error {
	if s.cfg.Signed == nil {
		return nil
	}
	c, _, err := checkpoint.Open(s.cfg.Signed, s.cfg.Verifier)
	if err != nil {
		return fmt.Errorf("%w: the log's last signed checkpoint, kept in %s, does not verify with its key (damaged or replaced?): %w", ErrFatal, s.cfg.SignedFrom, err)
	}
	n, root := s.edge.Size(), s.edge.Root()
	why := ""
	switch {
	case c.Size > n:
		why = fmt.Sprintf("storage's tree (size %d) is behind the checkpoint the log signed at size %d", n, c.Size)
	case c.Size == n && c.Hash != root:
		why = fmt.Sprintf("storage's tree at size %d has root %x, but the log signed %x", n, root, c.Hash)
	case c.Size > 0 && c.Size < n:
		if err := s.extends(ctx, s.edge, c.Size, c.Hash, nil); errors.Is(err, errNotExtending) {
			why = fmt.Sprintf("storage's tree at size %d does not extend the checkpoint the log signed at size %d (%v)", n, c.Size, err)
		} else if err != nil {
			return err
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w: %s, kept in %s: storage was rolled back or restored from an older backup, and signing on would fork the log; restore the missing data (tlogd fsck shows what storage holds)", ErrFatal, why, s.cfg.SignedFrom)
}

// checkNothingBeyond refuses a tree head that was moved back below stored
// entries: those entries were covered by a checkpoint the log signed, so
// building on the older head would fork the log. An entry beyond the head
// can also mean another writer extended the head after it was read: then
// the head has moved, and load reads it again.
func (s *Sequencer) checkNothingBeyond(ctx context.Context, head storage.Checkpoint) error {
	_, err := s.cfg.Store.ReadEntries(ctx, s.cfg.Log, head.Size, head.Size+1)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("sequencer: probing for entries beyond the head: %w", err)
	}
	now, err := s.cfg.Store.LatestCheckpoint(ctx, s.cfg.Log)
	if err != nil {
		return fmt.Errorf("sequencer: re-reading the tree head: %w", err)
	}
	if now.Size != head.Size {
		return errHeadMoved
	}
	return fmt.Errorf("%w: storage holds entry %d beyond the tree head (size %d): the log was rolled back (run tlogd fsck)", ErrFatal, head.Size, head.Size)
}

// tileReader reads tiles from overlay first (tiles of a batch not yet
// stored), then from storage.
func (s *Sequencer) tileReader(ctx context.Context, overlay []tree.TileData) tree.TileReader {
	return tree.TileReaderFunc(func(ts []tile.Tile) ([][]byte, error) {
		out := make([][]byte, len(ts))
		var missing []tile.Tile
		var at []int
		for i, t := range ts {
			for _, o := range overlay {
				if o.Level == t.Level && o.Index == t.Index && o.Width >= t.Width {
					out[i] = o.Hashes
				}
			}
			if out[i] == nil {
				missing = append(missing, t)
				at = append(at, i)
			}
		}
		if len(missing) > 0 {
			data, err := s.cfg.Store.ReadTiles(ctx, s.cfg.Log, missing)
			if err != nil {
				return nil, err
			}
			for j, i := range at {
				out[i] = data[j]
			}
		}
		return out, nil
	})
}

// Latest returns the newest checkpoint this sequencer has committed (or
// loaded at start).
func (s *Sequencer) Latest() storage.Checkpoint { return s.latest.get() }

// Add appends entries and waits until they are committed. Results are in
// the order of entries. If ctx ends first, Add returns ctx's error; the
// entries may still be committed later.
func (s *Sequencer) Add(ctx context.Context, entries []Entry) ([]Result, error) {
	if len(entries) == 0 {
		return nil, ErrNoEntries
	}
	r := &request{items: make([]item, len(entries)), done: make(chan struct{})}
	for i, e := range entries {
		switch {
		case len(e.Data) == 0:
			return nil, fmt.Errorf("entry %d: %w", i, ErrEmptyEntry)
		case len(e.Data) > tile.MaxEntrySize:
			return nil, fmt.Errorf("entry %d has %d bytes: %w", i, len(e.Data), ErrEntryTooLarge)
		}
		leaf := tree.LeafHash(e.Data)
		r.items[i] = item{data: e.Data, leaf: leaf, identity: tree.Identity(leaf, e.IdempotencyKey)}
	}
	s.mu.Lock()
	switch {
	case s.stopped != nil:
		s.mu.Unlock()
		return nil, s.stopped
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case s.pending+len(entries) > s.cfg.MaxPending && s.pending > 0:
		s.mu.Unlock()
		return nil, ErrPushback
	}
	r.arrived = s.cfg.Now()
	s.pool = append(s.pool, r)
	s.pooled += len(entries)
	s.pending += len(entries)
	s.mu.Unlock()
	s.signal()

	select {
	case <-r.done:
		return r.results, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Sequencer) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run integrates batches until ctx is done or a fatal error occurs. When ctx
// is done it stops accepting entries, integrates everything already pooled,
// answers its callers and returns nil. After a fatal error it answers every
// pooled caller with that error and returns it.
//
// At most one batch's storage transaction runs at a time (a flight). While
// it runs, Run prepares the next batch on the flight's tree, then waits for
// the flight to land before it stores that batch.
func (s *Sequencer) Run(ctx context.Context) error {
	// Storage calls outlive ctx so that the final flush can commit.
	sctx := context.WithoutCancel(ctx)
	var fl *flight
	for {
		var landed <-chan struct{}
		if fl != nil {
			landed = fl.done
		}
		batch, land := s.nextBatch(ctx, landed)
		if fl != nil && (land || batch == nil || !s.mayOverlap()) {
			if err := s.land(sctx, fl); err != nil {
				return s.fail(batch, err)
			}
			fl = nil
		}
		switch {
		case batch == nil && land:
			continue
		case batch == nil:
			return nil
		}
		var b *prepared
		if fl != nil {
			var err error
			if b, err = s.overlap(sctx, fl, batch); err != nil {
				return s.fail(batch, err)
			}
			fl = nil
		}
		if b != nil {
			fl = s.fly(sctx, batch, b, false)
			continue
		}
		var err error
		if fl, err = s.launch(sctx, batch); err != nil {
			return s.fail(nil, err)
		}
	}
}

// overlap prepares batch on the flight's tree while the flight commits, then
// lands the flight. It returns the prepared batch if the flight was stored
// as prepared, else nil: batch is then to be prepared again on what storage
// holds. It returns only fatal errors, the flight's.
func (s *Sequencer) overlap(ctx context.Context, fl *flight, batch []*request) (*prepared, error) {
	base := fl.b.edge
	b, err := s.prepare(ctx, base, fl.b.Tiles, batch, false)
	if lerr := s.land(ctx, fl); lerr != nil {
		return nil, lerr
	}
	if err != nil || s.edge != base {
		s.log.Debug("preparing a batch again after the one before it landed otherwise", "size", s.edge.Size(), "err", err)
		return nil, nil
	}
	return b, nil
}

// mayOverlap reports whether the next batch may be prepared before the
// flight lands: not when the head must be re-read first, nor while batches
// look their identities up. A batch prepared during a flight is never
// looked up: the look-up would miss the flight's identities, and a batch
// repeating one of them would be refused as if storage were inconsistent.
// Without a look-up, storage refuses such a batch as a duplicate, and
// settle prepares it again with one after the flight landed.
func (s *Sequencer) mayOverlap() bool { return !s.resync && s.lookups == 0 }

// fail stops the sequencer after the fatal error err, which also fails
// batch, a batch taken from the pool but not integrated (if not nil).
func (s *Sequencer) fail(batch []*request, err error) error {
	if batch != nil {
		s.finish(batch, err)
	}
	s.stop(err)
	return err
}

// flight is a prepared batch whose storage transaction runs.
type flight struct {
	batch  []*request
	b      *prepared
	lookup bool // b was prepared with its identities looked up
	start  time.Time
	err    error         // Integrate's, once done is closed
	done   chan struct{} // closed when Integrate has returned
}

// fly starts the transaction of b, prepared from batch.
func (s *Sequencer) fly(ctx context.Context, batch []*request, b *prepared, lookup bool) *flight {
	fl := &flight{batch: batch, b: b, lookup: lookup, start: s.cfg.Now(), done: make(chan struct{})}
	go func() {
		defer close(fl.done)
		fl.err = s.cfg.Store.Integrate(ctx, s.cfg.Log, &b.Batch)
	}()
	return fl
}

// launch prepares batch on the stored tree (re-reading the head first if
// needed) and starts its transaction. It returns a nil flight if the batch
// failed before that (its callers are answered), and an error only if it
// is fatal.
func (s *Sequencer) launch(ctx context.Context, batch []*request) (*flight, error) {
	if s.resync {
		if err := s.load(ctx); err != nil {
			if errors.Is(err, ErrFatal) {
				s.finish(batch, err)
				return nil, err
			}
			s.finish(batch, fmt.Errorf("%w: %w", ErrUnavailable, err))
			return nil, nil
		}
		s.resync = false
	}
	lookup := s.lookups > 0
	if lookup {
		s.lookups--
	}
	b, err := s.prepare(ctx, s.edge, nil, batch, lookup)
	if err != nil {
		return nil, s.settle(ctx, batch, nil, lookup, fmt.Errorf("%w: %w", errPrepare, err), s.cfg.Now())
	}
	return s.fly(ctx, batch, b, lookup), nil
}

// land waits for the flight's transaction and settles its batch. It
// returns only fatal errors.
func (s *Sequencer) land(ctx context.Context, fl *flight) error {
	<-fl.done
	return s.settle(ctx, fl.batch, fl.b, fl.lookup, fl.err, fl.start)
}

// nextBatch waits for a batch to be due and takes it from the pool. It
// returns a nil batch when ctx is done and the pool is empty, and a nil
// batch and land true as soon as landed is closed.
func (s *Sequencer) nextBatch(ctx context.Context, landed <-chan struct{}) (batch []*request, land bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if ctx.Err() != nil {
			s.closed = true
		}
		if len(s.pool) > 0 {
			age := s.cfg.Now().Sub(s.pool[0].arrived)
			if s.closed || s.pooled >= s.cfg.MaxBatchSize || age >= s.cfg.MaxBatchAge {
				batch := s.take()
				s.mu.Unlock()
				return batch, false
			}
			if timer == nil {
				timer = time.NewTimer(s.cfg.MaxBatchAge - age)
			} else {
				timer.Reset(s.cfg.MaxBatchAge - age)
			}
		} else if s.closed {
			s.mu.Unlock()
			return nil, false
		}
		s.mu.Unlock()
		var tc <-chan time.Time
		if timer != nil {
			tc = timer.C
		}
		select {
		case <-s.wake:
		case <-tc:
		case <-ctx.Done():
		case <-landed:
			return nil, true
		}
	}
}

// take removes whole requests from the pool, up to MaxBatchSize entries but
// at least one request. s.mu must be held.
func (s *Sequencer) take() []*request {
	n, entries := 0, 0
	for n < len(s.pool) && (n == 0 || entries+len(s.pool[n].items) <= s.cfg.MaxBatchSize) {
		entries += len(s.pool[n].items)
		n++
	}
	batch := make([]*request, n)
	copy(batch, s.pool)
	clear(s.pool[:n])
	s.pool = s.pool[n:]
	s.pooled -= entries
	return batch
}

// stop records a fatal error and fails every pooled request with it.
func (s *Sequencer) stop(err error) {
	s.mu.Lock()
	s.stopped, s.closed = err, true
	pool := s.pool
	s.pool, s.pooled, s.pending = nil, 0, 0
	s.mu.Unlock()
	for _, r := range pool {
		r.err = err
		close(r.done)
	}
}

// finish answers the requests of a batch and releases their pending count.
func (s *Sequencer) finish(batch []*request, err error) {
	n := 0
	for _, r := range batch {
		n += len(r.items)
		if err != nil {
			r.err, r.results = err, nil
		}
		close(r.done)
	}
	s.mu.Lock()
	s.pending -= n
	s.mu.Unlock()
}

// lookupWindow is how many batches look their identities up before they are
// integrated, after a start or a batch that held an identity already stored.
const lookupWindow = 64

// settle answers the callers of batch, whose transaction (of b) returned
// err (or whose preparation failed: err wraps errPrepare), and moves the
// sequencer on to the stored tree. It returns only fatal errors; batch
// errors are given to the batch's callers.
//
// Most batches hold only new entries, and storage refuses an identity it
// already has (storage.ErrDuplicate) as it inserts it. So a batch is
// integrated without looking its identities up first, which saves a
// storage lookup per entry; when storage refuses it, nothing was stored,
// and the batch is prepared again with the lookup and integrated here, as
// are the next lookupWindow batches (a client retrying tends to send more).
// The checkpoint signed for the refused attempt is dropped unseen.
func (s *Sequencer) settle(ctx context.Context, batch []*request, b *prepared, lookup bool, err error, start time.Time) error {
	if errors.Is(err, storage.ErrDuplicate) && !lookup {
		s.log.Debug("batch holds an entry already stored; looking identities up", "size", s.edge.Size(), "err", err)
		s.lookups = lookupWindow
		b, err = s.attempt(ctx, batch, true)
	}
	switch {
	case errors.Is(err, errPrepare) && errors.Is(err, ErrFatal):
		s.finish(batch, err)
		return err
	case errors.Is(err, errPrepare):
		s.finish(batch, fmt.Errorf("%w: %w", ErrUnavailable, err))
		return nil
	case errors.Is(err, storage.ErrConflict):
		// Another writer moved the head: a transaction of a previous
		// incarnation of this log that committed after it died, or another
		// sequencer. Nothing of this batch was stored. Re-read the head
		// before the next batch; load refuses (fatally) a head that is not
		// consistent with what this sequencer signed.
		s.log.Warn("tree head moved under the sequencer; re-reading it", "size", s.edge.Size(), "err", err)
		s.resync = true
		s.finish(batch, fmt.Errorf("%w: %w", ErrUnavailable, err))
		return nil
	case errors.Is(err, storage.ErrInvalid), errors.Is(err, storage.ErrDuplicate):
		// prepare built a well-formed batch on the stored head, after
		// looking its identities up, so storage refused it because what it
		// holds disagrees with the tree this sequencer extends: a stored
		// tile the batch would rewrite (the head was moved back, below tiles
		// that had grown past it: a rollback) or an identity stored without
		// its entry. Nothing was stored, retrying cannot help, and going on
		// could fork the log.
		fatal := fmt.Errorf("%w: storage refused the batch that extends size %d: it holds data that disagrees with the tree the log signed (rolled back or tampered with? run tlogd fsck): %w", ErrFatal, s.edge.Size(), err)
		s.finish(batch, fatal)
		return fatal
	case err != nil:
		// The batch may or may not be stored: find out from storage before
		// the next one.
		s.log.Error("integrating batch failed", "size", s.edge.Size(), "entries", len(b.Entries), "err", err)
		s.resync = true
		s.finish(batch, fmt.Errorf("%w: %w", ErrUnavailable, err))
		return nil
	}
	s.edge, s.head = b.edge, b.Checkpoint
	s.latest.set(b.Checkpoint)
	if s.cfg.OnCommit != nil {
		s.cfg.OnCommit(b.Checkpoint)
	}
	for _, r := range batch {
		for i := range r.results {
			r.results[i].Checkpoint = b.Checkpoint
		}
	}
	s.finish(batch, nil)
	s.log.Debug("integrated batch", "size", b.edge.Size(), "new", len(b.Entries), "requests", len(batch), "took", s.cfg.Now().Sub(start))
	return nil
}

type prepared struct {
	storage.Batch
	edge *tree.Edge
}

// errPrepare marks the errors of prepare.
var errPrepare = errors.New("preparing batch")

// attempt prepares the batch on the stored tree and integrates it. Errors
// of prepare wrap errPrepare.
func (s *Sequencer) attempt(ctx context.Context, batch []*request, lookup bool) (*prepared, error) {
	b, err := s.prepare(ctx, s.edge, nil, batch, lookup)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPrepare, err)
	}
	return b, s.cfg.Store.Integrate(ctx, s.cfg.Log, &b.Batch)
}

// prepare de-duplicates the batch, assigns indices, extends the tree base,
// checks consistency with it and signs the new checkpoint. base is the
// stored tree, or the tree of a batch whose transaction runs, whose tiles
// baseTiles are then not stored yet. It fills in each request's results but
// for the checkpoint. Without lookup it assumes that no identity of the
// batch is stored yet.
func (s *Sequencer) prepare(ctx context.Context, base *tree.Edge, baseTiles []tree.TileData, batch []*request, lookup bool) (*prepared, error) {
	var ids []tree.Hash
	seen := make(map[tree.Hash]int) // identity -> position in entries, or -1 if stored
	for _, r := range batch {
		for _, it := range r.items {
			if _, ok := seen[it.identity]; !ok {
				seen[it.identity] = -1
				ids = append(ids, it.identity)
			}
		}
	}
	var stored map[tree.Hash]uint64
	if lookup {
		var err error
		if stored, err = s.cfg.Store.LookupIdentities(ctx, s.cfg.Log, ids); err != nil {
			return nil, fmt.Errorf("looking up identities: %w", err)
		}
	}
	size := base.Size()
	var entries []storage.Entry
	var leaves []tree.Hash
	var keyedDups []*Result // duplicates whose stored leaf hash may differ
	for _, r := range batch {
		r.results = make([]Result, len(r.items))
		for i, it := range r.items {
			res := &r.results[i]
			if idx, ok := stored[it.identity]; ok {
				*res = Result{Index: idx, LeafHash: it.leaf, Duplicate: true}
				if it.identity != it.leaf {
					keyedDups = append(keyedDups, res)
				}
				continue
			}
			if pos := seen[it.identity]; pos >= 0 {
				*res = Result{Index: entries[pos].Index, LeafHash: entries[pos].LeafHash, Duplicate: true}
				continue
			}
			seen[it.identity] = len(entries)
			e := storage.Entry{Index: size + uint64(len(entries)), Identity: it.identity, LeafHash: it.leaf, Data: it.data}
			entries = append(entries, e)
			leaves = append(leaves, it.leaf)
			*res = Result{Index: e.Index, LeafHash: it.leaf}
		}
	}
	// An idempotency key names the first entry appended with it; report
	// that entry's leaf hash.
	for _, res := range keyedDups {
		es, err := s.cfg.Store.ReadEntries(ctx, s.cfg.Log, res.Index, res.Index+1)
		if err != nil {
			return nil, fmt.Errorf("reading entry %d: %w", res.Index, err)
		}
		res.LeafHash = es[0].LeafHash
	}

	next, tiles, err := base.Append(leaves)
	if err != nil {
		return nil, fmt.Errorf("%w: extending the tree: %w", ErrFatal, err)
	}
	if len(entries) > 0 {
		if err := s.checkConsistency(ctx, base, next, slices.Concat(baseTiles, tiles)); err != nil {
			return nil, err
		}
	}
	c := checkpoint.Checkpoint{Origin: s.origin, Size: next.Size(), Hash: next.Root()}
	signed, err := checkpoint.Sign(c, s.cfg.Signer)
	if err != nil {
		return nil, fmt.Errorf("%w: signing checkpoint: %w", ErrFatal, err)
	}
	return &prepared{
		Batch: storage.Batch{
			Prev:       storage.TreeHead{Size: base.Size(), Root: base.Root()},
			Entries:    entries,
			Tiles:      tiles,
			Checkpoint: storage.Checkpoint{TreeHead: storage.TreeHead{Size: next.Size(), Root: next.Root()}, Note: signed},
		},
		edge: next,
	}, nil
}

// checkConsistency proves, from the stored tiles and tiles not stored yet,
// that the new tree next extends the signed tree old. It guards against a
// bug or a corrupted tile ever making the log sign a fork.
func (s *Sequencer) checkConsistency(ctx context.Context, old, next *tree.Edge, tiles []tree.TileData) error {
	if old.Size() == 0 {
		return nil
	}
	err := s.extends(ctx, next, old.Size(), old.Root(), tiles)
	if errors.Is(err, errNotExtending) {
		return fmt.Errorf("%w: new tree at %d is not consistent with the signed tree at %d: %w", ErrFatal, next.Size(), old.Size(), err)
	}
	return err
}

// errNotExtending: a tree is not consistent with an earlier one.
var errNotExtending = errors.New("not consistent")

// extends checks, with a consistency proof from the stored tiles (and
// tiles, not stored yet), that the tree next extends the tree of size m
// with root mRoot (0 < m <= next's size). It fails with errNotExtending if
// the proof does not verify, and with ErrFatal if storage lacks a tile.
func (s *Sequencer) extends(ctx context.Context, next *tree.Edge, m uint64, mRoot tree.Hash, tiles []tree.TileData) error {
	p, err := tree.ConsistencyProof(s.tileReader(ctx, tiles), m, next.Size())
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, tree.ErrMissingTile) {
			return fmt.Errorf("%w: building consistency proof %d..%d: %w", ErrFatal, m, next.Size(), err)
		}
		return fmt.Errorf("building consistency proof: %w", err)
	}
	root := next.Root()
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, m, next.Size(), p, mRoot[:], root[:]); err != nil {
		return fmt.Errorf("%w: %w", errNotExtending, err)
	}
	return nil
}

type latestCheckpoint struct {
	mu sync.RWMutex
	cp storage.Checkpoint
}

func (l *latestCheckpoint) set(cp storage.Checkpoint) {
	l.mu.Lock()
	l.cp = cp
	l.mu.Unlock()
}

func (l *latestCheckpoint) get() storage.Checkpoint {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.cp
}

// Package server is the tlog service: it owns the logs of one store, runs a
// sequencer per log, and answers the operations that the gRPC and HTTP
// front ends expose (append, checkpoints, proofs, entries, tiles, receipts,
// log administration). Domain errors from below are mapped to gRPC and HTTP
// status codes in one place, errors.go.
package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"time"
	"unicode"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/policy"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/server/auth"
	"github.com/tlog-dev/tlog/server/keyfile"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/server/witnessing"
	"github.com/tlog-dev/tlog/storage"
)

// Service errors, beside those of storage, tree and sequencer.
var (
	// ErrInvalidArgument: a request that can never succeed as asked.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrOutOfRange: a size or index beyond the current tree.
	ErrOutOfRange = errors.New("out of range")
	// ErrLogStopped: the log's sequencer stopped on a fatal error (see the
	// server log); reads still work, appends do not.
	ErrLogStopped = errors.New("log is not sequencing")
)

// Config configures a Service.
type Config struct {
	// Store holds every log. Required.
	Store storage.Store
	// KeyDir holds one signing key file per log (see package keyfile).
	// Required.
	KeyDir string
	// Sequencer holds the batching settings for every log; its Store, Log,
	// Signer, Verifier and Logger fields are filled in by the Service.
	Sequencer sequencer.Config
	// MaxEntriesPerRead bounds one ReadEntries call (default 1000).
	MaxEntriesPerRead int
	// TileCacheTiles is how many full hash tiles (about 16 KiB each, with
	// their interior nodes) are kept in memory for proofs and tile reads,
	// across all logs, besides the summaries of 32 times as many tiles
	// (256 bytes each, see tree.Cache) (default 4096: at most 64 + 46 MiB).
	TileCacheTiles int
	// BundleCacheBytes bounds the memory of cached full entry bundles
	// (default 32 MiB).
	BundleCacheBytes int
	// Limits bound entries, requests and the append rate (see Limits).
	Limits Limits
	// WitnessPolicy is the default witness policy, a C2SP tlog-policy text
	// (https://c2sp.org/tlog-policy), for every log that has none of its
	// own; empty: none. Its witnesses are asked to cosign the logs'
	// checkpoints (see package witnessing).
	WitnessPolicy string
	// Witnessing configures the witness client; its Store and Logger are
	// filled in by the Service.
	Witnessing witnessing.Config
	// Logger receives the service's logs (default slog.Default()).
	Logger *slog.Logger

	// AdvertiseAddr is the gRPC address at which the other processes
	// sharing the store reach this one, recorded when it wins the
	// leadership of a log (see storage.Elector). Empty: they cannot forward
	// appends to it.
	AdvertiseAddr string
	// NoForwarding makes a process that does not lead a log answer its
	// appends with Unavailable, naming the leader's address, instead of
	// forwarding them to the leader.
	NoForwarding bool
	// ForwardDialOptions are the gRPC dial options of forwarded appends
	// (default: plaintext).
	ForwardDialOptions []grpc.DialOption
	// ElectionInterval is how often a process that does not lead a log
	// tries to take its leadership (default 1s).
	ElectionInterval time.Duration
	// LogScanInterval is how often a process sharing its store with others
	// (a storage.Elector) looks for logs that another process created, to
	// serve them and campaign for their leadership (default 2s).
	LogScanInterval time.Duration
}

// Service runs every log of a store.
type Service struct {
	cfg Config
	log *slog.Logger

	createMu sync.Mutex      // serializes CreateLog and adopt, so racing creators see the winner's log
	unopened map[string]bool // logs adopt could not open, warned about once; under createMu

	metrics *metrics

	// Full tiles and bundles never change, so caching them is safe.
	tileC   *tree.Cache
	bundleC *lru

	limits *limiter

	wit           *witnessing.Witnesser
	defaultPolicy *policy.Policy

	elector storage.Elector // nil: this process leads every log
	fwd     *forwarder

	mu     sync.RWMutex
	logs   map[string]*logState
	runCtx context.Context // set by Run; nil before
	wg     sync.WaitGroup
}

type logState struct {
	info     storage.Log
	signer   note.Signer
	verifier note.Verifier
	elected  chan struct{} // closed once the first election round is over

	mu         sync.Mutex
	seq        *sequencer.Sequencer // while this process sequences the log
	leader     bool                 // this process leads the log
	leaderAddr string               // the leader's address, if another process leads
	stopped    error                // fatal error of the sequencer, if it stopped
	ownPolicy  string               // the log's own witness policy (info.WitnessPolicy is as loaded)
	stored     storage.Checkpoint   // latest checkpoint read from storage, when not sequencing
	storedAt   time.Time
	electedOne sync.Once
}

// New opens every log in the store: it loads each log's key from KeyDir,
// checks that it is the key the log was created with, and loads its
// sequencer (which checks storage against the last signed checkpoint). Call
// Run to start sequencing.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.KeyDir == "" {
		return nil, errors.New("server: Store and KeyDir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxEntriesPerRead <= 0 {
		cfg.MaxEntriesPerRead = 1000
	}
	if cfg.TileCacheTiles <= 0 {
		cfg.TileCacheTiles = 4096
	}
	if cfg.BundleCacheBytes <= 0 {
		cfg.BundleCacheBytes = 32 << 20
	}
	s := &Service{
		cfg:     cfg,
		log:     cfg.Logger,
		logs:    make(map[string]*logState),
		tileC:   tree.NewCache(cfg.TileCacheTiles),
		bundleC: newLRU(cfg.BundleCacheBytes),
	}
	var err error
	if s.limits, err = newLimiter(cfg.Limits); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if s.defaultPolicy, err = parseDefaultPolicy(cfg.WitnessPolicy); err != nil {
		return nil, err
	}
	wcfg := cfg.Witnessing
	wcfg.Store, wcfg.Logger = cfg.Store, s.log
	if s.wit, err = witnessing.New(wcfg); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(s)
	if cfg.ElectionInterval <= 0 {
		cfg.ElectionInterval = time.Second
	}
	s.cfg.ElectionInterval = cfg.ElectionInterval
	if cfg.LogScanInterval <= 0 {
		cfg.LogScanInterval = 2 * time.Second
	}
	s.cfg.LogScanInterval = cfg.LogScanInterval
	s.elector, _ = cfg.Store.(storage.Elector)
	s.fwd = newForwarder(cfg.ForwardDialOptions)
	logs, err := cfg.Store.ListLogs(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing logs: %w", err)
	}
	for _, l := range logs {
		ls, err := s.openStored(ctx, l)
		if err != nil {
			return nil, err
		}
		if s.elector == nil {
			if err := s.load(ctx, ls); err != nil && !errors.Is(err, sequencer.ErrFatal) {
				return nil, err
			}
		}
		s.logs[l.Name] = ls
		s.witness(ls)
	}
	return s, nil
}

// openStored opens a log found in the store, with its key from the key
// directory. When the store is shared with other processes, it also reads
// the log's latest checkpoint, before the log is witnessed, which starts
// from it.
func (s *Service) openStored(ctx context.Context, l storage.Log) (*logState, error) {
	skey, err := keyfile.Load(s.cfg.KeyDir, l.Name)
	if err != nil {
		return nil, fmt.Errorf("log %q: loading its signing key: %w", l.Name, err)
	}
	ls, err := s.openLog(ctx, l, skey)
	if err != nil {
		return nil, err
	}
	if s.elector != nil {
		if _, err := s.latest(ctx, ls, 0); err != nil {
			return nil, fmt.Errorf("log %q: reading its latest checkpoint: %w", l.Name, err)
		}
	}
	return ls, nil
}

// load creates the log's sequencer, which loads and checks its state. A
// fatal error (storage disagrees with what the log signed) stops the log
// alone: its appends fail with ErrLogStopped, its reads go on from storage.
func (s *Service) load(ctx context.Context, ls *logState) error {
	seq, err := s.newSequencer(ctx, ls)
	defer ls.setElected()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.leader = true
	if err != nil {
		if errors.Is(err, sequencer.ErrFatal) {
			s.log.Error("log stopped sequencing: its stored state does not verify; investigate with fsck", "log", ls.info.Name, "err", err)
			ls.stopped = err
		}
		return err
	}
	ls.seq, ls.stopped = seq, nil
	return nil
}

func (s *Service) openLog(ctx context.Context, l storage.Log, skey string) (*logState, error) {
	vkey, err := checkpoint.VerifierKey(skey)
	if err != nil {
		return nil, fmt.Errorf("log %q: %w", l.Name, err)
	}
	if vkey != l.VerifierKey {
		return nil, fmt.Errorf("log %q: the key in %s is not the key the log was created with (%s)", l.Name, keyfile.Path(s.cfg.KeyDir, l.Name), l.VerifierKey)
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("log %q: %w", l.Name, err)
	}
	verifier, err := checkpoint.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("log %q: %w", l.Name, err)
	}
	return &logState{info: l, signer: signer, verifier: verifier, ownPolicy: l.WitnessPolicy, elected: make(chan struct{})}, nil
}

// newSequencer creates a sequencer for the log, loading its state.
func (s *Service) newSequencer(ctx context.Context, ls *logState) (*sequencer.Sequencer, error) {
	cfg := s.cfg.Sequencer
	name := ls.info.Name
	cfg.Store, cfg.Log, cfg.Signer, cfg.Verifier = s.cfg.Store, name, ls.signer, ls.verifier
	cfg.Logger = s.log
	cfg.OnCommit = func(storage.Checkpoint) { s.wit.Notify(name) }
	cfg.SignedFrom = keyfile.SignedPath(s.cfg.KeyDir, name)
	signed, err := keyfile.LoadSigned(s.cfg.KeyDir, name)
	switch {
	case err == nil:
		cfg.Signed = signed
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("log %q: %w", name, err)
	}
	seq, err := sequencer.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("log %q: %w", name, err)
	}
	return seq, nil
}

// Run sequences every log until ctx is done, then flushes what is pooled
// and returns once every sequencer has stopped. A log whose sequencer stops
// on a fatal error stops alone: its appends fail with ErrLogStopped and the
// others go on.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.runCtx != nil {
		s.mu.Unlock()
		return errors.New("server: Run called twice")
	}
	s.runCtx = ctx
	for _, ls := range s.logs {
		s.start(ctx, ls)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.wit.Run(ctx)
	}()
	if s.elector != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.scanLogs(ctx)
		}()
	}
	s.mu.Unlock()
	<-ctx.Done()
	s.wg.Wait()
	s.fwd.close()
	return nil
}

// start runs a log's sequencer, or with an Elector its campaign for the
// log's leadership. s.mu must be held.
func (s *Service) start(ctx context.Context, ls *logState) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if s.elector != nil {
			s.campaign(ctx, ls)
			return
		}
		ls.setElected()
		ls.mu.Lock()
		seq := ls.seq
		ls.mu.Unlock()
		if seq != nil {
			s.runSequencer(ctx, ls, seq)
		}
	}()
}

// runSequencer runs seq until ctx is done or it stops on a fatal error,
// recording its latest checkpoint beside the log's key meanwhile.
func (s *Service) runSequencer(ctx context.Context, ls *logState, seq *sequencer.Sequencer) error {
	stop := s.recordSigned(ls.info.Name, seq)
	err := seq.Run(ctx)
	stop()
	if err != nil {
		s.log.Error("log stopped sequencing to avoid a fork; investigate with fsck before restarting", "log", ls.info.Name, "err", err)
		ls.mu.Lock()
		ls.stopped = err
		ls.mu.Unlock()
	}
	return err
}

// signedInterval is how often a log's latest checkpoint is recorded beside
// its key, if it changed.
const signedInterval = 200 * time.Millisecond

// recordSigned keeps the file of the log's latest signed checkpoint (see
// keyfile.SaveSigned) up to date with seq's, every signedInterval, until
// stop is called, which records it a last time. A failure is logged (once
// until a save succeeds again) and does not stop the log: the file only
// guards against storage going back.
func (s *Service) recordSigned(name string, seq *sequencer.Sequencer) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var (
			savedSize      uint64
			saved, failing bool
		)
		save := func() {
			cp := seq.Latest()
			if saved && cp.Size == savedSize {
				return
			}
			if err := keyfile.SaveSigned(s.cfg.KeyDir, name, cp.Note); err != nil {
				if !failing {
					s.log.Error("cannot record the log's latest signed checkpoint beside its key", "log", name, "err", err)
				}
				failing = true
				return
			}
			savedSize, saved, failing = cp.Size, true, false
		}
		t := time.NewTicker(signedInterval)
		defer t.Stop()
		for {
			save()
			select {
			case <-done:
				save()
				return
			case <-t.C:
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

var logNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)

// CreateLog creates a log: its signing key file (unless one exists for the
// name, with the same origin), and the log with its signed empty checkpoint.
// An empty origin defaults to DefaultOrigin(name).
func (s *Service) CreateLog(ctx context.Context, name, origin string) (storage.Log, error) {
	return s.CreateLogWithPolicy(ctx, name, origin, "")
}

// CreateLogWithPolicy is CreateLog for a log with its own witness policy
// (a C2SP tlog-policy text; empty: none, the server's default applies).
func (s *Service) CreateLogWithPolicy(ctx context.Context, name, origin, witnessPolicy string) (storage.Log, error) {
	if !logNameRE.MatchString(name) {
		return storage.Log{}, fmt.Errorf("%w: log name %q must be 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit", ErrInvalidArgument, name)
	}
	if origin == "" {
		origin = DefaultOrigin(name)
	}
	if err := checkOrigin(origin); err != nil {
		return storage.Log{}, err
	}
	if err := checkPolicySyntax(witnessPolicy); err != nil {
		return storage.Log{}, err
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if _, err := s.cfg.Store.GetLog(ctx, name); err == nil {
		return storage.Log{}, fmt.Errorf("log %q: %w", name, storage.ErrLogExists)
	} else if !errors.Is(err, storage.ErrLogNotFound) {
		return storage.Log{}, err
	}
	skey, _, err := keyfile.LoadOrCreate(s.cfg.KeyDir, name, origin)
	if err != nil {
		return storage.Log{}, fmt.Errorf("log %q: signing key: %w", name, err)
	}
	vkey, err := checkpoint.VerifierKey(skey)
	if err != nil {
		return storage.Log{}, err
	}
	if _, _, err := checkPolicy(witnessPolicy, vkey); err != nil {
		return storage.Log{}, err
	}
	signer, err := checkpoint.NewSigner(skey)
	if err != nil {
		return storage.Log{}, err
	}
	root := tree.EmptyRoot()
	signed, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: 0, Hash: root}, signer)
	if err != nil {
		return storage.Log{}, err
	}
	l := storage.Log{Name: name, Origin: origin, VerifierKey: vkey, CreatedAt: time.Now().UTC().Truncate(time.Microsecond), WitnessPolicy: witnessPolicy}
	if err := s.cfg.Store.CreateLog(ctx, l, storage.Checkpoint{TreeHead: storage.TreeHead{Root: root}, Note: signed}); err != nil {
		return storage.Log{}, err
	}
	ls, err := s.openLog(ctx, l, skey)
	if err != nil {
		return storage.Log{}, err
	}
	if s.elector == nil {
		if err := s.load(ctx, ls); err != nil {
			return storage.Log{}, err
		}
	}
	s.witness(ls)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs[name] = ls
	if s.runCtx != nil {
		s.start(s.runCtx, ls)
	}
	s.log.Info("created log", "log", name, "origin", origin, "verifier_key", vkey)
	return l, nil
}

// DefaultOrigin is the origin of a log created without one.
func DefaultOrigin(name string) string { return "tlog.localhost/logs/" + name }

// checkOrigin accepts origins that are valid signed-note key names, so the
// log's key can be named after its origin as tlog-checkpoint recommends.
func checkOrigin(origin string) error {
	if len(origin) > 256 {
		return fmt.Errorf("%w: origin is longer than 256 bytes", ErrInvalidArgument)
	}
	for _, r := range origin {
		// The key name rules of checkpoint.GenerateKey: no Unicode space
		// or control character either (else key creation fails, later).
		if r <= ' ' || r == '+' || r == 0x7f || r == 0xfffd || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: origin %q must be printable, without spaces or '+'", ErrInvalidArgument, origin)
		}
	}
	if origin == "" {
		return fmt.Errorf("%w: empty origin", ErrInvalidArgument)
	}
	return nil
}

// LogInfo describes a log, its current size and who sequences it.
type LogInfo struct {
	storage.Log
	Size uint64
	// Leader: this process leads the log (always, on a store without
	// storage.Elector).
	Leader bool
	// LeaderAddr is the advertised gRPC address of the log's leader, if
	// known (this process's own when it leads).
	LeaderAddr string
	// Sequencing: this process sequences the log now (it leads it, and its
	// sequencer has not stopped).
	Sequencing bool
	// Stopped is the fatal error that stopped this process's sequencer of
	// the log, if it did.
	Stopped error
}

// info describes ls.
func (s *Service) info(ctx context.Context, ls *logState) LogInfo {
	leader, addr, sequencing, stopped := ls.leadership()
	return LogInfo{Log: ls.describe(), Size: s.size(ctx, ls), Leader: leader, LeaderAddr: addr, Sequencing: sequencing, Stopped: stopped}
}

func (s *Service) state(name string) (*logState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ls, ok := s.logs[name]
	if !ok {
		return nil, fmt.Errorf("log %q: %w", name, storage.ErrLogNotFound)
	}
	return ls, nil
}

// GetLog describes one log.
func (s *Service) GetLog(ctx context.Context, name string) (LogInfo, error) {
	ls, err := s.state(name)
	if err != nil {
		return LogInfo{}, err
	}
	return s.info(ctx, ls), nil
}

// ListLogs describes every log, ordered by name; only those that the
// auth.LogFilter of ctx keeps, if it has one.
func (s *Service) ListLogs(ctx context.Context) []LogInfo {
	keep := auth.LogFilter(ctx)
	s.mu.RLock()
	states := make([]*logState, 0, len(s.logs))
	for _, ls := range s.logs {
		if keep == nil || keep(ls.info.Name) {
			states = append(states, ls)
		}
	}
	s.mu.RUnlock()
	out := make([]LogInfo, 0, len(states))
	for _, ls := range states {
		out = append(out, s.info(ctx, ls))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Verifier returns the note verifier of a log's key.
func (s *Service) Verifier(name string) (note.Verifier, error) {
	ls, err := s.state(name)
	if err != nil {
		return nil, err
	}
	return ls.verifier, nil
}

// Append appends entries to a log and returns once they are durable. On a
// process that does not lead the log, it forwards them to the leader (see
// Config.NoForwarding).
func (s *Service) Append(ctx context.Context, log string, entries []sequencer.Entry) (res []sequencer.Result, err error) {
	start := time.Now()
	ls, err := s.state(log)
	if err != nil {
		return nil, err
	}
	// Only known logs are counted, so that label values stay bounded.
	defer func() { s.metrics.observeAppend(log, start, res, err) }()
	select {
	case <-ls.elected:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ls.mu.Lock()
	seq, leader, addr, stopped := ls.seq, ls.leader, ls.leaderAddr, ls.stopped
	ls.mu.Unlock()
	if stopped != nil {
		return nil, fmt.Errorf("%w: %w", ErrLogStopped, stopped)
	}
	if err := s.limits.check(ctx, entries); err != nil {
		return nil, err
	}
	if !leader {
		return s.forward(ctx, ls, addr, entries)
	}
	if seq == nil {
		return nil, fmt.Errorf("%w: log %q: this process is taking over its sequencing; retry", ErrNotLeader, log)
	}
	res, err = seq.Add(ctx, entries)
	if errors.Is(err, sequencer.ErrFatal) {
		return nil, fmt.Errorf("%w: %w", ErrLogStopped, err)
	}
	return res, err
}

// Checkpoint returns the latest checkpoint (size 0) or the one signed at
// size.
func (s *Service) Checkpoint(ctx context.Context, log string, size uint64) (storage.Checkpoint, error) {
	ls, err := s.state(log)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	latest, err := s.latest(ctx, ls, size)
	if err != nil {
		return storage.Checkpoint{}, err
	}
	if size == 0 || size == latest.Size {
		return latest, nil
	}
	if size > latest.Size {
		return storage.Checkpoint{}, fmt.Errorf("%w: tree size %d is beyond the log's size %d", ErrOutOfRange, size, latest.Size)
	}
	cp, err := s.cfg.Store.CheckpointAt(ctx, log, size)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Checkpoint{}, fmt.Errorf("the log signed no checkpoint at size %d: %w", size, err)
	}
	return cp, err
}

// tiles reads a log's hash tiles through the tile cache, and slices of
// tiles if the store can read them.
func (s *Service) tiles(ctx context.Context, log string) tree.TileReader {
	r := storeTiles{ctx: ctx, log: log, s: s.cfg.Store}
	if sr, ok := s.cfg.Store.(storage.SliceReader); ok {
		return s.tileC.Reader(log, storeSlices{r, sr})
	}
	return s.tileC.Reader(log, r)
}

// storeTiles is a tree.TileReader of one log of a store.
type storeTiles struct {
	ctx context.Context
	log string
	s   storage.Reader
}

func (r storeTiles) ReadTiles(ts []tile.Tile) ([][]byte, error) {
	return r.s.ReadTiles(r.ctx, r.log, ts)
}

// storeSlices is a tree.SliceReader of one log of a store.
type storeSlices struct {
	storeTiles
	sr storage.SliceReader
}

func (r storeSlices) ReadTileSlices(ss []tree.TileSlice) ([][]byte, error) {
	return r.sr.ReadTileSlices(r.ctx, r.log, ss)
}

// InclusionProof proves that leaf index is in the tree of the given size (0:
// the latest), and returns the checkpoint signed at that size.
func (s *Service) InclusionProof(ctx context.Context, log string, index, size uint64) ([][]byte, storage.Checkpoint, error) {
	cp, err := s.Checkpoint(ctx, log, size)
	if err != nil {
		return nil, storage.Checkpoint{}, err
	}
	if index >= cp.Size {
		return nil, storage.Checkpoint{}, fmt.Errorf("%w: index %d is not in the tree of size %d", ErrOutOfRange, index, cp.Size)
	}
	p, err := tree.InclusionProof(s.tiles(ctx, log), index, cp.Size)
	if err != nil {
		return nil, storage.Checkpoint{}, err
	}
	return p, cp, nil
}

// FindLeaf returns the index of the first entry with the given leaf hash (or
// identity).
func (s *Service) FindLeaf(ctx context.Context, log string, leafHash []byte) (uint64, error) {
	if _, err := s.state(log); err != nil {
		return 0, err
	}
	if len(leafHash) != 32 {
		return 0, fmt.Errorf("%w: a leaf hash has 32 bytes, not %d", ErrInvalidArgument, len(leafHash))
	}
	idx, err := s.cfg.Store.FindLeaf(ctx, log, tree.Hash(leafHash))
	if errors.Is(err, storage.ErrNotFound) {
		return 0, fmt.Errorf("no entry with leaf hash %x: %w", leafHash, err)
	}
	return idx, err
}

// ConsistencyProof proves that the tree of size to (0: the latest) extends
// the tree of size from, and returns the checkpoint signed at to.
func (s *Service) ConsistencyProof(ctx context.Context, log string, from, to uint64) ([][]byte, storage.Checkpoint, error) {
	cp, err := s.Checkpoint(ctx, log, to)
	if err != nil {
		return nil, storage.Checkpoint{}, err
	}
	if from == 0 {
		return nil, storage.Checkpoint{}, fmt.Errorf("%w: the first size must be at least 1 (every tree extends the empty tree)", ErrInvalidArgument)
	}
	if from > cp.Size {
		if to == 0 {
			return nil, storage.Checkpoint{}, fmt.Errorf("%w: size %d is beyond the log's size %d", ErrOutOfRange, from, cp.Size)
		}
		return nil, storage.Checkpoint{}, fmt.Errorf("%w: first size %d is greater than second size %d", ErrInvalidArgument, from, cp.Size)
	}
	p, err := tree.ConsistencyProof(s.tiles(ctx, log), from, cp.Size)
	if err != nil {
		return nil, storage.Checkpoint{}, err
	}
	return p, cp, nil
}

// Entries returns entries [start, end), at most MaxEntriesPerRead of them
// (fewer than asked is not an error: callers continue from the last).
func (s *Service) Entries(ctx context.Context, log string, start, end uint64) ([]storage.Entry, error) {
	ls, err := s.state(log)
	if err != nil {
		return nil, err
	}
	cp, err := s.latest(ctx, ls, end)
	if err != nil {
		return nil, err
	}
	size := cp.Size
	switch {
	case start > end:
		return nil, fmt.Errorf("%w: start %d is after end %d", ErrInvalidArgument, start, end)
	case end > size:
		return nil, fmt.Errorf("%w: end %d is beyond the log's size %d", ErrOutOfRange, end, size)
	}
	end = min(end, start+uint64(s.cfg.MaxEntriesPerRead))
	return s.cfg.Store.ReadEntries(ctx, log, start, end)
}

// Tile returns a hash tile or entry bundle as tlog-tiles serves it. A tile
// (or a partial width) that the latest tree does not have is ErrNotFound.
func (s *Service) Tile(ctx context.Context, log string, t tile.Tile) ([]byte, error) {
	ls, err := s.state(log)
	if err != nil {
		return nil, err
	}
	cp, err := s.latest(ctx, ls, 0)
	if err != nil {
		return nil, err
	}
	size := cp.Size
	if w := tile.WidthAt(t.Level, t.Index, size); w < t.Width {
		return nil, fmt.Errorf("%s is not in the tree of size %d: %w", t.Path(), size, storage.ErrNotFound)
	}
	if t.IsEntries() {
		key := bundleKey{log, t.Index}
		if b, ok := s.bundleC.get(key); ok && t.IsFull() {
			return b, nil
		}
		start := t.Index * tile.Width
		es, err := s.cfg.Store.ReadEntries(ctx, log, start, start+uint64(t.Width))
		if err != nil {
			return nil, err
		}
		var b []byte
		for _, e := range es {
			b = tile.AppendBundleEntry(b, e.Data)
		}
		if t.IsFull() {
			s.bundleC.put(key, b)
		}
		return b, nil
	}
	data, err := s.tiles(ctx, log).ReadTiles([]tile.Tile{t})
	if err != nil {
		return nil, err
	}
	return data[0][:t.Width*tile.HashSize], nil
}

// Receipt returns a C2SP tlog-proof for leaf index in the tree of the given
// size (0: latest).
func (s *Service) Receipt(ctx context.Context, log string, index, size uint64) ([]byte, error) {
	p, cp, err := s.InclusionProof(ctx, log, index, size)
	if err != nil {
		return nil, err
	}
	return receipt.Receipt{Index: index, Proof: p, Checkpoint: cp.Note}.Marshal(), nil
}

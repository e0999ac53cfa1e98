package client

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/tree"
	tlogv1 "github.com/tlog-dev/tlog/proto/tlog/v1"
)

var (
	// ErrVerification reports an answer of the server that its signatures
	// or proofs do not back. Every verification failure wraps it, including
	// ErrRollback, ErrFork and ErrWitnessPolicy.
	ErrVerification = errors.New("verification failed")

	// ErrRollback reports a latest checkpoint smaller than the trusted one:
	// the log, or the replica that answered, went back in time.
	ErrRollback = errors.New("log rolled back")

	// ErrFork reports a checkpoint that is not consistent with the trusted
	// one: another root hash for the same size, or a consistency proof that
	// does not verify. The log showed two different histories.
	ErrFork = errors.New("log forked")

	// ErrWitnessPolicy reports that no checkpoint that contains the entry
	// carries the cosignatures a [WithCosignatureVerifiers] policy asks for.
	ErrWitnessPolicy = errors.New("witness policy not satisfied")

	// ErrClosed is returned by Append and AppendAndProve after Close.
	ErrClosed = errors.New("client closed")
)

// Defaults of Config.
const (
	DefaultMaxBatch         = 1000
	DefaultMaxBatchBytes    = 3 << 20
	DefaultMaxBatchDelay    = 10 * time.Millisecond
	DefaultMaxInFlightBytes = 64 << 20
)

// Config configures a Client. Conn, Log and VerifierKey are required; the
// other fields have defaults.
type Config struct {
	// Conn is the connection to the tlog server. The caller creates it (and
	// so chooses transport security, credentials and interceptors) and
	// closes it after Close.
	Conn grpc.ClientConnInterface

	// Log is the name of the log.
	Log string

	// VerifierKey is the log's note verifier key,
	// "<origin>+<key ID>+<base64 key>", obtained out of band (for example
	// from the operator's documentation). Everything the client returns is
	// verified with it; the client never trusts a key the server reports.
	VerifierKey string

	// TrustedState, if set, keeps the newest verified checkpoint between
	// runs (see [FileStore]). New loads it; the client stores every newer
	// checkpoint it verifies. One Client at a time may use a store.
	TrustedState TrustedStore

	// MaxBatch is the most entries sent in one Append RPC (default
	// DefaultMaxBatch).
	MaxBatch int

	// MaxBatchBytes bounds the entry data and idempotency keys sent in one
	// Append RPC (default DefaultMaxBatchBytes, under gRPC's default 4 MiB
	// message limit). A single larger entry is sent alone.
	MaxBatchBytes int

	// MaxBatchDelay is the longest an entry waits for others to share its
	// RPC (default DefaultMaxBatchDelay). Negative: no wait, each batch
	// takes what is pooled when the previous one was sent.
	MaxBatchDelay time.Duration

	// MaxInFlightBytes bounds the entries (data, key and some overhead)
	// that are pooled or in an RPC; beyond it Append blocks until they
	// complete or its context ends (default DefaultMaxInFlightBytes). An
	// entry larger than the bound is let in when nothing else is in flight.
	MaxInFlightBytes int64

	// Retry says how failed RPCs are retried.
	Retry RetryPolicy

	// Logger receives the client's logs: retries (debug), failed batches
	// (warn) and verification failures (error). Default: slog.Default().
	Logger *slog.Logger
}

// Client appends to and reads from one log, verifying what the server
// answers. Its methods may be called concurrently. Create it with New and
// call Close when done.
type Client struct {
	cfg      Config
	log      *slog.Logger
	rpc      tlogv1.LogServiceClient
	verifier note.Verifier
	budget   *budget

	mu         sync.Mutex
	queue      []*pending
	queueBytes int
	closed     bool
	wake       chan struct{} // wakes the batcher; capacity 1

	batcherDone chan struct{}
	batches     sync.WaitGroup
	closeOnce   sync.Once

	// advanceMu serializes changes of the trusted state, RPCs included;
	// stateMu guards trusted and known, so that reading them never waits
	// for an RPC.
	advanceMu sync.Mutex
	stateMu   sync.Mutex
	trusted   *VerifiedCheckpoint  // nil: none yet
	known     map[uint64]tree.Hash // sizes proven consistent with trusted

	// Chunk sizes of Entries; tests lower them.
	chunkEntries int
	chunkBytes   int
}

// VerifiedCheckpoint is a checkpoint of the log whose signature verified with
// the log's key.
type VerifiedCheckpoint struct {
	checkpoint.Checkpoint
	// Note is the signed note as the server sent it, with any cosignatures.
	// Results of one batch share it: do not modify it.
	Note []byte
}

// New returns a client of the log cfg.Log on cfg.Conn. If cfg.TrustedState
// holds a checkpoint, New verifies it with the log's key (failing with an
// error wrapping ErrVerification if it does not verify) and trusts it.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("client: Config.Conn is required")
	case cfg.Log == "":
		return nil, errors.New("client: Config.Log is required")
	case cfg.VerifierKey == "":
		return nil, errors.New("client: Config.VerifierKey is required (the log's verifier key, obtained out of band)")
	}
	v, err := checkpoint.NewVerifier(cfg.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("client: Config.VerifierKey: %w", err)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.MaxBatchDelay == 0 {
		cfg.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	cfg.Retry = cfg.Retry.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{
		cfg:          cfg,
		log:          cfg.Logger.With("log", cfg.Log),
		rpc:          tlogv1.NewLogServiceClient(cfg.Conn),
		verifier:     v,
		budget:       newBudget(cfg.MaxInFlightBytes),
		wake:         make(chan struct{}, 1),
		batcherDone:  make(chan struct{}),
		known:        make(map[uint64]tree.Hash),
		chunkEntries: 4096,
		chunkBytes:   8 << 20,
	}
	if cfg.TrustedState != nil {
		signed, err := cfg.TrustedState.Load()
		if err != nil {
			return nil, fmt.Errorf("client: loading the trusted state: %w", err)
		}
		if signed != nil {
			vc, err := c.open(signed)
			if err != nil {
				return nil, fmt.Errorf("client: the stored trusted state: %w", err)
			}
			c.trusted = &vc
			c.known[vc.Size] = vc.Hash
		}
	}
	go c.batcher()
	return c, nil
}

// Close sends what is pooled, waits for every batch in flight to complete
// (which, if the server is unreachable, takes as long as Config.Retry
// allows) and makes later Appends fail with ErrClosed. Reads still work
// after Close. It does not close Config.Conn. Close always returns nil; the
// outcome of each entry goes to its Append call.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.signal()
		<-c.batcherDone
		c.batches.Wait()
	})
	return nil
}

// Trusted returns the client's trusted checkpoint: the newest it verified,
// or the one loaded from Config.TrustedState. ok is false if there is none
// yet.
func (c *Client) Trusted() (vc VerifiedCheckpoint, ok bool) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.trusted == nil {
		return VerifiedCheckpoint{}, false
	}
	return *c.trusted, true
}

// open verifies a signed checkpoint with the log's key.
func (c *Client) open(signed []byte) (VerifiedCheckpoint, error) {
	cp, _, err := checkpoint.Open(signed, c.verifier)
	if err != nil {
		return VerifiedCheckpoint{}, c.failf("checkpoint: %w", err)
	}
	return VerifiedCheckpoint{Checkpoint: cp, Note: signed}, nil
}

// failf returns an error wrapping ErrVerification, and logs it.
func (c *Client) failf(format string, args ...any) error {
	err := fmt.Errorf("%w: "+format, append([]any{ErrVerification}, args...)...)
	c.log.Error("verification failed", "err", err)
	return err
}

package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/server/auth"
	"github.com/tlog-dev/tlog/server/sequencer"
)

// Limit errors. Both map to gRPC ResourceExhausted; the message says which
// limit and by how much.
var (
	// ErrTooLarge: a request over a size or count limit (HTTP 413). Retrying
	// it unchanged fails again.
	ErrTooLarge = errors.New("request over a limit")
	// ErrRateLimited: a caller over its append rate (HTTP 429 with
	// Retry-After). Errors that wrap it are *RateLimitError.
	ErrRateLimited = errors.New("append rate exceeded")
)

// Defaults of Limits.
const (
	DefaultMaxEntriesPerRequest = 10000
	DefaultMaxRequestBytes      = 16 << 20
	DefaultMaxConcurrentStreams = 1024
)

// Limits bound what one request and one caller may ask of the service. The
// zero value means the defaults. Requests over a limit are refused before
// they reach the sequencer, whole: none of their entries is stored.
type Limits struct {
	// MaxEntrySize is the largest entry in bytes (default, and at most,
	// tile.MaxEntrySize = 65535: the entry bundle format's bound). Larger
	// entries: ErrTooLarge (ResourceExhausted, HTTP 413).
	MaxEntrySize int
	// MaxEntriesPerRequest is the most entries in one Append (default
	// DefaultMaxEntriesPerRequest). More: ErrTooLarge (ResourceExhausted).
	MaxEntriesPerRequest int
	// AppendRate is the sustained rate, in entries per second, at which one
	// caller may append: a token bucket per caller name (auth.Identity.Name;
	// anonymous callers, and all callers when authentication is off, share
	// one bucket). 0: unlimited. Beyond it: ErrRateLimited
	// (ResourceExhausted, HTTP 429 with Retry-After).
	AppendRate float64
	// AppendBurst is how many entries a caller may append at once above the
	// rate (default: one second's worth, at least 1). A request of more
	// entries than the burst is accepted when the bucket is full and leaves
	// it in debt, so the rate holds over time.
	AppendBurst int
	// MaxRequestBytes bounds one gRPC request message (default
	// DefaultMaxRequestBytes); gRPC refuses larger ones with
	// ResourceExhausted. See GRPCServerOptions. (HTTP add bodies are bounded
	// by MaxEntrySize.)
	MaxRequestBytes int
	// MaxConcurrentStreams bounds the concurrent calls on one gRPC
	// connection (default DefaultMaxConcurrentStreams); calls beyond it wait
	// for a free stream. See GRPCServerOptions.
	MaxConcurrentStreams int
}

// withDefaults fills in the defaults and checks the limits.
func (l Limits) withDefaults() (Limits, error) {
	switch {
	case l.MaxEntrySize == 0:
		l.MaxEntrySize = tile.MaxEntrySize
	case l.MaxEntrySize < 1 || l.MaxEntrySize > tile.MaxEntrySize:
		return l, fmt.Errorf("the entry size limit %d is not between 1 and %d", l.MaxEntrySize, tile.MaxEntrySize)
	}
	if l.MaxEntriesPerRequest <= 0 {
		l.MaxEntriesPerRequest = DefaultMaxEntriesPerRequest
	}
	if l.AppendRate < 0 || math.IsNaN(l.AppendRate) || math.IsInf(l.AppendRate, 0) {
		return l, fmt.Errorf("the append rate %v is not a non-negative number", l.AppendRate)
	}
	if l.AppendBurst <= 0 {
		l.AppendBurst = max(1, int(math.Ceil(l.AppendRate)))
	}
	if l.MaxRequestBytes <= 0 {
		l.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if l.MaxConcurrentStreams <= 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	return l, nil
}

// GRPCServerOptions returns the gRPC server options that enforce
// MaxRequestBytes and MaxConcurrentStreams. The limits must be valid (as
// New checks).
func (l Limits) GRPCServerOptions() []grpc.ServerOption {
	l, _ = l.withDefaults()
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(l.MaxRequestBytes),
		grpc.MaxConcurrentStreams(uint32(min(l.MaxConcurrentStreams, math.MaxUint32))),
	}
}

// RateLimitError refuses an append over its caller's rate.
type RateLimitError struct {
	Caller string        // the caller's name; empty: anonymous
	Rate   float64       // entries per second
	Burst  int           // entries
	Wait   time.Duration // until the request would be accepted
}

func (e *RateLimitError) Error() string {
	who := "anonymous callers"
	if e.Caller != "" {
		who = e.Caller
	}
	return fmt.Sprintf("%v: %s may append %g entries/s (burst %d); retry in %v", ErrRateLimited, who, e.Rate, e.Burst, e.Wait.Round(time.Millisecond))
}

func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// RetryAfter is how long to wait before retrying.
func (e *RateLimitError) RetryAfter() time.Duration { return e.Wait }

// limiter enforces Limits on appends.
type limiter struct {
	l   Limits
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket // by caller name; bounded by the tokens file
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(l Limits) (*limiter, error) {
	l, err := l.withDefaults()
	if err != nil {
		return nil, err
	}
	return &limiter{l: l, now: time.Now, buckets: map[string]*bucket{}}, nil
}

// check refuses entries over the size and count limits, then takes them
// from the caller's bucket.
func (lm *limiter) check(ctx context.Context, entries []sequencer.Entry) error {
	if len(entries) > lm.l.MaxEntriesPerRequest {
		return fmt.Errorf("%w: %d entries in one request, over the limit of %d", ErrTooLarge, len(entries), lm.l.MaxEntriesPerRequest)
	}
	for i, e := range entries {
		if len(e.Data) > lm.l.MaxEntrySize {
			return fmt.Errorf("%w: entry %d has %d bytes, over the limit of %d", ErrTooLarge, i, len(e.Data), lm.l.MaxEntrySize)
		}
	}
	if lm.l.AppendRate == 0 || len(entries) == 0 {
		return nil
	}
	var name string
	if id := auth.FromContext(ctx); id != nil {
		name = id.Name
	}
	if wait := lm.take(name, len(entries)); wait > 0 {
		return &RateLimitError{Caller: name, Rate: lm.l.AppendRate, Burst: lm.l.AppendBurst, Wait: wait}
	}
	return nil
}

// take takes n tokens from name's bucket, or returns how long until it
// could.
func (lm *limiter) take(name string, n int) time.Duration {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	now := lm.now()
	burst := float64(lm.l.AppendBurst)
	b, ok := lm.buckets[name]
	if !ok {
		b = &bucket{tokens: burst, last: now}
		lm.buckets[name] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(burst, b.tokens+el.Seconds()*lm.l.AppendRate)
	}
	b.last = now
	need := min(float64(n), burst)
	if b.tokens >= need {
		b.tokens -= float64(n)
		return 0
	}
	return time.Duration(math.Ceil((need - b.tokens) / lm.l.AppendRate * float64(time.Second)))
}

// retryAfter returns the Retry-After header for err: the seconds a
// rate-limited caller should wait (at least 1), or 1 for other transient
// refusals.
func retryAfter(err error) string {
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return fmt.Sprint(max(1, int64(math.Ceil(rl.Wait.Seconds()))))
	}
	return "1"
}

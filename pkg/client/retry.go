package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RetryPolicy says how the client retries failed RPCs. It retries only
// transient failures: the codes Unavailable and Aborted, ResourceExhausted
// with a RetryInfo detail (pushback, rate limits),
// and DeadlineExceeded when the attempt ran out of time but the caller's
// context did not. It never retries other codes (InvalidArgument, NotFound,
// OutOfRange, FailedPrecondition, ...) nor failed verifications. Appends are
// safe to retry because every entry has an idempotency key.
//
// The zero value means the defaults.
type RetryPolicy struct {
	// MaxAttempts is the most attempts of one call, the first included
	// (default 8). 1 disables retries.
	MaxAttempts int
	// BaseDelay is the wait before the second attempt (default 100ms). Each
	// later wait doubles, up to MaxDelay (default 5s). Each wait is
	// jittered: a random duration between half of it and all of it.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// AttemptTimeout bounds each attempt of a unary RPC (default 30s;
	// negative: no bound beyond the caller's context). It does not apply to
	// the GetEntries stream.
	AttemptTimeout time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 8
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 100 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 5 * time.Second
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = p.BaseDelay
	}
	if p.AttemptTimeout == 0 {
		p.AttemptTimeout = 30 * time.Second
	}
	return p
}

// delay returns the jittered wait after the given failed attempt (1-based).
func (p RetryPolicy) delay(attempt int) time.Duration {
	d := p.MaxDelay
	if shift := attempt - 1; shift < 32 {
		if b := p.BaseDelay << shift; b > 0 && b < d {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

// retryable reports whether a failed RPC may be retried: its code is a
// transient one. It is only asked when the caller's context is still live, so
// DeadlineExceeded is that of the attempt (or of the server), not the
// caller's.
//
// ResourceExhausted is retried only when the server says when to retry (a
// RetryInfo detail: tlogd's pushback and rate limit); without it, it is a
// limit such as an oversized request, which no retry can pass.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		st, _ := status.FromError(err)
		for _, d := range st.Details() {
			if _, ok := d.(*errdetails.RetryInfo); ok {
				return true
			}
		}
	}
	return false
}

// retry calls call until it succeeds, fails for good, or ctx ends; each
// attempt gets its own deadline. method names the RPC in errors and logs.
func (c *Client) retry(ctx context.Context, method string, call func(ctx context.Context) error) error {
	p := c.cfg.Retry
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if p.AttemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, p.AttemptTimeout)
		}
		err := call(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("client: %s: %w", method, ctx.Err())
		}
		if !retryable(err) || attempt >= p.MaxAttempts {
			return fmt.Errorf("client: %s: %w", method, err)
		}
		d := p.delay(attempt)
		c.log.Debug("retrying", "method", method, "attempt", attempt, "delay", d, "err", err)
		if err := sleep(ctx, d); err != nil {
			return fmt.Errorf("client: %s: %w", method, err)
		}
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// budget bounds the bytes in flight.
type budget struct {
	mu    sync.Mutex
	max   int64
	used  int64
	freed chan struct{} // closed, and replaced, when bytes are released
}

func newBudget(max int64) *budget {
	return &budget{max: max, freed: make(chan struct{})}
}

// acquire takes n bytes, waiting until they fit or ctx ends. n bytes always
// fit when nothing is in flight, so that an entry larger than the bound
// cannot block forever.
func (b *budget) acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives back n bytes.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

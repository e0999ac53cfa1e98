package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tlog-dev/tlog/server/auth"
	"github.com/tlog-dev/tlog/server/sequencer"
)

// TestLimiterBucket checks the token bucket with a fake clock: bursts,
// refill, debt left by a request larger than the burst, and one bucket per
// caller.
func TestLimiterBucket(t *testing.T) {
	lm, err := newLimiter(Limits{AppendRate: 10, AppendBurst: 5})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	lm.now = func() time.Time { return now }
	alice := auth.NewContext(context.Background(), &auth.Identity{Name: "alice"})
	bob := auth.NewContext(context.Background(), &auth.Identity{Name: "bob"})
	n := func(k int) []sequencer.Entry { return make([]sequencer.Entry, k) }
	wait := func(ctx context.Context, k int) time.Duration {
		t.Helper()
		err := lm.check(ctx, n(k))
		if err == nil {
			return 0
		}
		var rl *RateLimitError
		if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
			t.Fatalf("check: %v, want a *RateLimitError", err)
		}
		return rl.Wait
	}
	steps := []struct {
		ctx     context.Context
		advance time.Duration
		entries int
		wait    time.Duration
	}{
		{alice, 0, 5, 0},                                // the burst
		{alice, 0, 1, 100 * time.Millisecond},           // empty: one entry is 1/10 s away
		{bob, 0, 5, 0},                                  // bob has his own bucket
		{alice, 100 * time.Millisecond, 1, 0},           // refilled one
		{alice, 0, 2, 200 * time.Millisecond},           // refused: nothing taken
		{alice, time.Second, 20, 0},                     // full bucket: a large request passes, leaving 15 of debt
		{alice, time.Second, 1, 600 * time.Millisecond}, // -15+10 = -5: 6 entries short of 1
		{alice, 600 * time.Millisecond, 1, 0},
		{context.Background(), 0, 5, 0}, // anonymous callers share one bucket
		{context.Background(), 0, 1, 100 * time.Millisecond},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := wait(s.ctx, s.entries); got != s.wait {
			t.Errorf("step %d: wait %v, want %v", i, got, s.wait)
		}
	}
}

func TestLimitsValidation(t *testing.T) {
	for _, l := range []Limits{
		{MaxEntrySize: 65536},
		{MaxEntrySize: -1},
		{AppendRate: -1},
	} {
		if _, err := newLimiter(l); err == nil {
			t.Errorf("newLimiter(%+v): no error", l)
		}
	}
	l, err := Limits{AppendRate: 2.5}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{MaxEntrySize: 65535, MaxEntriesPerRequest: 10000, AppendRate: 2.5, AppendBurst: 3, MaxRequestBytes: 16 << 20, MaxConcurrentStreams: 1024}
	if l != want {
		t.Errorf("defaults: %+v, want %+v", l, want)
	}
	if got := retryAfter(&RateLimitError{Wait: 1500 * time.Millisecond}); got != "2" {
		t.Errorf("Retry-After of 1.5s = %q, want 2", got)
	}
	if got := retryAfter(sequencer.ErrPushback); got != "1" {
		t.Errorf("Retry-After of a pushback = %q, want 1", got)
	}
}

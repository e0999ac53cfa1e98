package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// opFunc performs one request for worker w (0 <= w < concurrency) and
// returns how many units (entries, proofs, tiles, rows) it completed. Each
// worker calls it sequentially, so per-worker state needs no locking.
type opFunc func(ctx context.Context, w int) (units int, err error)

// runner drives an opFunc from Concurrency workers for a warm-up and then a
// measured window.
//
// Closed loop (Rate 0): each worker sends its next request when the previous
// one is answered; latency is measured from the send.
//
// Open loop (Rate > 0): request k is scheduled at start + k/Rate, whatever the
// server does. A free worker takes the next slot, waits for its time and
// sends it; latency is measured from the SCHEDULED time, so when the server
// falls behind, the waiting shows up in the latency instead of silently
// lowering the offered load (coordinated omission). Slots of the measured
// window that no worker could send before the window ended are counted in
// Missed.
type runner struct {
	Concurrency int
	Rate        float64 // requests per second; 0 = closed loop
	Warmup      time.Duration
	Duration    time.Duration
	Op          opFunc
	// Timeout bounds each request (0: none).
	Timeout time.Duration
	// Backoff is how long a closed-loop worker pauses after a pushback
	// error (isPushback), so that it does not spin on a full server.
	Backoff time.Duration
	// AtStart and AtEnd, if set, are called when the measured window starts
	// and ends (from their own goroutine), to take snapshots such as the
	// tree size and CPU time.
	AtStart, AtEnd func()
	// Progress, if set, receives a status line once a second.
	Progress func(line string)
	// Name labels the progress lines.
	Name string
	// Unit names the units in progress lines ("entries", "proofs").
	Unit string

	start, mStart, mEnd time.Time

	hist   histogram     // latency of requests scheduled (or sent) in the window
	ops    atomic.Uint64 // successful requests answered in the window
	units  atomic.Uint64 // their units
	sent   atomic.Uint64 // requests scheduled in the window and sent
	missed uint64        // open loop: slots of the window never sent
	errs   errorCounts   // errors of requests scheduled in the window

	next atomic.Uint64 // open loop: next slot

	// live counters over the whole run, for progress lines
	liveUnits, liveErrs, inflight atomic.Int64
}

// errorCounts counts errors by kind.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (e *errorCounts) add(kind string) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]uint64{}
	}
	e.m[kind]++
	e.mu.Unlock()
}

func (e *errorCounts) snapshot() (map[string]uint64, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]uint64{}
	var total uint64
	for k, v := range e.m {
		out[k] = v
		total += v
	}
	return out, total
}

// run runs the workload and returns when every worker has stopped: new
// requests stop at the end of the measured window, and requests in flight
// then are waited for. It returns ctx's error if ctx was cancelled.
func (r *runner) run(ctx context.Context) error {
	r.start = time.Now()
	r.mStart = r.start.Add(r.Warmup)
	r.mEnd = r.mStart.Add(r.Duration)

	var wg sync.WaitGroup
	boundaries := make(chan struct{})
	go func() {
		defer close(boundaries)
		if !sleepUntil(ctx, r.mStart) {
			return
		}
		if r.AtStart != nil {
			r.AtStart()
		}
		if !sleepUntil(ctx, r.mEnd) {
			return
		}
		if r.AtEnd != nil {
			r.AtEnd()
		}
	}()
	stopProgress := r.startProgress()
	for w := range r.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.Rate > 0 {
				r.openLoop(ctx, w)
			} else {
				r.closedLoop(ctx, w)
			}
		}()
	}
	wg.Wait()
	<-boundaries
	stopProgress()
	if r.Rate > 0 {
		scheduled := uint64(r.Duration.Seconds() * r.Rate)
		if s := r.sent.Load(); s < scheduled {
			r.missed = scheduled - s
		}
	}
	return ctx.Err()
}

func (r *runner) closedLoop(ctx context.Context, w int) {
	for ctx.Err() == nil {
		t := time.Now()
		if !t.Before(r.mEnd) {
			return
		}
		err := r.do(ctx, w, t)
		if err != nil && r.Backoff > 0 && isPushback(err) {
			sleepUntil(ctx, time.Now().Add(r.Backoff))
		}
	}
}

func (r *runner) openLoop(ctx context.Context, w int) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		k := r.next.Add(1) - 1
		sched := r.start.Add(time.Duration(float64(k) * float64(time.Second) / r.Rate))
		if !sched.Before(r.mEnd) || !time.Now().Before(r.mEnd) {
			return
		}
		if d := time.Until(sched); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		r.do(ctx, w, sched)
	}
}

// do sends one request scheduled at sched and records its outcome.
func (r *runner) do(ctx context.Context, w int, sched time.Time) error {
	inWindow := !sched.Before(r.mStart) && sched.Before(r.mEnd)
	if inWindow {
		r.sent.Add(1)
	}
	opCtx, cancel := ctx, context.CancelFunc(func() {})
	if r.Timeout > 0 {
		opCtx, cancel = context.WithTimeout(ctx, r.Timeout)
	}
	r.inflight.Add(1)
	n, err := r.Op(opCtx, w)
	r.inflight.Add(-1)
	cancel()
	end := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return err // interrupted: not the server's fault
		}
		r.liveErrs.Add(1)
		if inWindow {
			r.errs.add(errorKind(err))
		}
		return err
	}
	r.liveUnits.Add(int64(n))
	if inWindow {
		r.hist.Record(end.Sub(sched))
	}
	if !end.Before(r.mStart) && !end.After(r.mEnd) {
		r.ops.Add(1)
		r.units.Add(uint64(n))
	}
	return nil
}

// startProgress prints a status line once a second; the returned func stops
// it.
func (r *runner) startProgress() (stop func()) {
	if r.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastT := r.liveUnits.Load(), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				u := r.liveUnits.Load()
				rate := float64(u-last) / now.Sub(lastT).Seconds()
				last, lastT = u, now
				r.Progress(r.progressLine(now, rate))
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (r *runner) progressLine(now time.Time, rate float64) string {
	var phase string
	switch {
	case now.Before(r.mStart):
		phase = fmt.Sprintf("warm-up %s/%s", now.Sub(r.start).Round(time.Second), r.Warmup)
	case now.Before(r.mEnd):
		phase = fmt.Sprintf("measure %s/%s", now.Sub(r.mStart).Round(time.Second), r.Duration)
	default:
		phase = "draining"
	}
	s := fmt.Sprintf("%s %-16s %12s %s/s  in flight %5d  errors %d", r.Name, phase, commas(rate), r.Unit, r.inflight.Load(), r.liveErrs.Load())
	if r.hist.Count() > 0 {
		s += fmt.Sprintf("  p99 %s ms", ms(r.hist.Quantile(0.99)))
	}
	return s
}

// sleepUntil sleeps until t and reports whether ctx is still live.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// progressWriter writes progress lines to w: on a terminal each line
// replaces the previous one; otherwise one line each.
type progressWriter struct {
	w        io.Writer
	terminal bool
	mu       sync.Mutex
	dirty    bool
}

func (p *progressWriter) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal {
		fmt.Fprintf(p.w, "\r%s\x1b[K", s)
		p.dirty = true
	} else {
		fmt.Fprintln(p.w, s)
	}
}

// done ends a line being replaced, so that later output starts afresh.
func (p *progressWriter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dirty {
		fmt.Fprintln(p.w)
		p.dirty = false
	}
}

// commas formats f rounded to an integer with thousands separators.
func commas(f float64) string {
	s := fmt.Sprintf("%.0f", f)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ms formats d in milliseconds with three significant digits or so.
func ms(d time.Duration) string {
	f := d.Seconds() * 1000
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.2f", f)
	}
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

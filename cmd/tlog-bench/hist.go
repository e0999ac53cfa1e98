package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram layout: values (nanoseconds) below 2^histSubBits are counted
// exactly; above, each power of two is split into 2^histSubBits buckets, so a
// bucket is at most 1/128 (0.8%) of its values wide. Values of 2^histMaxBits
// ns (about 18 minutes) and more are counted in the last bucket; the exact
// maximum is kept aside.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMaxBits = 40
	histBuckets = (histMaxBits-histSubBits)*histSub + histSub
)

// histogram counts durations in log-spaced buckets. It is safe for
// concurrent use: every counter is atomic, so recording never blocks, and
// reading while others record gives a near-consistent snapshot.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Int64  // nanoseconds
}

// bucketOf returns the bucket of v nanoseconds.
func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	if v >= 1<<histMaxBits {
		v = 1<<histMaxBits - 1
	}
	e := bits.Len64(v) - histSubBits - 1
	return e*histSub + int(v>>e)
}

// bucketRange returns the lowest value of bucket i and its width.
func bucketRange(i int) (low, width uint64) {
	if i < histSub {
		return uint64(i), 1
	}
	e := i/histSub - 1
	m := uint64(i - e*histSub)
	return m << e, 1 << e
}

// Record counts one duration; negative durations count as zero.
func (h *histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count returns the number of recorded durations.
func (h *histogram) Count() uint64 { return h.n.Load() }

// Max returns the largest recorded duration (exact).
func (h *histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Mean returns the mean of the recorded durations (exact).
func (h *histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the q-quantile (0 < q <= 1) of the recorded durations:
// the middle of the bucket holding the ceil(q*n)-th smallest value, never
// above the exact maximum. It returns 0 when nothing was recorded.
func (h *histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var cum uint64
	for i := range h.counts {
		cum += h.counts[i].Load()
		if cum >= rank {
			low, width := bucketRange(i)
			return min(time.Duration(low+width/2), h.Max())
		}
	}
	return h.Max()
}

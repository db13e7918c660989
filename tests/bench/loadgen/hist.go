package loadgen

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram counts durations in log-linear microsecond buckets: exact below 128 µs, then 64 buckets
// per power of two (under 1.6 % error) up to about 2^40 µs. Record is lock-free and allocation-free,
// so every reader goroutine can record into one shared histogram.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	total  atomic.Uint64
}

const (
	histExact   = 128 // values below this many µs have a bucket each
	histSubBits = 6   // 2^6 = 64 buckets per power of two above histExact
	histMaxBits = 40
	histBuckets = histExact + (histMaxBits-histSubBits-1)<<histSubBits
)

func bucketOf(us uint64) int {
	if us < histExact {
		return int(us)
	}
	msb := bits.Len64(us) - 1 // ≥ 7
	if msb >= histMaxBits {
		return histBuckets - 1
	}
	shift := msb - histSubBits
	return histExact + (msb-histSubBits-1)<<histSubBits + int(us>>shift) - 1<<histSubBits
}

// bucketMid is the middle of bucket i, in µs.
func bucketMid(i int) float64 {
	if i < histExact {
		return float64(i)
	}
	i -= histExact
	shift := i>>histSubBits + 1
	low := uint64(i&(1<<histSubBits-1)+1<<histSubBits) << shift
	return float64(low) + float64(uint64(1)<<shift)/2
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(us)].Add(1)
	h.total.Add(1)
}

// Count is how many durations were recorded.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Quantile returns the q-quantile (0 < q ≤ 1), or 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	total := h.total.Load()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(bucketMid(i) * float64(time.Microsecond))
		}
	}
	return time.Duration(bucketMid(histBuckets-1) * float64(time.Microsecond))
}

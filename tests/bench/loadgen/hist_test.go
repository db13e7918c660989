package loadgen

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	// 1 µs … 100 000 µs, one each: the q-quantile is q × 100 ms.
	for us := 1; us <= 100_000; us++ {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	for _, tc := range []struct {
		name string
		q    float64
		want time.Duration
	}{
		{"p1", 0.01, time.Millisecond},
		{"p50", 0.50, 50 * time.Millisecond},
		{"p99", 0.99, 99 * time.Millisecond},
		{"max", 1, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := h.Quantile(tc.q)
			if diff := float64(got-tc.want) / float64(tc.want); diff < -0.02 || diff > 0.02 {
				t.Errorf("Quantile(%v) = %v, want %v ± 2%%", tc.q, got, tc.want)
			}
		})
	}
	if h.Count() != 100_000 {
		t.Errorf("Count() = %d", h.Count())
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for us := uint64(0); us < 1<<22; us += 1 + us/512 {
		i := bucketOf(us)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d, below bucketOf of a smaller value (%d)", us, i, prev)
		}
		prev = i
		if mid := bucketMid(i); mid < float64(us)*0.98-1 || mid > float64(us)*1.02+1 {
			t.Fatalf("bucketOf(%d) = %d, whose middle is %v", us, i, mid)
		}
	}
	if i := bucketOf(1 << 50); i != histBuckets-1 {
		t.Errorf("bucketOf(huge) = %d, want the last bucket", i)
	}
}

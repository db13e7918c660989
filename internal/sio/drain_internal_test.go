package sio

import (
	"testing"
	"time"
)

// The drain closes small batches often: with 20 batches per window (the former plan), the 1 824
// clients of a rolling restart's second node came back at 390 a second against an even 182.
func TestDrainPlan(t *testing.T) {
	for _, tc := range []struct {
		n       int
		window  time.Duration
		wantPer int
	}{
		{1824, 10 * time.Second, 4},
		{2000, 10 * time.Second, 4},
		{40, 1200 * time.Millisecond, 1},
		{1, 10 * time.Second, 1},
		{0, 10 * time.Second, 1},
		{100, 0, 100},
	} {
		per, tick := drainPlan(tc.n, tc.window)
		if per != tc.wantPer {
			t.Errorf("%d sessions over %v: batches of %d, want %d", tc.n, tc.window, per, tc.wantPer)
		}
		batches := (tc.n + per - 1) / per
		if batches > 1 && (tick < drainStep || time.Duration(batches)*tick > tc.window) {
			t.Errorf("%d sessions over %v: %d batches every %v, want at most one every %v within the window", tc.n, tc.window, batches, tick, drainStep)
		}
	}
}

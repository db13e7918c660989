package middleware

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// The per-address buckets cannot grow without bound: idle ones (full again) are swept every minute,
// and a flood from more addresses than the cap evicts buckets instead of growing.
func TestAddrLimiterIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := newAddrLimiter(rate.Limit(10), 20) // refills in 2s
	l.now = func() time.Time { return now }
	l.maxAddrs = 1000

	// A flood from 50 000 addresses in one instant: the map stays at the cap.
	for i := range 50_000 {
		l.allow(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
		if n := l.len(); n > l.maxAddrs {
			t.Fatalf("after %d addresses the limiter tracks %d, cap %d", i+1, n, l.maxAddrs)
		}
	}

	// An address that is being limited keeps its (empty) bucket while it stays busy.
	for range 20 {
		l.allow("203.0.113.9")
	}
	if l.allow("203.0.113.9") || !l.empty("203.0.113.9") {
		t.Fatal("the 21st request of a burst of 20 was allowed")
	}

	// A minute later every bucket has refilled: the next new address sweeps them all away.
	now = now.Add(time.Minute)
	l.allow("192.0.2.1")
	if n := l.len(); n != 1 {
		t.Errorf("after a minute of quiet the limiter tracks %d addresses, want 1", n)
	}
	if l.empty("203.0.113.9") {
		t.Error("a swept address is still limited")
	}
}

// The sweep keeps buckets that have not refilled yet: dropping them would hand a limited address a
// fresh burst.
func TestAddrLimiterSweepKeepsBusyBuckets(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := newAddrLimiter(rate.Limit(1.0/60), 10) // a bucket refills in 10 minutes
	l.now = func() time.Time { return now }
	for range 10 {
		l.allow("198.51.100.7")
	}
	now = now.Add(2 * time.Minute) // past a sweep, but the bucket has 2 of 10 tokens back
	l.allow("192.0.2.1")           // triggers the sweep
	if l.len() != 2 {
		t.Fatalf("tracks %d addresses, want both", l.len())
	}
	for range 2 {
		if !l.allow("198.51.100.7") {
			t.Fatal("a refilled token was refused")
		}
	}
	if l.allow("198.51.100.7") {
		t.Error("the sweep handed a limited address a fresh burst")
	}
}

package adapter

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestDedup(t *testing.T, o MemoryDedupOptions) (*MemoryDedup, *fakeClock) {
	t.Helper()
	d := NewMemoryDedup(o)
	clock := &fakeClock{t: d.start}
	d.now = clock.now
	return d, clock
}

func claim(t *testing.T, d Deduper, k DedupKey) bool {
	t.Helper()
	first, err := d.Claim(context.Background(), k)
	if err != nil {
		t.Fatalf("Claim(%v): %v", k, err)
	}
	return first
}

func TestMemoryDedupClaims(t *testing.T) {
	t.Parallel()
	d, clock := newTestDedup(t, MemoryDedupOptions{Window: time.Minute})
	k := DedupKey{"/", "lobby", "m-1"}
	if !claim(t, d, k) {
		t.Fatal("the first claim is not first")
	}
	if claim(t, d, k) {
		t.Fatal("a repeat within the window is first")
	}
	// The namespace, the room and the id each make a different key, and none is a
	// concatenation of the others.
	for _, other := range []DedupKey{{"/chat", "lobby", "m-1"}, {"/", "hall", "m-1"}, {"/", "lobby", "m-2"},
		{"/", "lobbym", "-1"}, {"/", "lobby\x00", "m-1"}, {"/lobby", "", "m-1"}} {
		if !claim(t, d, other) {
			t.Errorf("%v collides with %v", other, k)
		}
	}
	clock.advance(59 * time.Second)
	if claim(t, d, k) {
		t.Fatal("a repeat 59s into a 1m window is first")
	}
	clock.advance(time.Second)
	if !claim(t, d, k) {
		t.Fatal("a claim after the window is not first")
	}
	if claim(t, d, k) {
		t.Fatal("the claim after the window does not start a new window")
	}
}

func TestMemoryDedupRelease(t *testing.T) {
	t.Parallel()
	d, clock := newTestDedup(t, MemoryDedupOptions{Window: time.Minute})
	k := DedupKey{"/", "r", "x"}
	claim(t, d, k)
	d.Release(context.Background(), k)
	if !claim(t, d, k) {
		t.Fatal("a released key is not first again")
	}
	// The first claim's queue entry expires before the second claim's window ends: it must not
	// take the second claim with it.
	clock.advance(time.Minute)
	if !claim(t, d, DedupKey{"/", "r", "y"}) { // drives expiry in some shard
		t.Fatal("fresh key not first")
	}
	d.Release(context.Background(), k)
	claim(t, d, k)
	clock.advance(30 * time.Second)
	d.Release(context.Background(), k)
	if !claim(t, d, k) {
		t.Fatal("not first after the second release")
	}
	clock.advance(45 * time.Second) // the entry of the claim before the release expires now
	if claim(t, d, k) {
		t.Fatal("an old queue entry removed a later claim")
	}
}

func TestMemoryDedupConcurrentClaims(t *testing.T) {
	t.Parallel()
	d := NewMemoryDedup(MemoryDedupOptions{})
	for i := range 50 {
		k := DedupKey{"/", "r", fmt.Sprint(i)}
		var firsts atomic.Int32
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				if ok, _ := d.Claim(context.Background(), k); ok {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		if n := firsts.Load(); n != 1 {
			t.Fatalf("key %d: %d concurrent claims were first, want exactly 1", i, n)
		}
	}
}

// TestMemoryDedupBounded floods the store with distinct ids: it never holds more than MaxIDs, the
// newest ids are kept, the evictions are counted and logged once, and the heap stays bounded.
func TestMemoryDedupBounded(t *testing.T) {
	var logs bytes.Buffer
	const maxIDs = 10_000
	d, clock := newTestDedup(t, MemoryDedupOptions{Window: time.Minute, MaxIDs: maxIDs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const flood = 500_000
	for i := range flood {
		claim(t, d, DedupKey{"/", "r", fmt.Sprintf("flood-%d", i)})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := d.Len(); n > maxIDs || n < maxIDs-dedupShards*2 {
		t.Fatalf("the store holds %d ids, want about %d", n, maxIDs)
	}
	if ev := d.Evicted(); ev != uint64(flood-d.Len()) {
		t.Fatalf("Evicted() = %d, want %d", ev, flood-d.Len())
	}
	perID := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / maxIDs
	t.Logf("heap per remembered id: %d bytes", perID)
	if perID > 120 {
		t.Fatalf("the store takes %d bytes per id", perID)
	}
	if n := strings.Count(logs.String(), "dedup store full"); n != 1 {
		t.Fatalf("logged the full store %d times, want once:\n%s", n, logs.String())
	}
	if claim(t, d, DedupKey{"/", "r", fmt.Sprintf("flood-%d", flood-1)}) {
		t.Fatal("the newest id was forgotten")
	}
	// Once the window has passed, the next claims drain each shard and its storage starts afresh.
	for i := range 1000 {
		clock.advance(2 * time.Minute)
		claim(t, d, DedupKey{"/", "r", fmt.Sprintf("later-%d", i)})
	}
	if n := d.Len(); n > dedupShards {
		t.Fatalf("%d ids left after their windows, want at most one per shard", n)
	}
	for i := range d.shards {
		if s := &d.shards[i]; len(s.ring) > 64 {
			t.Errorf("shard %d keeps a ring of %d entries after draining", i, len(s.ring))
		}
	}
}

func BenchmarkMemoryDedupClaim(b *testing.B) {
	d := NewMemoryDedup(MemoryDedupOptions{})
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			d.Claim(ctx, DedupKey{"/", "lobby", "0123456789abcdef0123456789abcdef" + fmt.Sprint(i)})
			i++
		}
	})
}

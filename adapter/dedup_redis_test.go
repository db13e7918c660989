package adapter_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chorus-rt/chorus/adapter"
)

// newRedis returns a Redis adapter on url with prefix, closed when the test ends.
func newRedis(t *testing.T, url, prefix string) *adapter.Redis {
	t.Helper()
	r, err := adapter.NewRedis(adapter.RedisOptions{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func mustClaim(t *testing.T, d adapter.Deduper, k adapter.DedupKey) bool {
	t.Helper()
	first, err := d.Claim(context.Background(), k)
	if err != nil {
		t.Fatalf("Claim(%v): %v", k, err)
	}
	return first
}

// TestRedisDedup: two nodes' stores on one Redis see each other's claims; keys are
// <prefix>#dedup#[nsp,room,id] with the window as their TTL; Release removes only the node's own
// claim; windows expire.
func TestRedisDedup(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	prefix := testPrefix(t)
	const window = 400 * time.Millisecond
	a := newRedis(t, rs.url(), prefix).Deduper(window)
	b := newRedis(t, rs.url(), prefix).Deduper(window)
	raw := redisClient(t, rs.url())
	ctx := context.Background()

	k := adapter.DedupKey{Namespace: "/", Room: "lobby#1", ID: "m-1"}
	if !mustClaim(t, a, k) {
		t.Fatal("first claim on A is not first")
	}
	if mustClaim(t, b, k) || mustClaim(t, a, k) {
		t.Fatal("a repeat on B or A is first")
	}
	key := prefix + `#dedup#["/","lobby#1","m-1"]`
	if ttl, err := raw.PTTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > window {
		t.Fatalf("PTTL %s = %s, %v; want within the %s window", key, ttl, err, window)
	}
	for _, other := range []adapter.DedupKey{{Namespace: "/", Room: "lobby", ID: "1#m-1"}, {Namespace: "/x", Room: "lobby#1", ID: "m-1"}} {
		if !mustClaim(t, b, other) {
			t.Fatalf("%v collides with %v", other, k)
		}
	}

	b.Release(ctx, k) // not B's claim: it stays
	if mustClaim(t, b, k) {
		t.Fatal("B released A's claim")
	}
	a.Release(ctx, k)
	if !mustClaim(t, b, k) {
		t.Fatal("A's release did not free the key")
	}

	// The window passes: the key expires in Redis.
	start := time.Now()
	waitFor(t, "the claim expires", func() bool { return mustClaim(t, a, k) })
	if took := time.Since(start); took < window/2 {
		t.Fatalf("the claim expired after %s, window %s", took, window)
	}

	// Concurrent claims from both nodes: exactly one is first.
	for i := range 20 {
		k := adapter.DedupKey{Namespace: "/", Room: "r", ID: "race-" + string(rune('a'+i))}
		var firsts atomic.Int32
		var wg sync.WaitGroup
		for j := range 8 {
			d := a
			if j%2 == 1 {
				d = b
			}
			wg.Go(func() {
				if ok, err := d.Claim(ctx, k); err == nil && ok {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		if n := firsts.Load(); n != 1 {
			t.Fatalf("%v: %d concurrent claims were first", k, n)
		}
	}
}

// TestRedisDedupUnavailable: with Redis down, or the adapter closed, Claim fails at once with
// ErrUnavailable; when Redis is back, claims work again.
func TestRedisDedupUnavailable(t *testing.T) {
	t.Parallel()
	rs := startRedis(t)
	r := newRedis(t, rs.url(), testPrefix(t))
	d := r.Deduper(time.Minute)
	k := adapter.DedupKey{Namespace: "/", Room: "r", ID: "x"}
	waitFor(t, "redis up", func() bool { return r.Status().Up })
	mustClaim(t, d, k)

	rs.stop()
	waitFor(t, "redis reported down", func() bool { return r.Status().State == "down" })
	start := time.Now()
	if _, err := d.Claim(context.Background(), adapter.DedupKey{Namespace: "/", Room: "r", ID: "y"}); !errors.Is(err, adapter.ErrUnavailable) {
		t.Fatalf("Claim with Redis down: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("Claim with Redis down took %s, want an immediate answer", took)
	}

	if err := rs.restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "redis up again", func() bool { return r.Status().Up })
	if !mustClaim(t, d, adapter.DedupKey{Namespace: "/", Room: "r", ID: "y"}) {
		t.Fatal("a claim refused during the outage is not first afterwards")
	}

	r.Close()
	if _, err := d.Claim(context.Background(), k); !errors.Is(err, adapter.ErrUnavailable) {
		t.Fatalf("Claim after Close: %v, want ErrUnavailable", err)
	}
}

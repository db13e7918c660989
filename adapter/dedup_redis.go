package adapter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// dedupTimeout bounds one Redis command of the Redis Deduper.
const dedupTimeout = time.Second

// releaseScript deletes a claim only if this node made it.
var releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// redisDedup is the Deduper of a cluster: one Redis key per claimed message,
// <prefix>#dedup#[namespace,room,id], set with SET NX PX <window>, so that a retry reaching any
// node is recognised. The key's value is the claiming node's id, so that Release removes only
// this node's claims. Redis expires the keys; their memory is Redis's (about 200 bytes per key:
// publishes with an id per second × window).
type redisDedup struct {
	r      *Redis
	window time.Duration
}

// Deduper returns the Deduper of the cluster r joins, remembering ids for window (0 means
// DefaultDedupWindow). It shares r's connection pool; it stops working (ErrUnavailable) when r
// is closed.
//
// While r reports Redis down, Claim fails at once with ErrUnavailable instead of waiting for a
// dial. When a SET fails in a way that leaves its outcome unknown (a timeout, a broken
// connection), Claim tries to release it before returning the error; if Redis stays unreachable
// the key may stay until its window ends, and a retry within that window is then taken for a
// duplicate.
func (r *Redis) Deduper(window time.Duration) Deduper {
	if window <= 0 {
		window = DefaultDedupWindow
	}
	return &redisDedup{r: r, window: window}
}

func (d *redisDedup) key(k DedupKey) string { return d.r.opts.Prefix + "#dedup#" + k.String() }

func (d *redisDedup) Claim(ctx context.Context, key DedupKey) (bool, error) {
	if linkState(d.r.current.Load()) == linkDown {
		return false, fmt.Errorf("%w: redis is down", ErrUnavailable)
	}
	if d.r.ctx.Err() != nil {
		return false, fmt.Errorf("%w: the adapter is closed", ErrUnavailable)
	}
	cctx, cancel := context.WithTimeout(ctx, dedupTimeout)
	defer cancel()
	k := d.key(key)
	first, err := d.r.client.SetNX(cctx, k, d.r.uid, d.window).Result()
	if err != nil {
		d.Release(context.WithoutCancel(ctx), key)
		return false, fmt.Errorf("%w: dedup claim: %w", ErrUnavailable, err)
	}
	return first, nil
}

func (d *redisDedup) Release(ctx context.Context, key DedupKey) {
	if d.r.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, dedupTimeout)
	defer cancel()
	err := releaseScript.Run(ctx, d.r.client, []string{d.key(key)}, d.r.uid).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		d.r.log.Debug("dedup claim not released; it expires with its window", "nsp", key.Namespace, "err", err)
	}
}

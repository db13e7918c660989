package adapter

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// dedupShards spreads MemoryDedup's keys over independently locked shards.
	dedupShards = 16
	// dedupShrinkAt: a shard that drained after holding at least this many ids gets fresh
	// (small) storage, so that memory taken by a flood goes back once its ids have expired.
	dedupShrinkAt = 256
	// dedupLogEvery bounds the "store full" warning to one per interval.
	dedupLogEvery = time.Minute
)

// MemoryDedupOptions configures NewMemoryDedup.
type MemoryDedupOptions struct {
	// Window is how long an id is remembered; 0 means DefaultDedupWindow.
	Window time.Duration
	// MaxIDs caps the ids remembered at once; 0 means DefaultDedupMaxIDs. When the store is full,
	// the oldest ids are forgotten before their window ends (counted, and logged at most once a
	// minute): a retry of one of those would be delivered again.
	MaxIDs int
	// Logger receives the "store full" warning; nil discards it.
	Logger *slog.Logger
}

// MemoryDedup is the Deduper of a single node. It keeps a 128-bit keyed hash of each key (the
// seeds are random per process, so clients cannot craft colliding ids) and its expiry, in 16
// shards, each a map plus a ring of claims in claim order. Expired ids are dropped as later claims come
// (the ring's head is always the next to expire, since every id lives the same window); no
// goroutine runs. Memory is bounded by MaxIDs whatever clients send: 60 to 90 bytes per id, so at
// most about 90 MB for the default million.
type MemoryDedup struct {
	window  time.Duration
	seeds   [2]maphash.Seed
	start   time.Time
	now     func() time.Time // time.Now; tests move it
	log     *slog.Logger
	shards  [dedupShards]dedupShard
	evicted atomic.Uint64
	lastLog atomic.Int64 // unix nanoseconds of the last "store full" warning
}

type dedupHash [2]uint64

type dedupEntry struct {
	h   dedupHash
	exp int64 // nanoseconds since MemoryDedup.start
}

type dedupShard struct {
	mu   sync.Mutex
	max  int
	seen map[dedupHash]int64 // → expiry; unique within the shard (see Claim)
	// ring holds the claims in claim order, hence in expiry order: n entries from head, live or
	// released. It grows by doubling up to max entries.
	ring []dedupEntry
	head int
	n    int
	last int64 // the latest expiry handed out
	peak int   // the most entries held since the shard last drained
	// deletes counts deletions from seen since it was built: a Go map that churns grows with
	// its tombstones, so it is rebuilt after 2×max of them (amortised O(1) per claim).
	deletes int
}

// NewMemoryDedup returns an empty store.
func NewMemoryDedup(o MemoryDedupOptions) *MemoryDedup {
	if o.Window <= 0 {
		o.Window = DefaultDedupWindow
	}
	if o.MaxIDs <= 0 {
		o.MaxIDs = DefaultDedupMaxIDs
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d := &MemoryDedup{window: o.Window, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, start: time.Now(), now: time.Now, log: o.Logger}
	per := max(1, (o.MaxIDs+dedupShards-1)/dedupShards)
	for i := range d.shards {
		d.shards[i].max = per
		d.shards[i].seen = make(map[dedupHash]int64)
	}
	return d
}

func (d *MemoryDedup) hash(k DedupKey) dedupHash {
	var out dedupHash
	var h maphash.Hash
	var n [binary.MaxVarintLen64]byte
	for i, seed := range d.seeds {
		h.SetSeed(seed)
		for _, s := range [3]string{k.Namespace, k.Room, k.ID} {
			h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
			h.WriteString(s)
		}
		out[i] = h.Sum64()
	}
	return out
}

func (d *MemoryDedup) shard(h dedupHash) *dedupShard { return &d.shards[h[0]%dedupShards] }

// Claim implements Deduper; it never fails.
func (d *MemoryDedup) Claim(_ context.Context, key DedupKey) (bool, error) {
	h := d.hash(key)
	now := int64(d.now().Sub(d.start))
	s := d.shard(h)
	s.mu.Lock()
	s.expire(now)
	if exp, ok := s.seen[h]; ok && exp > now {
		s.mu.Unlock()
		return false, nil
	}
	evicted := 0
	for s.n >= s.max {
		if s.pop() {
			evicted++
		}
	}
	// Expiries are unique within the shard, so that an old queue entry of a released and
	// reclaimed key never removes the new claim.
	exp := max(now+int64(d.window), s.last+1)
	s.last = exp
	s.seen[h] = exp
	s.push(dedupEntry{h, exp})
	s.compact()
	s.mu.Unlock()
	if evicted > 0 {
		d.full(evicted)
	}
	return true, nil
}

// Release implements Deduper.
func (d *MemoryDedup) Release(_ context.Context, key DedupKey) {
	h := d.hash(key)
	s := d.shard(h)
	s.mu.Lock()
	if _, ok := s.seen[h]; ok {
		delete(s.seen, h) // its ring entry goes when it expires or is pushed out
		s.deletes++
	}
	s.mu.Unlock()
}

// Len returns the number of ids remembered (expired ones not yet dropped included).
func (d *MemoryDedup) Len() int {
	n := 0
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n += len(s.seen)
		s.mu.Unlock()
	}
	return n
}

// Evicted returns how many ids were forgotten before their window ended because the store was full.
func (d *MemoryDedup) Evicted() uint64 { return d.evicted.Load() }

func (d *MemoryDedup) full(n int) {
	total := d.evicted.Add(uint64(n))
	now := time.Now().UnixNano()
	last := d.lastLog.Load()
	if now-last < int64(dedupLogEvery) || !d.lastLog.CompareAndSwap(last, now) {
		return
	}
	d.log.Warn("dedup store full: the oldest message ids are forgotten before their window ends; a retry of one of them would be delivered again",
		"max_ids", d.shards[0].max*dedupShards, "evicted_total", total)
}

// expire drops the entries whose window has passed.
func (s *dedupShard) expire(now int64) {
	for s.n > 0 && s.ring[s.head].exp <= now {
		s.pop()
	}
}

// push appends e; the caller has made room (n < max).
func (s *dedupShard) push(e dedupEntry) {
	if s.n == len(s.ring) {
		ring := make([]dedupEntry, min(max(2*len(s.ring), 16), s.max))
		k := copy(ring, s.ring[s.head:])
		copy(ring[k:], s.ring[:s.head])
		s.ring, s.head = ring, 0
	}
	s.ring[(s.head+s.n)%len(s.ring)] = e
	s.n++
	s.peak = max(s.peak, s.n)
}

// pop drops the oldest entry; it reports whether it was a live id (not released, not reclaimed
// since).
func (s *dedupShard) pop() bool {
	e := s.ring[s.head]
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	live := s.seen[e.h] == e.exp
	if live {
		delete(s.seen, e.h)
		s.deletes++
	}
	if s.n == 0 && s.peak >= dedupShrinkAt {
		// A map keeps its size after deletes: after a flood has expired, start afresh.
		s.seen, s.ring, s.head, s.peak, s.deletes = make(map[dedupHash]int64), nil, 0, 0, 0
	}
	return live
}

// compact rebuilds seen once enough deletions have churned it.
func (s *dedupShard) compact() {
	if s.deletes < 2*s.max+dedupShrinkAt {
		return
	}
	seen := make(map[dedupHash]int64, len(s.seen))
	for h, exp := range s.seen {
		seen[h] = exp
	}
	s.seen, s.deletes = seen, 0
}

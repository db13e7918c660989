package adapter

import (
	"context"
	"encoding/json"
	"time"
)

// Limits of deduplication.
const (
	// DefaultDedupWindow is how long a published message's id is remembered by default.
	DefaultDedupWindow = 2 * time.Minute
	// DefaultDedupMaxIDs is how many ids MemoryDedup remembers at most by default.
	DefaultDedupMaxIDs = 1_000_000
	// MaxDedupIDLen is the longest message id, in bytes.
	MaxDedupIDLen = 64
)

// DedupKey names one published message: the id its client gave it, scoped by the namespace and
// the room it was published to. A retry is the same request, so it has the same key; ids used in
// different rooms or namespaces never collide, and a client can only occupy ids of the rooms the
// room policy lets it publish to.
type DedupKey struct {
	Namespace, Room, ID string
}

// String is the key's unambiguous text form, the JSON array [namespace, room, id]; it ends the
// Redis key (<prefix>#dedup#["/","lobby","m-1"]).
func (k DedupKey) String() string {
	b, _ := json.Marshal([3]string{k.Namespace, k.Room, k.ID}) // strings always encode
	return string(b)
}

// Deduper remembers, for a window, the messages clients published with an id, so that a retry of
// one (the client's ack was lost, or it timed out) is recognised and not broadcast again
// (docs/protocol.md, "Effectively-once publish"). MemoryDedup serves one node; in a cluster the
// Redis adapter claims an id in the same script as its broadcast (commit.go), so that no claim
// exists without its broadcast.
//
// The publish handler calls Claim once per publish that carries an id, on the publishing socket's
// goroutine, before it broadcasts: handlers of one socket run one at a time, but many sockets (on
// many nodes, in a cluster) claim at once, and the first attempt of a message may
// still be in its handler when a retry arrives on another socket or node. The claim is the commit
// point: whoever claims a key first broadcasts the message; every later claim within the window
// is a duplicate.
type Deduper interface {
	// Claim records key as published and reports whether this is its first claim within the
	// window (true: broadcast it) or a repeat (false: do not). Of concurrent claims of one key,
	// exactly one is first. A key is forgotten when its window has passed, or earlier when
	// Release is called or (MemoryDedup) when the store is full.
	//
	// An error means the store could not answer (it wraps ErrUnavailable when the store is
	// unreachable); the caller must then not broadcast, so that a message is neither delivered
	// twice nor dropped without the client knowing. Claim never blocks for longer than about a
	// second, nor longer than ctx allows.
	Claim(ctx context.Context, key DedupKey) (first bool, err error)
	// Release forgets a first claim whose broadcast did not happen (the handler failed), so that
	// a retry may still deliver the message. It is best effort: an error is not reported, and a
	// claim that cannot be released expires with its window.
	Release(ctx context.Context, key DedupKey)
}

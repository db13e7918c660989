package adapter

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Redis Streams mode (@socket.io/redis-streams-adapter 0.3; doc.go has the wire format). Broadcasts,
// joins, leaves and disconnects go into one stream (XADD MAXLEN ~), which every node reads in
// order (XREAD BLOCK); requests that want answers and the answers go through pub/sub. The stream
// entry id of a broadcast is its recovery offset, the same on every node, and sessions are kept in
// Redis, so a client recovers its session on whichever node it reconnects to.
//
// Every broadcast a node sends is delivered to its local recipients by its reader, in stream
// order, like the other nodes' broadcasts (Node delivers its own at once once XADD returns, so a
// socket can see its own node's broadcast before an earlier one of another node, and then recover
// from the wrong offset): each socket receives packets in offset order, which recovery needs.
// The publisher keeps each broadcast it added, with its id, until the reader reaches that id, so
// that it is never decoded again.

const (
	// streamBlock is how long one XREAD waits for entries.
	streamBlock = 2 * time.Second
	// streamReadCount is how many entries one XREAD or XRANGE returns at most (Node's readCount).
	streamReadCount = 100
	// restoreReadCount is how many entries one XRANGE of a restore returns at most.
	restoreReadCount = 1000
	// pendingMaxAge: a broadcast of this node the reader has not reached that long after its XADD
	// (a reader cut off from Redis while the publisher is not) is delivered without waiting more.
	pendingMaxAge = 5 * time.Second
	// sessionKeyPrefix starts the Redis key of a session (Node's sessionKeyPrefix default).
	sessionKeyPrefix = "sio:session:"
)

// xaddMsg is an XADD of a stream entry; for a broadcast of this node, a and p say what to deliver
// locally once its id is known.
type xaddMsg struct {
	values []string
	a      *streamsAdapter
	p      *protocol.Packet
	opts   BroadcastOptions
	// a committed broadcast (commit.go): its outcome, and the dedup key claimed with it ("": none)
	commit *pendingCommit
	claim  string
}

// xaddResult is what Redis answered to an XADD (or to the claim script that replaces it).
type xaddResult struct {
	id  string
	dup bool // the claim was not first: nothing was added
	err error
}

// setMsg is a SET key value PX ttl (a session).
type setMsg struct {
	key, value string
	ttl        time.Duration
}

// streamState is the stream's side of a Redis in streams mode.
type streamState struct {
	name   string
	maxLen int64

	mu       sync.RWMutex
	adapters map[string]*streamsAdapter // by namespace

	// deliverMu is held while entries are delivered to local sockets and while a session is
	// restored, so that no entry falls between the replayed packets and the live ones.
	deliverMu sync.Mutex
	head      atomic.Pointer[string] // the last entry delivered; nil until the reader knows where the stream ends
	// stale is the latest entry of this node delivered before the reader reached it (deliverStale):
	// a local broadcast after it follows it (streams_outage.go); deliverMu guards it.
	stale   streamID
	started chan struct{} // closed once head is set

	pendMu   sync.Mutex
	pendCond *sync.Cond
	pending  []pendingBroadcast // this node's broadcasts the reader has not reached, in id order
	inflight int                // pipelines sent whose XADD ids are not known yet
}

type pendingBroadcast struct {
	id   streamID
	ids  string
	at   time.Time
	xadd *xaddMsg
}

func newStreamState(name string, maxLen int64) *streamState {
	st := &streamState{name: name, maxLen: maxLen, adapters: make(map[string]*streamsAdapter), started: make(chan struct{})}
	st.pendCond = sync.NewCond(&st.pendMu)
	return st
}

func (st *streamState) adapter(nsp string) *streamsAdapter {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.adapters[nsp]
}

// headID returns the last entry delivered, and false before the reader knows where the stream ends.
func (st *streamState) headID() (string, bool) {
	if h := st.head.Load(); h != nil {
		return *h, true
	}
	return "", false
}

func (st *streamState) beginInflight() {
	st.pendMu.Lock()
	st.inflight++
	st.pendMu.Unlock()
}

func (st *streamState) endInflight() {
	st.pendMu.Lock()
	st.inflight--
	st.pendMu.Unlock()
	st.pendCond.Broadcast()
}

// xaddDone hands the ids of a pipeline's broadcasts to the reader and reports their commits; a
// broadcast whose XADD failed is delivered at once, without an offset (one made with a claim is
// not delivered at all).
func (r *Redis) xaddDone(batch []outMsg, results []xaddResult) {
	st := r.streams
	var (
		failed []*xaddMsg
		fires  []*pendingCommit
		dups   []*pendingCommit
		lost   []*pendingCommit
	)
	now := time.Now()
	st.pendMu.Lock()
	for i, m := range batch {
		x := m.xadd
		if x == nil || x.a == nil {
			continue
		}
		res := results[i]
		if res.dup {
			dups = append(dups, x.commit)
			continue
		}
		id, ok := newStreamID(res.id)
		if res.err != nil || !ok {
			if x.claim != "" {
				lost = append(lost, x.commit)
			} else {
				failed = append(failed, x)
			}
			continue
		}
		st.pending = append(st.pending, pendingBroadcast{id: id, ids: res.id, at: now, xadd: x})
		fires = append(fires, x.commit)
	}
	st.pendMu.Unlock()
	for _, pc := range fires {
		r.fire(pc, Committed)
	}
	for _, pc := range dups {
		r.fire(pc, Duplicate)
	}
	for _, pc := range lost {
		r.fire(pc, Unavailable)
	}
	if len(failed) > 0 {
		st.deliverMu.Lock()
		for _, x := range failed {
			x.a.deliverLocalLocked(x.p, x.opts)
		}
		st.deliverMu.Unlock()
		for _, x := range failed {
			r.fire(x.commit, LocalOnly)
		}
	}
}

// awaitOwn waits until the id of every XADD sent so far is known, when id is not among them yet.
func (st *streamState) awaitOwn(id streamID) {
	st.pendMu.Lock()
	defer st.pendMu.Unlock()
	for st.inflight > 0 && !st.hasPendingLocked(id) {
		st.pendCond.Wait()
	}
}

func (st *streamState) hasPendingLocked(id streamID) bool {
	for _, pb := range st.pending {
		if pb.id == id {
			return true
		}
		if id.less(pb.id) {
			return false
		}
	}
	return false
}

// takePending removes and returns this node's broadcasts up to id (before it, and id itself if
// one is), in order.
func (st *streamState) takePending(id streamID) []pendingBroadcast {
	st.pendMu.Lock()
	defer st.pendMu.Unlock()
	n := 0
	for n < len(st.pending) && !id.less(st.pending[n].id) {
		n++
	}
	if n == 0 {
		return nil
	}
	out := append([]pendingBroadcast(nil), st.pending[:n]...)
	clear(st.pending[:n])
	st.pending = st.pending[n:]
	if len(st.pending) == 0 {
		st.pending = nil
	}
	return out
}

// takeStale removes and returns the broadcasts waiting for the reader for longer than maxAge.
func (st *streamState) takeStale(maxAge time.Duration) []pendingBroadcast {
	st.pendMu.Lock()
	defer st.pendMu.Unlock()
	n := 0
	for n < len(st.pending) && time.Since(st.pending[n].at) > maxAge {
		n++
	}
	if n == 0 {
		return nil
	}
	out := append([]pendingBroadcast(nil), st.pending[:n]...)
	clear(st.pending[:n])
	st.pending = st.pending[n:]
	return out
}

// deliverQueued delivers at once, without an offset, the broadcasts waiting in r's queue while
// Redis is unreachable; the other commands stay queued, in order.
func (st *streamState) deliverQueued(r *Redis) {
	var keep []outMsg
	for {
		var m outMsg
		select {
		case m = <-r.queue:
		default:
			for _, k := range keep {
				select {
				case r.queue <- k:
				default:
					r.queuedBytes.Add(-int64(k.size()))
					r.dropped.Add(1)
				}
			}
			return
		}
		if m.xadd == nil || m.xadd.a == nil {
			keep = append(keep, m)
			continue
		}
		r.queuedBytes.Add(-int64(m.size()))
		r.dropped.Add(1)
		if m.xadd.claim != "" {
			r.fire(m.xadd.commit, Unavailable) // made with a claim: delivered nowhere
			continue
		}
		st.deliverMu.Lock()
		m.xadd.a.deliverLocalLocked(m.xadd.p, m.xadd.opts)
		st.deliverMu.Unlock()
		r.fire(m.xadd.commit, LocalOnly)
	}
}

// streamReader reads the stream from where it ended when the reader started, and hands every entry
// to its namespace's adapter, in order.
func (r *Redis) streamReader() {
	defer r.wg.Done()
	st := r.streams
	last := ""
	wait := backoffMin
	fail := func(err error) bool {
		select {
		case <-r.done:
			return false
		default:
		}
		r.log.Debug("redis stream read failed", "stream", st.name, "err", err)
		select {
		case <-r.done:
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, backoffMax)
		return true
	}
	for {
		select {
		case <-r.done:
			return
		default:
		}
		r.deliverStale()
		if last == "" {
			end, err := r.streamEnd(r.ctx, r.reader)
			if err != nil {
				if !fail(err) {
					return
				}
				continue
			}
			last = end.String()
			r.startStream(end)
		}
		// go-redis waits for a blocking read's reply for the block time plus 10 s; a reply lost on
		// the way (a network that swallows it) must not stall the reader for that long.
		ctx, cancel := context.WithTimeout(r.ctx, streamBlock+commandTimeout)
		res, err := r.reader.XRead(ctx, &redis.XReadArgs{Streams: []string{st.name, last}, Count: streamReadCount, Block: streamBlock}).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if !fail(err) {
				return
			}
			continue
		}
		wait = backoffMin
		for _, s := range res {
			for _, m := range s.Messages {
				r.onStreamEntry(m)
				last = m.ID
			}
		}
	}
}

// streamEnd returns the id of the stream's last entry ("0-0" while there is no stream).
func (r *Redis) streamEnd(ctx context.Context, c *redis.Client) (streamID, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	info, err := c.XInfoStream(ctx, r.streams.name).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return streamID{}, nil
		}
		return streamID{}, err
	}
	id, ok := newStreamID(info.LastGeneratedID)
	if !ok {
		return streamID{}, fmt.Errorf("stream %s: last id %q", r.streams.name, info.LastGeneratedID)
	}
	return id, nil
}

// startStream sets the head where the reader starts; this node's broadcasts added before it are
// delivered now (the reader will not see them).
func (r *Redis) startStream(end streamID) {
	st := r.streams
	st.deliverMu.Lock()
	defer st.deliverMu.Unlock()
	for _, pb := range st.takePending(end) {
		pb.xadd.a.deliver(pb.xadd.p, pb.xadd.opts, pb.ids)
	}
	s := end.String()
	st.head.Store(&s)
	close(st.started)
}

// deliverStale delivers this node's broadcasts the reader has not reached in pendingMaxAge.
func (r *Redis) deliverStale() {
	st := r.streams
	stale := st.takeStale(pendingMaxAge)
	if len(stale) == 0 {
		return
	}
	r.log.Warn("redis stream reader behind: broadcasts delivered without waiting for it", "count", len(stale))
	st.deliverMu.Lock()
	defer st.deliverMu.Unlock()
	for _, pb := range stale {
		pb.xadd.a.deliver(pb.xadd.p, pb.xadd.opts, pb.ids)
		if st.stale.less(pb.id) {
			st.stale = pb.id
		}
	}
}

// onStreamEntry delivers one entry: this node's broadcast from what the publisher kept, another
// node's entry decoded. A panic while handling it is logged and counted as malformed.
func (r *Redis) onStreamEntry(m redis.XMessage) {
	st := r.streams
	id, ok := newStreamID(m.ID)
	if !ok {
		return
	}
	uid, _ := m.Values["uid"].(string)
	own := uid == r.uid
	if own {
		st.awaitOwn(id)
	}
	st.deliverMu.Lock()
	defer st.deliverMu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			r.malformed.Add(1)
			r.log.Error("redis stream entry handler panic", "id", m.ID, "err", p, "stack", string(debug.Stack()))
		}
		st.head.Store(&m.ID)
	}()
	delivered := false
	for _, pb := range st.takePending(id) {
		pb.xadd.a.deliver(pb.xadd.p, pb.xadd.opts, pb.ids)
		delivered = delivered || pb.id == id
	}
	_, claimed := m.Values[claimField]
	if own && (delivered || !claimed) {
		// This node's: delivered above, or already (its XADD seemed to fail and it was delivered
		// at once) or applied when made.
		return
	}
	nsp, _ := m.Values["nsp"].(string)
	a := st.adapter(nsp)
	if a == nil {
		return
	}
	cm, err := decodeStreamEntry(m.Values)
	if err != nil {
		r.malformedMessage(nsp, "stream entry", err)
		return
	}
	if own {
		// A broadcast of this node made with a claim whose script ran although the node did not
		// hear so (the reply was lost: its publisher was told Unavailable, and nothing was
		// delivered here): the local sockets get it now, as the other nodes do.
		a.deliverEntry(cm, m.ID)
		return
	}
	a.onMessage(cm, m.ID)
}

// claimField marks the stream entries of broadcasts made with a claim (BroadcastCommit): Node's
// adapter ignores it.
const claimField = "claimed"

// streamsFactory creates a namespace's adapter in streams mode and subscribes to its channels.
func (r *Redis) streamsFactory(nsp Namespace) Adapter {
	a := newStreamsAdapter(r, nsp)
	st := r.streams
	r.mu.Lock()
	closed := r.closed
	if !closed {
		r.channels[a.publicChannel] = route{s: a}
		r.channels[a.privateChannel] = route{s: a, response: true}
		r.open++
	}
	r.mu.Unlock()
	if closed {
		a.detached = true
		return a
	}
	st.mu.Lock()
	st.adapters[a.name] = a
	st.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, subscribeTimeout)
	defer cancel()
	if err := r.ps.Subscribe(ctx, a.publicChannel, a.privateChannel); err != nil {
		r.log.Debug("redis subscribe deferred until redis is reachable", "nsp", a.name, "err", err)
	}
	return a
}

// releaseStreams is called by a streams adapter's Close.
func (r *Redis) releaseStreams(a *streamsAdapter) {
	st := r.streams
	st.mu.Lock()
	if st.adapters[a.name] == a {
		delete(st.adapters, a.name)
	}
	st.mu.Unlock()
	r.mu.Lock()
	if r.channels[a.publicChannel].s != a {
		r.mu.Unlock()
		return
	}
	delete(r.channels, a.publicChannel)
	delete(r.channels, a.privateChannel)
	r.open--
	last := r.open == 0
	closed := r.closed
	r.mu.Unlock()
	if last {
		r.Close()
		return
	}
	if !closed {
		ctx, cancel := context.WithTimeout(r.ctx, subscribeTimeout)
		defer cancel()
		r.ps.Unsubscribe(ctx, a.publicChannel, a.privateChannel)
	}
}

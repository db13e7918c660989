package adapter

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Limits of the Redis adapter.
const (
	// DefaultPrefix is the channel prefix Node's adapter uses by default (its `key` option).
	DefaultPrefix = "socket.io"
	// DefaultRequestTimeout is how long a cluster request waits for the other nodes by default.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultStreamMaxLen is the stream's approximate length by default (Node's maxLen).
	DefaultStreamMaxLen = 10_000

	// queueMessages and queueBytes bound what waits to be published. Past either, a message is
	// dropped and counted (RedisStatus.Dropped): broadcasting never waits for Redis.
	queueMessages = 16384
	queueBytes    = 64 << 20
	// batchMessages and batchBytes bound one pipeline of PUBLISH commands.
	batchMessages = 512
	batchBytes    = 1 << 20

	// commandTimeout bounds one pipeline, PING or PUBSUB NUMSUB.
	commandTimeout = 3 * time.Second
	// subscribeTimeout bounds a SUBSCRIBE when a namespace is created; during an outage the
	// subscription is kept and made when the connection comes back.
	subscribeTimeout = time.Second
	// healthInterval: with nothing received for that long, the subscriber pings Redis.
	healthInterval = 3 * time.Second
	// backoffMin and backoffMax bound the wait between reconnection attempts (doubling).
	backoffMin = 50 * time.Millisecond
	backoffMax = time.Second
	// flushTimeout bounds the publishing of what is still queued when the adapter closes.
	flushTimeout = 2 * time.Second
	// maxAckTimeout caps the wait for client acks of a broadcast another node asked for.
	maxAckTimeout = 10 * time.Minute
)

// RedisOptions configures NewRedis.
type RedisOptions struct {
	// URL is the Redis server, in go-redis ParseURL syntax (redis://[user:pass@]host:port/db,
	// rediss://… for TLS, unix://…). Required.
	URL string
	// Prefix starts every channel name; "" means DefaultPrefix. Every node of a cluster (chorus or
	// Node) must use the same.
	Prefix string
	// RequestTimeout bounds how long a cluster request waits for the other nodes; 0 means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Streams selects the Redis Streams mode of Node's @socket.io/redis-streams-adapter 0.3
	// (streams.go) instead of the classic pub/sub one: broadcasts go through a stream (named
	// Prefix, as Node's streamName) and sessions are kept in Redis, so that a client recovers its
	// session on any node.
	Streams bool
	// StreamMaxLen is the approximate length the stream is trimmed to (XADD MAXLEN ~); 0 means
	// DefaultStreamMaxLen.
	StreamMaxLen int64
	// DedupWindow is how long the id of a broadcast made with a claim (BroadcastCommit) is
	// remembered; 0 means DefaultDedupWindow.
	DedupWindow time.Duration
	// Logger receives state changes (connected, unreachable, back) and malformed messages (debug);
	// nil discards them.
	Logger *slog.Logger
}

// Redis connects the namespaces of one chorus server to a cluster of Socket.IO servers (chorus
// nodes, Node servers with @socket.io/redis-adapter 8.x, @socket.io/redis-emitter) through Redis
// pub/sub, in the wire format doc.go describes. Use its Factory as the server's adapter factory.
//
// It holds one connection for subscriptions (one goroutine receives every namespace's messages, in
// the order Redis sends them) and a pool for commands; one goroutine publishes, in FIFO order, what
// the namespaces queue. go-redis re-dials and resubscribes after a failure; Redis tells the state
// (RedisStatus), which is logged when it changes, never per message.
type Redis struct {
	opts   RedisOptions
	log    *slog.Logger
	uid    string
	client *redis.Client
	ps     *redis.PubSub
	// streams mode (streams.go): the stream's state, and a client of one connection for the
	// reader's blocking XREAD (closed by Close, which ends the read at once).
	streams *streamState
	reader  *redis.Client

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed by Close: the publisher flushes and stops
	wg     sync.WaitGroup
	once   sync.Once

	queue       chan outMsg
	queuedBytes atomic.Int64

	// commits waiting for their outcome (commit.go)
	commitMu sync.Mutex
	commits  map[*pendingCommit]struct{}

	mu       sync.RWMutex
	patterns map[string]*redisAdapter // broadcast pattern → adapter
	channels map[string]route         // request / response channel → adapter
	open     int                      // adapters not closed yet
	closed   bool

	stateMu   sync.Mutex
	state     linkState
	current   atomic.Uint32 // state, for the fast path of setLink
	since     time.Time
	subOK     atomic.Bool // the subscriber has received something since its last failure
	pubOK     atomic.Bool // the last publish or PING succeeded
	published atomic.Uint64
	dropped   atomic.Uint64
	malformed atomic.Uint64
	received  atomic.Uint64
	timeouts  atomic.Uint64

	lastDropLog atomic.Int64 // unix nanoseconds
}

type linkState uint8

const (
	linkConnecting linkState = iota
	linkUp
	linkDown
)

type route struct {
	a        *redisAdapter
	s        *streamsAdapter // streams mode: its public and private channels
	response bool            // the response channels; otherwise the request channel
}

// outMsg is one command of the publish queue: a PUBLISH of payload on channel, or in streams mode
// an XADD to the stream, a SET or DEL of a session, or PEXPIREs of live sessions (streams_live.go).
type outMsg struct {
	channel string
	payload []byte
	xadd    *xaddMsg
	set     *setMsg
	del     string
	expire  *expireMsg
	// a committed pub/sub broadcast (commit.go): its outcome, and its claim (the PUBLISH is then
	// made by the claim script)
	commit *pendingCommit
	claim  *claimMsg
}

func (m *outMsg) size() int {
	n := len(m.payload) + len(m.del)
	if m.xadd != nil {
		for _, v := range m.xadd.values {
			n += len(v)
		}
	}
	if m.set != nil {
		n += len(m.set.key) + len(m.set.value)
	}
	if m.expire != nil {
		for _, k := range m.expire.keys {
			n += len(k)
		}
	}
	return n
}

// RedisStatus is the state of the link to Redis.
type RedisStatus struct {
	// Up: subscribed and publishing. While it is false, each node serves its own clients only.
	Up bool
	// State is "connecting" (not connected yet), "up" or "down".
	State string
	// Since is when Up last changed (or when the adapter was created).
	Since time.Time
	// Published counts messages published; Dropped, messages that could not be (queue full during
	// an outage, or lost with a failed pipeline); Malformed, messages from Redis that did not decode
	// and were ignored; Received, messages received from Redis (every channel, this node's own
	// included); Timeouts, cluster requests that returned ErrTimeout.
	Published, Dropped, Malformed, Received, Timeouts uint64
}

// NewRedis parses o.URL and starts the adapter's two goroutines; it does not wait for Redis, whose
// state RedisStatus reports. Close stops it; so does closing the last namespace adapter it created.
func NewRedis(o RedisOptions) (*Redis, error) {
	ro, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// Short timeouts unless the URL sets them, so that an outage is noticed and never holds a
	// publisher or a request for long; no retries, so that a message is never published twice and
	// order is kept (Redis runs a pipeline's commands in order).
	if ro.DialTimeout == 0 {
		ro.DialTimeout = 2 * time.Second
	}
	if ro.ReadTimeout == 0 {
		ro.ReadTimeout = commandTimeout
	}
	if ro.WriteTimeout == 0 {
		ro.WriteTimeout = commandTimeout
	}
	ro.MaxRetries = -1
	ro.DisableIdentity = true
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	setRedisLogger(o.Logger)

	ctx, cancel := context.WithCancel(context.Background())
	client := redis.NewClient(ro)
	r := &Redis{
		opts:     o,
		log:      o.Logger,
		uid:      randomID(),
		client:   client,
		ps:       client.Subscribe(ctx), // no channel yet: nothing is sent
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		queue:    make(chan outMsg, queueMessages),
		patterns: make(map[string]*redisAdapter),
		channels: make(map[string]route),
		commits:  make(map[*pendingCommit]struct{}),
		since:    time.Now(),
	}
	r.pubOK.Store(true)
	if o.Streams {
		if o.StreamMaxLen <= 0 {
			r.opts.StreamMaxLen = DefaultStreamMaxLen
		}
		r.streams = newStreamState(o.Prefix, r.opts.StreamMaxLen)
		ro1 := *ro
		ro1.PoolSize, ro1.MinIdleConns, ro1.MaxIdleConns = 1, 0, 1
		r.reader = redis.NewClient(&ro1)
		r.wg.Add(1)
		go r.streamReader()
	}
	r.wg.Add(2)
	go r.subscriber()
	go r.publisher()
	return r, nil
}

// Factory is an adapter.Factory: it creates the namespace's adapter and subscribes to its channels.
func (r *Redis) Factory(nsp Namespace) Adapter {
	if r.streams != nil {
		return r.streamsFactory(nsp)
	}
	a := newRedisAdapter(r, nsp)
	r.mu.Lock()
	closed := r.closed
	if !closed {
		r.patterns[a.pattern] = a
		r.channels[a.requestChannel] = route{a: a}
		r.channels[a.responseChannel] = route{a: a, response: true}
		r.channels[a.specificResponseChannel] = route{a: a, response: true}
		r.open++
	}
	r.mu.Unlock()
	if closed {
		a.detached = true
		return a
	}
	ctx, cancel := context.WithTimeout(r.ctx, subscribeTimeout)
	defer cancel()
	// go-redis records the subscriptions even when Redis cannot be reached, and makes them when
	// its connection comes back.
	err := errors.Join(r.ps.PSubscribe(ctx, a.pattern),
		r.ps.Subscribe(ctx, a.requestChannel, a.responseChannel, a.specificResponseChannel))
	if err != nil {
		r.log.Debug("redis subscribe deferred until redis is reachable", "nsp", a.name, "err", err)
	}
	return a
}

// release is called by an adapter's Close: it unsubscribes the namespace, and the last one closes r.
func (r *Redis) release(a *redisAdapter) {
	r.mu.Lock()
	if r.patterns[a.pattern] != a {
		r.mu.Unlock()
		return
	}
	delete(r.patterns, a.pattern)
	delete(r.channels, a.requestChannel)
	delete(r.channels, a.responseChannel)
	delete(r.channels, a.specificResponseChannel)
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
		r.ps.PUnsubscribe(ctx, a.pattern)
		r.ps.Unsubscribe(ctx, a.requestChannel, a.responseChannel, a.specificResponseChannel)
	}
}

// Close publishes what is still queued (if Redis is reachable, within a few seconds), then closes
// the connections and stops the goroutines. It is idempotent.
func (r *Redis) Close() error {
	var err error
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.done)
		err = r.ps.Close()
		if r.reader != nil {
			err = errors.Join(err, r.reader.Close())
		}
		r.wg.Wait()
		r.cancel()
		err = errors.Join(err, r.client.Close())
	})
	return err
}

// Status returns the state of the link to Redis.
func (r *Redis) Status() RedisStatus {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	return RedisStatus{
		Up:        r.state == linkUp,
		State:     [...]string{"connecting", "up", "down"}[r.state],
		Since:     r.since,
		Published: r.published.Load(),
		Dropped:   r.dropped.Load(),
		Malformed: r.malformed.Load(),
		Received:  r.received.Load(),
		Timeouts:  r.timeouts.Load(),
	}
}

// Nodes returns the number of nodes in the cluster, this one included: the subscribers of the root
// namespace's request channel (PUBSUB NUMSUB), as ServerCount counts them.
func (r *Redis) Nodes(ctx context.Context) (int, error) {
	return r.subscribers(ctx, r.opts.Prefix+"-request#/#")
}

// subscribers counts the subscribers of a channel (PUBSUB NUMSUB): one per node for the channels
// every node of a namespace subscribes to.
func (r *Redis) subscribers(ctx context.Context, channel string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	counts, err := r.client.PubSubNumSub(ctx, channel).Result()
	if err != nil {
		return 0, err
	}
	return int(counts[channel]), nil
}

// serverCount is a namespace adapter's ServerCount: the subscribers of channel, at least this
// node; 1 for a detached adapter.
func (r *Redis) serverCount(ctx context.Context, detached bool, channel string) (int, error) {
	if detached {
		return 1, nil
	}
	n, err := r.subscribers(ctx, channel)
	if err != nil {
		return 1, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return max(n, 1), nil
}

// publish queues a message; it never blocks. It reports false when the message was dropped.
func (r *Redis) publish(channel string, payload []byte) bool {
	return r.enqueue(outMsg{channel: channel, payload: payload})
}

// enqueue queues a command; it never blocks. It reports false when the command was dropped.
func (r *Redis) enqueue(m outMsg) bool {
	n := int64(m.size())
	if r.queuedBytes.Add(n) > queueBytes {
		r.queuedBytes.Add(-n)
		r.drop()
		return false
	}
	select {
	case r.queue <- m:
		return true
	default:
		r.queuedBytes.Add(-n)
		r.drop()
		return false
	}
}

// drop counts a message the full queue refused. While Redis is up (it is slower than the
// broadcasts), that is logged at most every 10 s; an outage has its own log line.
func (r *Redis) drop() {
	total := r.dropped.Add(1)
	now, last := time.Now().UnixNano(), r.lastDropLog.Load()
	if now-last < int64(10*time.Second) || !r.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	if r.Status().Up {
		r.log.Warn("redis publish queue full: broadcasts to other nodes dropped", "dropped_total", total)
	}
}

// publisher sends the queue in pipelines, in order. After a failure it pings Redis with backoff
// until it answers; messages keep queueing meanwhile (up to the queue's bounds).
func (r *Redis) publisher() {
	defer r.wg.Done()
	batch := make([]outMsg, 0, batchMessages)
	var retry []outMsg // what a failed pipeline may send again, first
	for {
		batch = append(batch[:0], retry...)
		retry = nil
		select {
		case <-r.done:
			r.flush(batch)
			return
		default:
		}
		if len(batch) == 0 {
			select {
			case m := <-r.queue:
				batch = append(batch, m)
			case <-r.done:
				r.flush(batch)
				return
			}
		}
		batch = r.fill(batch)
		if !r.send(batch) {
			// Session writes (SET, DEL, PEXPIRE) are sent again once Redis answers: the same
			// write twice does no harm, and a session lost here could not be recovered.
			// Broadcasts are not: one is never published twice.
			for _, m := range batch {
				if m.set != nil || m.del != "" || m.expire != nil {
					retry = append(retry, m)
					r.queuedBytes.Add(int64(m.size())) // queued again
				}
			}
			r.awaitRedis()
		}
		clear(batch) // let the payloads go
	}
}

// fill adds what is queued to batch, within the batch bounds, without waiting.
func (r *Redis) fill(batch []outMsg) []outMsg {
	size := 0
	for _, m := range batch {
		size += m.size()
	}
	for len(batch) < batchMessages && size < batchBytes {
		select {
		case m := <-r.queue:
			batch = append(batch, m)
			size += m.size()
		default:
			return batch
		}
	}
	return batch
}

// send publishes batch in one pipeline; a failed pipeline's messages are counted as dropped (some
// may have gone out: they are not sent again, so none is published twice).
//
// In streams mode a broadcast's XADD result says when its local recipients get it (streams.go):
// the ids go to the reader; a broadcast whose XADD failed is delivered here at once, without an
// offset, as Node delivers it when its XADD fails.
func (r *Redis) send(batch []outMsg) bool {
	size := 0
	for _, m := range batch {
		size += m.size()
	}
	r.queuedBytes.Add(-int64(size))
	var (
		xadds   []redis.Cmder // per message: XADD, or the claim script's EVAL
		claims  []*redis.Cmd  // per message: the pub/sub claim script's EVAL
		expires [][]*redis.BoolCmd
	)
	if r.streams != nil {
		xadds = make([]redis.Cmder, len(batch))
		r.streams.beginInflight()
		defer r.streams.endInflight()
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range batch {
			switch {
			case m.xadd != nil && m.xadd.claim != "":
				args := make([]any, 0, 3+len(m.xadd.values))
				args = append(args, r.uid, r.windowMillis(), r.opts.StreamMaxLen)
				for _, v := range m.xadd.values {
					args = append(args, v)
				}
				xadds[i] = p.Eval(ctx, claimXAddScript, []string{m.xadd.claim, r.streams.name}, args...)
			case m.xadd != nil:
				xadds[i] = p.XAdd(ctx, &redis.XAddArgs{Stream: r.streams.name, MaxLen: r.opts.StreamMaxLen, Approx: true, Values: m.xadd.values})
			case m.set != nil:
				p.Set(ctx, m.set.key, m.set.value, m.set.ttl)
			case m.del != "":
				p.Del(ctx, m.del)
			case m.expire != nil:
				if expires == nil {
					expires = make([][]*redis.BoolCmd, len(batch))
				}
				cmds := make([]*redis.BoolCmd, len(m.expire.keys))
				for k, key := range m.expire.keys {
					cmds[k] = p.PExpire(ctx, key, m.expire.ttl)
				}
				expires[i] = cmds
			case m.claim != nil:
				if claims == nil {
					claims = make([]*redis.Cmd, len(batch))
				}
				claims[i] = p.Eval(ctx, claimPublishScript, []string{m.claim.key}, r.uid, r.windowMillis(), m.channel, m.payload)
			default:
				p.Publish(ctx, m.channel, m.payload)
			}
		}
		return nil
	})
	if r.streams != nil {
		results := make([]xaddResult, len(batch))
		for i, c := range xadds {
			switch c := c.(type) {
			case *redis.StringCmd:
				results[i].id, results[i].err = c.Result()
			case *redis.Cmd:
				v, cerr := c.Result()
				results[i].err = cerr
				if id, ok := v.(string); ok {
					results[i].id = id
				} else if cerr == nil {
					results[i].dup = true
				}
			}
		}
		r.xaddDone(batch, results)
	}
	for i, cmds := range expires {
		var gone []string
		for k, c := range cmds {
			if ok, cerr := c.Result(); cerr == nil && !ok {
				gone = append(gone, batch[i].expire.keys[k])
			}
		}
		if len(gone) > 0 {
			batch[i].expire.a.rewriteLive(gone)
		}
	}
	// A command Redis answered with an error (e.g. WRONGTYPE) fails alone; only an error of the
	// connection (timeout, refused, reset) fails the whole batch and the link.
	var replyErr redis.Error
	if errors.As(err, &replyErr) {
		err = nil
	}
	for i, m := range batch {
		switch {
		case m.claim != nil:
			n, cerr := claims[i].Int()
			switch {
			case cerr != nil:
				r.fire(m.commit, Unavailable)
			case n == 1:
				m.claim.local()
				r.fire(m.commit, Committed)
			default:
				r.fire(m.commit, Duplicate)
			}
		case m.commit != nil && err != nil:
			r.fire(m.commit, LocalOnly)
		case m.commit != nil:
			r.fire(m.commit, Committed)
		}
	}
	if err != nil {
		r.dropped.Add(uint64(len(batch)))
		r.setLink(false, false, err)
		return false
	}
	r.published.Add(uint64(len(batch)))
	r.setLink(false, true, nil)
	return true
}

// awaitRedis pings with backoff until Redis answers or r closes. In streams mode, broadcasts that
// were queued meanwhile are delivered to the local sockets at once (as the ones made during the
// outage are), not held until Redis is back.
func (r *Redis) awaitRedis() {
	for wait := backoffMin; ; wait = min(2*wait, backoffMax) {
		select {
		case <-r.done:
			return
		case <-time.After(wait):
		}
		if r.streams != nil {
			r.streams.deliverQueued(r)
		}
		// What still waits in the queue (pub/sub broadcasts, kept for when Redis is back) is
		// answered now: LocalOnly, or Unavailable for a claim.
		r.failOutstanding()
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		err := r.client.Ping(ctx).Err()
		cancel()
		if err == nil {
			r.setLink(false, true, nil)
			return
		}
	}
}

// flush publishes what is queued when r closes, if Redis is up, for at most flushTimeout; the
// rest is dropped and counted.
func (r *Redis) flush(batch []outMsg) {
	deadline := time.Now().Add(flushTimeout)
	for {
		batch = r.fill(batch)
		if len(batch) == 0 {
			return
		}
		if r.Status().Up && time.Now().Before(deadline) {
			if r.send(batch) {
				batch = batch[:0]
				continue
			}
			batch = batch[:0] // send counted it
		}
		break
	}
	for _, m := range batch {
		r.queuedBytes.Add(-int64(m.size()))
		r.dropMsg(m)
	}
	r.dropped.Add(uint64(len(batch)))
	for {
		select {
		case m := <-r.queue:
			r.queuedBytes.Add(-int64(m.size()))
			r.dropped.Add(1)
			r.dropMsg(m)
		default:
			return
		}
	}
}

// dropMsg answers the commit of a message that will not be sent (the adapter closes).
func (r *Redis) dropMsg(m outMsg) {
	if m.xadd != nil {
		r.failed(m.xadd.commit)
	}
	r.failed(m.commit)
}

// subscriber receives every message of every namespace and hands it to its adapter, in order.
func (r *Redis) subscriber() {
	defer r.wg.Done()
	wait := backoffMin
	for {
		msg, err := r.ps.ReceiveTimeout(r.ctx, healthInterval)
		select {
		case <-r.done:
			return
		default:
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Nothing for a while: a PING checks the connection (its pong comes as a message).
				ctx, cancel := context.WithTimeout(r.ctx, commandTimeout)
				err = r.ps.Ping(ctx)
				cancel()
				if err == nil {
					continue
				}
			}
			r.setLink(true, false, err)
			select {
			case <-r.done:
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, backoffMax)
			continue
		}
		wait = backoffMin
		r.setLink(true, true, nil)
		if m, ok := msg.(*redis.Message); ok {
			r.received.Add(1)
			r.dispatch(m)
		}
	}
}

// dispatch hands m to its namespace's adapter. A panic while handling it (a bug: the decoders are
// fuzzed) is logged with the message and counted as malformed; the other messages go on.
func (r *Redis) dispatch(m *redis.Message) {
	defer func() {
		if p := recover(); p != nil {
			r.malformed.Add(1)
			payload := m.Payload
			if len(payload) > 256 {
				payload = payload[:256] + "…"
			}
			r.log.Error("redis message handler panic", "channel", m.Channel, "payload", fmt.Sprintf("%q", payload),
				"err", p, "stack", string(debug.Stack()))
		}
	}()
	r.mu.RLock()
	var (
		a  *redisAdapter
		rt route
	)
	if m.Pattern != "" {
		a = r.patterns[m.Pattern]
	} else {
		rt = r.channels[m.Channel]
		a = rt.a
	}
	r.mu.RUnlock()
	switch {
	case rt.s != nil:
		rt.s.onPubSub([]byte(m.Payload))
	case a == nil:
		return
	case m.Pattern != "":
		room, ok := strings.CutPrefix(m.Channel, a.channel)
		if !ok {
			return
		}
		if room != "" {
			// <channel><room>#. As Node does, a broadcast to a room nobody here is in is not even
			// decoded.
			if room, ok = strings.CutSuffix(room, "#"); !ok || !a.hasRoom(room) {
				return
			}
		}
		a.onBroadcast([]byte(m.Payload))
	case rt.response:
		a.onResponse([]byte(m.Payload))
	default:
		a.onRequest([]byte(m.Payload))
	}
}

// setLink records the state of the subscriber's link (sub) or the publisher's and logs a change of
// the overall state, once. The link is up when the subscriber has received something since its
// last failure (after a reconnection, the confirmations of its subscriptions) and the last publish
// or PING succeeded.
func (r *Redis) setLink(sub, ok bool, err error) {
	flag := &r.pubOK
	if sub {
		flag = &r.subOK
	}
	if flag.Load() == ok && linkState(r.current.Load()) != linkConnecting {
		return
	}
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	flag.Store(ok)
	next := linkDown
	if r.subOK.Load() && r.pubOK.Load() {
		next = linkUp
	} else if r.state == linkConnecting && ok {
		return // still connecting: nothing has failed
	}
	if next == r.state {
		return
	}
	prev, downFor := r.state, time.Since(r.since)
	r.state, r.since = next, time.Now()
	r.current.Store(uint32(next))
	switch {
	case next == linkUp && prev == linkConnecting:
		r.log.Info("redis connected", "addr", r.client.Options().Addr, "prefix", r.opts.Prefix, "uid", r.uid)
	case next == linkUp:
		r.log.Info("redis reachable again: cross-node delivery resumed", "down_for", downFor.Round(time.Millisecond),
			"dropped_total", r.dropped.Load())
	default:
		r.log.Warn("redis unreachable: serving local clients only until it returns", "err", err)
	}
}

// malformedMessage counts a message from Redis that did not decode.
func (r *Redis) malformedMessage(nsp, what string, err error) {
	r.malformed.Add(1)
	r.log.Debug("malformed redis message ignored", "nsp", nsp, "kind", what, "err", err)
}

// randomID returns a random id for a node or a request, as uid2 makes them.
func randomID() string {
	var b [9]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// go-redis logs through one process-wide logger; it goes to the most recently created adapter's
// logger at debug level (the adapter logs the state changes that matter itself).
var redisLog atomic.Pointer[slog.Logger]

type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if l := redisLog.Load(); l != nil {
		l.Debug("go-redis: " + fmt.Sprintf(format, v...))
	}
}

var setLoggerOnce sync.Once

func setRedisLogger(l *slog.Logger) {
	redisLog.Store(l)
	setLoggerOnce.Do(func() { redis.SetLogger(redisLogger{}) })
}

package adapter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// streamsAdapter is one namespace's adapter in streams mode: Memory keeps this node's rooms, the
// stream carries broadcasts and room operations, pub/sub the requests that want answers.
type streamsAdapter struct {
	*Memory
	r    *Redis
	name string

	publicChannel  string // <prefix>#<nsp>#
	privateChannel string // <prefix>#<nsp>#<uid>#: responses to this node

	detached bool // created after r closed: local only

	rec atomic.Pointer[RecoveryOptions] // set by EnableRecovery

	// live sessions (streams_live.go): the sessions of this node's connected sockets, by socket id
	liveMu    sync.Mutex
	live      map[string]*Session
	liveTimer *time.Timer

	outage outageLog // broadcasts delivered without a stream entry (streams_outage.go)

	pending requests[*clusterMessage]
}

func newStreamsAdapter(r *Redis, nsp Namespace) *streamsAdapter {
	name := nsp.Name()
	p := r.opts.Prefix
	return &streamsAdapter{
		Memory:         &Memory{nsp: nsp, rooms: make(map[string]map[string]struct{}), sids: make(map[string]map[string]struct{})},
		r:              r,
		name:           name,
		publicChannel:  p + "#" + name + "#",
		privateChannel: p + "#" + name + "#" + r.uid + "#",
	}
}

func (a *streamsAdapter) Close() error {
	a.stopLive()
	if !a.detached {
		a.r.releaseStreams(a)
	}
	return nil
}

// local reports whether the broadcast stays on this node: asked to, or Redis out of reach (as Node,
// whose XADD then fails and which delivers locally).
func (a *streamsAdapter) local(opts BroadcastOptions) bool {
	return opts.Local || a.detached || linkState(a.r.current.Load()) == linkDown
}

// Broadcast adds p to the stream; the reader delivers it to the local sockets when it reaches it,
// in stream order, stamped with its entry id when it is recoverable (and recovery is on).
func (a *streamsAdapter) Broadcast(p *protocol.Packet, opts BroadcastOptions) {
	if a.local(opts) {
		a.deliverLocal(p, opts)
		return
	}
	x, err := a.xadd(p, opts)
	if err != nil {
		a.deliverLocal(p, opts)
		return
	}
	if !a.r.enqueue(outMsg{xadd: x}) {
		a.deliverLocal(p, opts) // the queue is full: this node's sockets at least
	}
}

// xadd returns the stream entry of a broadcast.
func (a *streamsAdapter) xadd(p *protocol.Packet, opts BroadcastOptions) (*xaddMsg, error) {
	opts.Rooms, opts.Except = unique(opts.Rooms), unique(opts.Except)
	data, err := encodeStreamBroadcast(a.name, p, opts)
	if err != nil {
		a.r.log.Error("broadcast not published: it does not encode", "nsp", a.name, "err", err)
		return nil, err
	}
	return &xaddMsg{values: streamValues(a.r.uid, a.name, msgBroadcast, data), a: a, p: p, opts: opts}, nil
}

// deliver sends p to the local sockets opts selects, stamped with offset when it is recoverable.
func (a *streamsAdapter) deliver(p *protocol.Packet, opts BroadcastOptions, offset string) {
	if offset != "" && a.rec.Load() != nil && recoverable(p, opts) {
		q := *p
		q.Offset = offset
		p = &q
	}
	a.nsp.Deliver(p, a.selectIDs(opts), opts.Volatile)
}

// deliverEntry delivers a BROADCAST entry of the stream to the local sockets, whoever made it.
func (a *streamsAdapter) deliverEntry(m *clusterMessage, offset string) {
	if m.Type != msgBroadcast || m.Nsp != a.name || m.Data.RequestID != nil {
		return
	}
	p, o, err := m.broadcastPacket()
	if err != nil {
		a.r.malformedMessage(a.name, "broadcast", err)
		return
	}
	p.Nsp = a.name
	a.deliver(p, o, offset)
}

// onPubSub handles a message of the namespace's public or private channel.
func (a *streamsAdapter) onPubSub(payload []byte) {
	m, err := decodeClusterMessage(payload)
	if err != nil {
		a.r.malformedMessage(a.name, "message", err)
		return
	}
	a.onMessage(m, "")
}

// onMessage handles a message of another node (ClusterAdapter.onMessage): from the stream, with
// its entry id as offset, or from pub/sub.
func (a *streamsAdapter) onMessage(m *clusterMessage, offset string) {
	if m.UID == a.r.uid || m.Nsp != a.name {
		return
	}
	d := &m.Data
	opts := func() (BroadcastOptions, bool) {
		if d.Opts == nil {
			a.r.malformedMessage(a.name, "message", errors.New("no opts"))
			return BroadcastOptions{}, false
		}
		return d.Opts.options(), true
	}
	switch m.Type {
	case msgBroadcast:
		p, o, err := m.broadcastPacket()
		if err != nil {
			a.r.malformedMessage(a.name, "broadcast", err)
			return
		}
		p.Nsp = a.name
		if d.RequestID != nil {
			a.onBroadcastWithAck(m, p, o)
			return
		}
		a.deliver(p, o, offset)
	case msgSocketsJoin, msgSocketsLeave, msgDisconnectSockets:
		o, ok := opts()
		if !ok {
			return
		}
		ids := a.selectIDs(o)
		switch m.Type {
		case msgSocketsJoin:
			a.nsp.JoinLocal(ids, d.Rooms)
		case msgSocketsLeave:
			a.nsp.LeaveLocal(ids, d.Rooms)
		default:
			a.nsp.DisconnectLocal(ids, d.Close)
		}
	case msgFetchSockets:
		o, ok := opts()
		if !ok || d.RequestID == nil {
			return
		}
		infos := nonNilInfos(a.nsp.DescribeLocal(a.selectIDs(o)))
		a.respond(m.UID, msgFetchSocketsResponse, 2, func(e *msgEncoder) {
			e.str("requestId")
			e.str(*d.RequestID)
			e.str("sockets")
			js, _ := json.Marshal(infos)
			e.value(Value{JSON: js})
		})
	case msgServerSideEmit:
		var args []json.RawMessage
		var event string
		if json.Unmarshal(d.Packet, &args) != nil || len(args) == 0 || json.Unmarshal(args[0], &event) != nil {
			a.r.malformedMessage(a.name, "message", errors.New("serverSideEmit packet is not [event, ...args]"))
			return
		}
		if d.RequestID == nil {
			a.nsp.OnServerSideEmit(event, args[1:], nil)
			return
		}
		reqID := *d.RequestID
		var answered atomic.Bool
		a.nsp.OnServerSideEmit(event, args[1:], func(reply json.RawMessage) {
			if answered.Swap(true) {
				return
			}
			if len(reply) == 0 {
				reply = json.RawMessage("null")
			}
			a.respond(m.UID, msgServerSideEmitResponse, 2, func(e *msgEncoder) {
				e.str("requestId")
				e.str(reqID)
				e.str("packet")
				e.value(Value{JSON: reply})
			})
		})
	case msgFetchSocketsResponse, msgServerSideEmitResponse, msgBroadcastClientCount, msgBroadcastAck:
		a.onResponse(m)
	case msgReleaseSession:
		if d.PID != "" && a.rec.Load() != nil {
			go a.nsp.ReleaseSession(d.PID) // it waits for the socket to leave: not on the subscriber
		}
	default:
		// heartbeats and adapter close (ClusterAdapterWithHeartbeat), later types: nothing to do
	}
}

// onBroadcastWithAck delivers another node's broadcast with ack to the local sockets and answers
// with their number, then with each ack as it arrives, until the requester's timeout.
func (a *streamsAdapter) onBroadcastWithAck(m *clusterMessage, p *protocol.Packet, o BroadcastOptions) {
	reqID := *m.Data.RequestID
	timeout := a.r.opts.RequestTimeout
	if f := m.Data.Opts.Flags; f != nil && f.Timeout != nil && *f.Timeout > 0 {
		timeout = min(time.Duration(*f.Timeout*float64(time.Millisecond)), maxAckTimeout)
	}
	ctx, cancel := context.WithTimeout(a.r.ctx, timeout)
	var acked, want atomic.Int64
	want.Store(-1)
	n := a.nsp.DeliverWithAck(ctx, p, a.selectIDs(o), func(v Value) {
		a.respond(m.UID, msgBroadcastAck, 2, func(e *msgEncoder) {
			e.str("requestId")
			e.str(reqID)
			e.str("packet")
			e.value(v)
		})
		if acked.Add(1) == want.Load() {
			cancel()
		}
	})
	want.Store(int64(n))
	if acked.Load() >= int64(n) {
		cancel()
	}
	a.respond(m.UID, msgBroadcastClientCount, 2, func(e *msgEncoder) {
		e.str("requestId")
		e.str(reqID)
		e.str("clientCount")
		e.int(int64(n))
	})
}

// respond publishes a response on the requester's private channel.
func (a *streamsAdapter) respond(requester string, typ, fields int, data func(e *msgEncoder)) {
	b, err := encodeCluster(a.r.uid, a.name, typ, fields, data)
	if err != nil {
		a.r.log.Debug("response not published: it does not encode", "nsp", a.name, "err", err)
		return
	}
	a.r.publish(a.r.opts.Prefix+"#"+a.name+"#"+requester+"#", b)
}

// onResponse hands a response to the request of this node it answers, if any.
func (a *streamsAdapter) onResponse(m *clusterMessage) {
	if m.Data.RequestID == nil {
		return
	}
	sr := a.pending.get(*m.Data.RequestID)
	if sr == nil {
		return
	}
	if sr.acks != nil {
		switch {
		case m.Type == msgBroadcastClientCount && m.Data.ClientCount != nil:
			sr.acks.report(*m.Data.ClientCount)
		case m.Type == msgBroadcastAck:
			js := m.Data.Packet
			if len(js) == 0 {
				js = json.RawMessage("null")
			}
			sr.acks.ack(Value{JSON: js, Attachments: m.attachments})
		}
		return
	}
	sr.add(m)
}

// publishRequest publishes a request on the public channel (msgpack).
func (a *streamsAdapter) publishRequest(typ, fields int, data func(e *msgEncoder)) error {
	b, err := encodeCluster(a.r.uid, a.name, typ, fields, data)
	if err != nil {
		return err
	}
	if a.detached || !a.r.publish(a.publicChannel, b) {
		return fmt.Errorf("%w: request not published", ErrUnavailable)
	}
	return nil
}

// addOp adds a join, leave or disconnect to the stream; the other nodes apply it when they read it.
func (a *streamsAdapter) addOp(typ int, opts BroadcastOptions, rooms []string, closeConn *bool) error {
	if opts.Local {
		return nil
	}
	if a.detached || !a.r.enqueue(outMsg{xadd: &xaddMsg{values: streamValues(a.r.uid, a.name, typ, encodeStreamOps(opts, rooms, closeConn))}}) {
		return fmt.Errorf("%w: not added to the stream", ErrUnavailable)
	}
	return nil
}

// ServerCount counts the subscribers of the namespace's public channel (PUBSUB NUMSUB), as Node
// does: one per node, this one included.
func (a *streamsAdapter) ServerCount(ctx context.Context) (int, error) {
	return a.r.serverCount(ctx, a.detached, a.publicChannel)
}

func (a *streamsAdapter) FetchSockets(ctx context.Context, opts BroadcastOptions) ([]SocketInfo, error) {
	local, _ := a.Memory.FetchSockets(ctx, opts)
	if opts.Local {
		return local, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.r.opts.RequestTimeout)
	defer cancel()
	n, err := a.ServerCount(ctx)
	if err != nil || n <= 1 {
		return local, err
	}
	id, sr := a.pending.begin(nil)
	defer a.pending.end(id)
	err = a.publishRequest(msgFetchSockets, 2, func(e *msgEncoder) {
		e.str("opts")
		e.opts(opts, 0)
		e.str("requestId")
		e.str(id)
	})
	if err != nil {
		return local, err
	}
	out := local
	err = sr.collect(ctx, n-1, func(m *clusterMessage) {
		var infos []SocketInfo
		if json.Unmarshal(m.Data.Sockets, &infos) == nil {
			out = append(out, infos...)
		}
	})
	return out, err
}

func (a *streamsAdapter) SocketsJoin(ctx context.Context, opts BroadcastOptions, rooms []string) error {
	a.Memory.SocketsJoin(ctx, opts, rooms)
	return a.addOp(msgSocketsJoin, opts, rooms, nil)
}

func (a *streamsAdapter) SocketsLeave(ctx context.Context, opts BroadcastOptions, rooms []string) error {
	a.Memory.SocketsLeave(ctx, opts, rooms)
	return a.addOp(msgSocketsLeave, opts, rooms, nil)
}

func (a *streamsAdapter) DisconnectSockets(ctx context.Context, opts BroadcastOptions, closeConn bool) error {
	a.Memory.DisconnectSockets(ctx, opts, closeConn)
	return a.addOp(msgDisconnectSockets, opts, nil, &closeConn)
}

// ssePacket writes [event, ...args] as a msgpack array.
func ssePacket(e *msgEncoder, event string, args []json.RawMessage) {
	e.arrayLen(1 + len(args))
	e.str(event)
	for _, arg := range args {
		e.value(Value{JSON: arg})
	}
}

func (a *streamsAdapter) ServerSideEmit(_ context.Context, event string, args []json.RawMessage) error {
	return a.publishRequest(msgServerSideEmit, 1, func(e *msgEncoder) {
		e.str("packet")
		ssePacket(e, event, args)
	})
}

func (a *streamsAdapter) ServerSideEmitWithAck(ctx context.Context, event string, args []json.RawMessage) ([]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, a.r.opts.RequestTimeout)
	defer cancel()
	replies := []json.RawMessage{}
	n, err := a.ServerCount(ctx)
	if err != nil || n <= 1 {
		return replies, err
	}
	id, sr := a.pending.begin(nil)
	defer a.pending.end(id)
	err = a.publishRequest(msgServerSideEmit, 2, func(e *msgEncoder) {
		e.str("requestId")
		e.str(id)
		e.str("packet")
		ssePacket(e, event, args)
	})
	if err != nil {
		return replies, err
	}
	err = sr.collect(ctx, n-1, func(m *clusterMessage) {
		if len(m.Data.Packet) == 0 {
			replies = append(replies, json.RawMessage("null"))
		} else {
			replies = append(replies, m.Data.Packet)
		}
	})
	return replies, err
}

// BroadcastWithAck publishes a BROADCAST with a requestId on the public channel (with the
// requester's timeout), delivers p locally, and collects every node's recipient count and acks.
func (a *streamsAdapter) BroadcastWithAck(ctx context.Context, p *protocol.Packet, opts BroadcastOptions) (BroadcastAcks, error) {
	if opts.Local || a.detached {
		return a.Memory.BroadcastWithAck(ctx, p, opts)
	}
	ctx, cancel := context.WithTimeout(ctx, a.r.opts.RequestTimeout)
	defer cancel()
	col := newAckCollector(1)
	id, _ := a.pending.begin(col)
	defer a.pending.end(id)
	timeoutMs := float64(a.r.opts.RequestTimeout.Milliseconds())
	if dl, ok := ctx.Deadline(); ok {
		timeoutMs = float64(time.Until(dl).Milliseconds())
	}
	opts.Rooms, opts.Except = unique(opts.Rooms), unique(opts.Except)
	published := a.publishRequest(msgBroadcast, 3, func(e *msgEncoder) {
		e.str("packet")
		e.packet(a.name, p)
		e.str("requestId")
		e.str(id)
		e.str("opts")
		e.opts(opts, max(timeoutMs, 1))
	})
	col.report(a.nsp.DeliverWithAck(ctx, p, a.selectIDs(opts), col.ack))
	if published != nil {
		res, _ := col.wait(ctx)
		return res, published
	}
	servers, err := a.ServerCount(ctx)
	col.setServers(servers)
	res, werr := col.wait(ctx)
	return res, errors.Join(err, werr)
}

// Recovery, in Redis: offsets are stream entry ids, sessions are kept under sio:session:<pid>
// (msgpack, base64, with an expiry), as Node's streams adapter keeps them, so that either side
// restores the other's sessions. chorus adds the session's From ("from"), which Node ignores.

func (a *streamsAdapter) EnableRecovery(o RecoveryOptions) {
	o = o.withDefaults()
	a.rec.CompareAndSwap(nil, &o)
}

// headStartWait bounds how long Head waits, unless Redis is known to be down, for the reader to
// learn where the stream ends (the first moments of a node: a socket that connects then would
// have no From).
const headStartWait = 2 * time.Second

func (a *streamsAdapter) Head() string {
	if a.rec.Load() == nil {
		return ""
	}
	st := a.r.streams
	if _, ok := st.headID(); !ok && linkState(a.r.current.Load()) != linkDown {
		select {
		case <-st.started:
		case <-time.After(headStartWait):
		}
	}
	st.deliverMu.Lock()
	defer st.deliverMu.Unlock()
	h, _ := st.headID()
	if h == "" {
		return ""
	}
	return a.headLocked(h)
}

func (a *streamsAdapter) PersistSession(s Session) {
	o := a.rec.Load()
	if o == nil || a.detached {
		return
	}
	b, err := encodeSession(s)
	if err != nil {
		a.r.log.Warn("session not kept: it does not encode", "nsp", a.name, "sid", s.SID, "err", err)
		return
	}
	// Under liveMu, so that no refresh of the live session comes after the released one.
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	a.forgetLiveLocked(s.SID)
	if !a.r.enqueue(outMsg{set: &setMsg{key: sessionKeyPrefix + s.PID, value: base64.StdEncoding.EncodeToString(b), ttl: o.MaxDisconnection}}) {
		a.r.log.Warn("session not kept: the redis queue is full", "nsp", a.name, "sid", s.SID)
	}
}

// sessionGrace bounds the wait for a session that is not in Redis yet: the node the client was on
// may not have written it when the client reaches this one.
var sessionGrace = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}

func (a *streamsAdapter) RestoreSession(ctx context.Context, pid, offset string, attach func(Session, []*protocol.Packet)) error {
	if a.rec.Load() == nil || a.detached {
		return errNoSession("recovery is off")
	}
	st := a.r.streams
	// While Redis is unreachable the session and what the client missed are out of reach: the
	// client waits (its CONNECT is answered late) rather than lose them, up to OutageWait.
	if err := a.r.awaitUp(ctx, a.rec.Load().OutageWait); err != nil {
		return fmt.Errorf("restore session: %w", err)
	}
	// A session live on another node (its socket connected there, as far as Redis knows) is
	// released by that node first, unless that node is dead.
	if err := a.awaitReleased(ctx, pid); err != nil {
		return fmt.Errorf("restore session: %w", err)
	}
	raw, err := a.takeSession(ctx, pid)
	if err == nil && raw == "" {
		// Not kept (yet): the node the client was on may not have noticed that its connection
		// dropped, or not written the session yet. Ask it to let the socket go, and wait a little.
		a.publishRequest(msgReleaseSession, 1, func(e *msgEncoder) {
			e.str("pid")
			e.str(pid)
		})
	}
	for i := 0; err == nil && raw == "" && i < len(sessionGrace); i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(sessionGrace[i]):
		}
		raw, err = a.takeSession(ctx, pid)
	}
	if err != nil {
		return err
	}
	if raw == "" {
		return errNoSession("unknown or expired session")
	}
	stored, err := decodeSession(raw)
	if err != nil {
		return errNoSession("session does not decode: " + err.Error())
	}
	s := stored.Session
	info, err := a.r.client.XInfoStream(ctx, st.name).Result()
	switch {
	case err != nil && strings.Contains(err.Error(), "no such key"):
		// No stream: nothing was ever added, or Redis lost it (restarted without its data).
		info, err = &redis.XInfoStream{LastGeneratedID: "0-0"}, nil
	case err != nil:
		return fmt.Errorf("restore session: %w", err)
	}
	end, _ := newStreamID(info.LastGeneratedID)
	// Positions: a stream entry id, or a local offset of the outage log (streams_outage.go).
	fromPos, ok := a.parseOffset(s.From)
	cPos, cok := a.parseOffset(offset)
	c := cPos.id
	if cok && end.less(c) {
		// The stream ends before an entry the client received: Redis lost it (a restart
		// without persistence), and with it whatever came after that entry.
		return errNoSession("the stream was lost: it ends before the client's offset")
	}
	if cok && (!ok || fromPos.less(cPos)) {
		fromPos, ok = cPos, true // an offset the client received, later than the session's From
	}
	from := fromPos.id
	if !ok {
		return errNoSession("neither the session nor the client has an offset")
	}
	if end.less(from) {
		// The stream ends before what the client or its session has seen: Redis lost it (a
		// restart without persistence), and what came after the client's offset with it.
		return errNoSession("the stream was lost: it ends before the session's offset")
	}
	if !a.kept(ctx, info, from) {
		return errNoSession("packets it missed are no longer in the stream")
	}
	var (
		missed  []streamEntry
		fetched = from // entries up to fetched are in missed
	)
	for attempt := 0; ; attempt++ {
		st.deliverMu.Lock()
		hs, started := st.headID()
		head, _ := newStreamID(hs)
		if started && !head.less(from) && !fetched.less(head) {
			packets := make([]*protocol.Packet, 0, len(missed))
			ids := make([]streamID, 0, len(missed))
			for _, e := range missed {
				if !head.less(e.id) {
					packets = append(packets, e.p)
					ids = append(ids, e.id)
				}
			}
			local, kept := a.missedLocal(fromPos, s.Rooms)
			if !kept {
				st.deliverMu.Unlock()
				return errNoSession("packets it missed are no longer in this node's outage log")
			}
			s.From = from.String()
			if fromPos.seq > 0 {
				s.From = localOffset(fromPos, a.r.uid)
			}
			attach(s, mergeMissed(packets, ids, local))
			st.deliverMu.Unlock()
			return nil
		}
		st.deliverMu.Unlock()
		if attempt >= 200 || ctx.Err() != nil {
			return errNoSession("this node's stream reader is behind the client")
		}
		if !started || head.less(from) {
			// The client has received an entry this node's reader has not reached yet.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		more, last, err := a.readMissed(ctx, fetched, s.Rooms)
		if err != nil {
			return fmt.Errorf("restore session: %w", err)
		}
		missed = append(missed, more...)
		if last.less(head) {
			last = head // nothing more up to the head (trimmed meanwhile)
		}
		fetched = last
	}
}

// kept reports whether every entry after from is still in the stream. MAXLEN trims from the
// front, so it is when the first entry kept comes right after from, or when nothing was ever
// trimmed, or when from itself is still there (Node's only check); an entry deleted after from
// (XDEL: max-deleted-entry-id, Redis 7) makes it false.
func (a *streamsAdapter) kept(ctx context.Context, info *redis.XInfoStream, from streamID) bool {
	if deleted, ok := newStreamID(info.MaxDeletedEntryID); ok && from.less(deleted) {
		return false
	}
	end, _ := newStreamID(info.LastGeneratedID)
	first, ok := newStreamID(info.FirstEntry.ID)
	switch {
	case !from.less(end):
		return true // nothing was added after from
	case !ok:
		return false // entries were added after from, and none is left
	case !from.next().less(first):
		return true
	case from == streamID{} && info.EntriesAdded > 0 && info.EntriesAdded == info.Length:
		return true // the session began before any entry, and nothing was trimmed since
	}
	// Otherwise from itself must still be there: an entry the client or its session has seen
	// that is gone was trimmed, or the stream is not the one it was (Redis lost it and it was
	// made anew: only the entries after the loss are in it).
	n, err := a.r.client.XRange(ctx, a.r.streams.name, from.String(), from.String()).Result()
	return err == nil && len(n) == 1
}

// streamEntry is a recoverable broadcast of the stream, stamped with its id.
type streamEntry struct {
	id streamID
	p  *protocol.Packet
}

// readMissed reads the stream after from, to its end, and returns the recoverable broadcasts of
// the namespace that reach rooms, and the last id read.
func (a *streamsAdapter) readMissed(ctx context.Context, from streamID, rooms []string) ([]streamEntry, streamID, error) {
	var out []streamEntry
	last := from
	for {
		msgs, err := a.r.client.XRangeN(ctx, a.r.streams.name, last.next().String(), "+", restoreReadCount).Result()
		if err != nil {
			return nil, last, err
		}
		for _, m := range msgs {
			id, ok := newStreamID(m.ID)
			if !ok {
				continue
			}
			last = id
			if nsp, _ := m.Values["nsp"].(string); nsp != a.name {
				continue
			}
			if t, _ := m.Values["type"].(string); t != "3" {
				continue
			}
			cm, err := decodeStreamEntry(m.Values)
			if err != nil || cm.Data.RequestID != nil {
				continue
			}
			p, o, err := cm.broadcastPacket()
			if err != nil || !recoverable(p, o) || !shouldInclude(rooms, o.Rooms, o.Except) {
				continue
			}
			p.Nsp = a.name
			p.Offset = m.ID
			out = append(out, streamEntry{id, p})
		}
		if len(msgs) < restoreReadCount {
			return out, last, nil
		}
	}
}

// takeSession gets and deletes a session (MULTI GET DEL, as Node does for Redis before 6.2); "" if
// there is none.
func (a *streamsAdapter) takeSession(ctx context.Context, pid string) (string, error) {
	key := sessionKeyPrefix + pid
	var get *redis.StringCmd
	_, err := a.r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, key)
		p.Del(ctx, key)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("restore session: %w", err)
	}
	v, err := get.Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// encodeSession writes a session as Node's persistSession does (msgpack {sid, pid, rooms, data}),
// plus chorus's "from".
func encodeSession(s Session) ([]byte, error) { return encodeSessionFields(s, "") }

// encodeSessionFields writes a session, and with node != "" the field "node" that makes it live
// on that node (streams_live.go).
func encodeSessionFields(s Session, node string) ([]byte, error) {
	e := newMsgEncoder()
	if node != "" {
		e.mapLen(6)
	} else {
		e.mapLen(5)
	}
	e.str("sid")
	e.str(s.SID)
	e.str("pid")
	e.str(s.PID)
	e.str("rooms")
	e.strings(nonNil(s.Rooms))
	e.str("data")
	data := s.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	e.value(Value{JSON: data})
	e.str("from")
	e.str(s.From)
	if node != "" {
		e.str("node")
		e.str(node)
	}
	b, err := e.bytes()
	return append([]byte(nil), b...), err
}

// storedSession is a session as Redis holds it: node is the node it is live on, "" once released.
type storedSession struct {
	Session
	node string
}

// decodeSession reads a session written by Node or chorus (base64 of msgpack).
func decodeSession(raw string) (storedSession, error) {
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return storedSession{}, err
	}
	js, _, err := msgpackToJSON(b)
	if err != nil {
		return storedSession{}, err
	}
	var v struct {
		SID   string          `json:"sid"`
		PID   string          `json:"pid"`
		Rooms []string        `json:"rooms"`
		Data  json.RawMessage `json:"data"`
		From  string          `json:"from"`
		Node  string          `json:"node"`
	}
	if err := json.Unmarshal(js, &v); err != nil {
		return storedSession{}, err
	}
	if v.SID == "" || v.PID == "" {
		return storedSession{}, errors.New("no sid or pid")
	}
	if len(v.Data) == 0 || string(v.Data) == "null" {
		v.Data = json.RawMessage("{}")
	}
	return storedSession{Session{SID: v.SID, PID: v.PID, Rooms: v.Rooms, Data: v.Data, From: v.From}, v.Node}, nil
}

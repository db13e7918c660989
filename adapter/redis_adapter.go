package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// redisAdapter is one namespace's adapter in a Redis cluster: Memory keeps this node's rooms, and
// everything that concerns other nodes goes through Redis in @socket.io/redis-adapter's format.
type redisAdapter struct {
	*Memory
	r    *Redis
	name string

	channel                 string // <prefix>#<nsp>#, the broadcast channels' common start
	pattern                 string // <channel>* with glob characters escaped
	requestChannel          string // <prefix>-request#<nsp>#
	responseChannel         string // <prefix>-response#<nsp>#
	specificResponseChannel string // <responseChannel><uid>#

	detached bool // created after r closed: local only

	pending requests[*wireMessage]
}

func newRedisAdapter(r *Redis, nsp Namespace) *redisAdapter {
	name := nsp.Name()
	p := r.opts.Prefix
	a := &redisAdapter{
		Memory:          &Memory{nsp: nsp, rooms: make(map[string]map[string]struct{}), sids: make(map[string]map[string]struct{})},
		r:               r,
		name:            name,
		channel:         p + "#" + name + "#",
		requestChannel:  p + "-request#" + name + "#",
		responseChannel: p + "-response#" + name + "#",
	}
	a.pattern = globEscape(a.channel) + "*"
	a.specificResponseChannel = a.responseChannel + r.uid + "#"
	return a
}

// globEscape escapes the characters PSUBSCRIBE patterns give a meaning to, so that a namespace or
// prefix holding one matches only itself.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, c := range []byte(s) {
		if strings.IndexByte(`*?[]\`, c) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

func (a *redisAdapter) Close() error {
	if !a.detached {
		a.r.release(a)
	}
	return a.Memory.Close()
}

// Broadcast delivers p to the local sockets and, unless opts.Local, publishes it for the other
// nodes: on <prefix>#<nsp>#<room># when it goes to exactly one room, on <prefix>#<nsp># otherwise.
// A packet for one socket of this node (Conn.Emit with recovery on goes through here to be
// stamped and kept) stays here.
func (a *redisAdapter) Broadcast(p *protocol.Packet, opts BroadcastOptions) {
	a.Memory.Broadcast(p, opts)
	if opts.Local || a.detached || (len(opts.Rooms) == 1 && len(opts.Except) == 0 && a.has(opts.Rooms[0])) {
		return
	}
	msg, ch, err := a.encode(p, opts)
	if err != nil {
		return
	}
	a.r.publish(ch, msg)
}

// encode returns the PUBLISH of a broadcast: its payload and its channel.
func (a *redisAdapter) encode(p *protocol.Packet, opts BroadcastOptions) ([]byte, string, error) {
	opts.Rooms, opts.Except = unique(opts.Rooms), unique(opts.Except)
	msg, err := encodeBroadcast(a.r.uid, a.name, p, opts)
	if err != nil {
		a.r.log.Error("broadcast not published: it does not encode", "nsp", a.name, "err", err)
		return nil, "", err
	}
	ch := a.channel
	if len(opts.Rooms) == 1 {
		ch += opts.Rooms[0] + "#"
	}
	return msg, ch, nil
}

// unique returns l without repeated names, in order (Node's rooms and except are Sets).
func unique(l []string) []string {
	for i := 1; i < len(l); i++ {
		for j := range i {
			if l[i] == l[j] {
				out := make([]string, 0, len(l))
				seen := make(map[string]bool, len(l))
				for _, s := range l {
					if !seen[s] {
						seen[s] = true
						out = append(out, s)
					}
				}
				return out
			}
		}
	}
	return l
}

// onBroadcast handles a message of a broadcast channel: another node's broadcast, delivered to the
// local sockets it selects.
func (a *redisAdapter) onBroadcast(payload []byte) {
	uid, p, opts, err := decodeBroadcast(payload)
	switch {
	case err != nil:
		a.r.malformedMessage(a.name, "broadcast", err)
	case uid == a.r.uid, p.Nsp != a.name:
		// our own, or another namespace's (Node ignores both)
	default:
		a.Memory.Broadcast(p, opts)
	}
}

// respond publishes a JSON response on the common response channel, as Node's adapter does by
// default (publishOnSpecificResponseChannel false).
func (a *redisAdapter) respond(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		a.r.log.Error("response not published: it does not encode", "nsp", a.name, "err", err)
		return
	}
	a.r.publish(a.responseChannel, b)
}

// onRequest handles a request from another node or an emitter.
func (a *redisAdapter) onRequest(payload []byte) {
	m, err := decodeMessage(payload)
	if err == nil && m.Type == nil {
		err = errors.New("request without a type")
	}
	if err != nil {
		a.r.malformedMessage(a.name, "request", err)
		return
	}
	if m.UID != nil && *m.UID == a.r.uid {
		return // our own: applied locally when it was made
	}
	reqID := ""
	if m.RequestID != nil {
		reqID = *m.RequestID
	}
	nsp := a.nsp
	switch *m.Type {
	case reqSockets:
		ids := a.Memory.Sockets(m.Rooms)
		a.respond(struct {
			RequestID string   `json:"requestId"`
			Sockets   []string `json:"sockets"`
		}{reqID, nonNil(ids)})
	case reqAllRooms:
		a.respond(struct {
			RequestID string   `json:"requestId"`
			Rooms     []string `json:"rooms"`
		}{reqID, a.allRooms()})
	case reqRemoteJoin, reqRemoteLeave, reqRemoteDisconnect:
		var ids, rooms []string
		if m.Opts != nil {
			ids, rooms = a.selectIDs(m.Opts.options()), m.Rooms
		} else {
			// The form older nodes send: one socket (sid), one room; answered if the socket is here.
			if m.SID == nil || !a.has(*m.SID) {
				return
			}
			ids = []string{*m.SID}
			if m.Room != nil {
				rooms = []string{*m.Room}
			}
		}
		switch *m.Type {
		case reqRemoteJoin:
			nsp.JoinLocal(ids, rooms)
		case reqRemoteLeave:
			nsp.LeaveLocal(ids, rooms)
		default:
			nsp.DisconnectLocal(ids, m.Close)
		}
		if m.Opts == nil {
			a.respond(struct {
				RequestID string `json:"requestId"`
			}{reqID})
		}
	case reqRemoteFetch:
		if m.Opts == nil {
			a.r.malformedMessage(a.name, "request", errors.New("fetch without opts"))
			return
		}
		a.respond(struct {
			RequestID string       `json:"requestId"`
			Sockets   []SocketInfo `json:"sockets"`
		}{reqID, nonNilInfos(nsp.DescribeLocal(a.selectIDs(m.Opts.options())))})
	case reqServerSideEmit:
		var args []json.RawMessage
		var event string
		if json.Unmarshal(m.Data, &args) != nil || len(args) == 0 || json.Unmarshal(args[0], &event) != nil {
			a.r.malformedMessage(a.name, "request", errors.New("serverSideEmit data is not [event, ...args]"))
			return
		}
		if m.RequestID == nil {
			nsp.OnServerSideEmit(event, args[1:], nil)
			return
		}
		var answered atomic.Bool
		nsp.OnServerSideEmit(event, args[1:], func(reply json.RawMessage) {
			if answered.Swap(true) {
				return
			}
			if len(reply) == 0 {
				reply = json.RawMessage("null")
			}
			a.respond(struct {
				Type      int             `json:"type"`
				RequestID string          `json:"requestId"`
				Data      json.RawMessage `json:"data"`
			}{reqServerSideEmit, reqID, reply})
		})
	case reqBroadcast:
		a.onBroadcastRequest(m, reqID)
	default:
		// types this node does not answer (responses sent to the request channel, future types)
	}
}

// onBroadcastRequest delivers another node's broadcast with ack to the local sockets, answers with
// their number, then with each ack as it arrives, until the requester's timeout.
func (a *redisAdapter) onBroadcastRequest(m *wireMessage, reqID string) {
	var wp wirePacket
	var p *protocol.Packet
	err := json.Unmarshal(m.Packet, &wp)
	if err == nil {
		p, err = eventPacket(&wp, m.attachments)
	}
	if err == nil && m.Opts == nil {
		err = errors.New("broadcast without opts")
	}
	if err != nil {
		a.r.malformedMessage(a.name, "request", err)
		return
	}
	p.Nsp = a.name
	timeout := a.r.opts.RequestTimeout
	if f := m.Opts.Flags; f != nil && f.Timeout != nil && *f.Timeout > 0 {
		timeout = min(time.Duration(*f.Timeout*float64(time.Millisecond)), maxAckTimeout)
	}
	ctx, cancel := context.WithTimeout(a.r.ctx, timeout)
	var (
		acked atomic.Int64
		want  atomic.Int64
	)
	want.Store(-1)
	n := a.nsp.DeliverWithAck(ctx, p, a.selectIDs(m.Opts.options()), func(v Value) {
		if msg, err := encodeBroadcastAck(reqID, v); err == nil {
			a.r.publish(a.responseChannel, msg)
		} else {
			a.r.log.Debug("ack not published: it does not encode", "nsp", a.name, "err", err)
		}
		if acked.Add(1) == want.Load() {
			cancel()
		}
	})
	want.Store(int64(n))
	if acked.Load() >= int64(n) {
		cancel()
	}
	a.respond(struct {
		Type        int    `json:"type"`
		RequestID   string `json:"requestId"`
		ClientCount int    `json:"clientCount"`
	}{reqBroadcastClientCount, reqID, n})
}

// onResponse hands a response to this node's request it answers, if any.
func (a *redisAdapter) onResponse(payload []byte) {
	m, err := decodeMessage(payload)
	if err != nil {
		a.r.malformedMessage(a.name, "response", err)
		return
	}
	if m.RequestID == nil {
		return
	}
	pr := a.pending.get(*m.RequestID)
	if pr == nil {
		return // another node's request, or one that has ended
	}
	if pr.acks != nil {
		switch {
		case m.Type == nil:
		case *m.Type == reqBroadcastClientCount && m.ClientCount != nil:
			pr.acks.report(*m.ClientCount)
		case *m.Type == reqBroadcastAck:
			js := m.Packet
			if len(js) == 0 {
				js = json.RawMessage("null")
			}
			pr.acks.ack(Value{JSON: js, Attachments: m.attachments})
		}
		return
	}
	pr.add(m)
}

// requestContext bounds ctx by the request timeout.
func (a *redisAdapter) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.r.opts.RequestTimeout)
}

// publishRequest queues a request; a full queue (Redis unreachable for a while) is ErrUnavailable.
func (a *redisAdapter) publishRequest(payload []byte) error {
	if a.detached || !a.r.publish(a.requestChannel, payload) {
		return fmt.Errorf("%w: request not published", ErrUnavailable)
	}
	return nil
}

// ServerCount counts the subscribers of the namespace's request channel (PUBSUB NUMSUB), as Node
// does: one per node, this one included.
func (a *redisAdapter) ServerCount(ctx context.Context) (int, error) {
	return a.r.serverCount(ctx, a.detached, a.requestChannel)
}

// remoteCount returns how many other nodes should answer a request (ServerCount - 1).
func (a *redisAdapter) remoteCount(ctx context.Context) (int, error) {
	n, err := a.ServerCount(ctx)
	return n - 1, err
}

func (a *redisAdapter) FetchSockets(ctx context.Context, opts BroadcastOptions) ([]SocketInfo, error) {
	local, _ := a.Memory.FetchSockets(ctx, opts)
	if opts.Local {
		return local, nil
	}
	ctx, cancel := a.requestContext(ctx)
	defer cancel()
	others, err := a.remoteCount(ctx)
	if err != nil || others <= 0 {
		return local, err
	}
	id, pr := a.pending.begin(nil)
	defer a.pending.end(id)
	req, _ := json.Marshal(jsonRequest{UID: a.r.uid, RequestID: id, Type: reqRemoteFetch, Opts: newJSONOpts(opts)})
	if err := a.publishRequest(req); err != nil {
		return local, err
	}
	out := local
	err = pr.collect(ctx, others, func(m *wireMessage) {
		var infos []SocketInfo
		if json.Unmarshal(m.Sockets, &infos) == nil {
			out = append(out, infos...)
		}
	})
	return out, a.counted(err)
}

// counted counts a request that some node did not answer in time, and returns err.
func (a *redisAdapter) counted(err error) error {
	if errors.Is(err, ErrTimeout) {
		a.r.timeouts.Add(1)
	}
	return err
}

// sendToAll applies a join, leave or disconnect here and publishes it for the other nodes, which
// apply it when it reaches them (Node's adapter does not answer these requests).
func (a *redisAdapter) sendToAll(opts BroadcastOptions, req jsonRequest) error {
	if opts.Local {
		return nil
	}
	req.UID, req.Opts = a.r.uid, newJSONOpts(opts)
	b, _ := json.Marshal(req)
	return a.publishRequest(b)
}

func (a *redisAdapter) SocketsJoin(ctx context.Context, opts BroadcastOptions, rooms []string) error {
	a.Memory.SocketsJoin(ctx, opts, rooms)
	return a.sendToAll(opts, jsonRequest{Type: reqRemoteJoin, Rooms: nonNil(rooms)})
}

func (a *redisAdapter) SocketsLeave(ctx context.Context, opts BroadcastOptions, rooms []string) error {
	a.Memory.SocketsLeave(ctx, opts, rooms)
	return a.sendToAll(opts, jsonRequest{Type: reqRemoteLeave, Rooms: nonNil(rooms)})
}

func (a *redisAdapter) DisconnectSockets(ctx context.Context, opts BroadcastOptions, closeConn bool) error {
	a.Memory.DisconnectSockets(ctx, opts, closeConn)
	return a.sendToAll(opts, jsonRequest{Type: reqRemoteDisconnect, Close: &closeConn})
}

func (a *redisAdapter) ServerSideEmit(_ context.Context, event string, args []json.RawMessage) error {
	b, err := json.Marshal(jsonRequest{UID: a.r.uid, Type: reqServerSideEmit, Data: sseData(event, args)})
	if err != nil {
		return err
	}
	return a.publishRequest(b)
}

func sseData(event string, args []json.RawMessage) []json.RawMessage {
	name, _ := json.Marshal(event)
	return append([]json.RawMessage{name}, args...)
}

func (a *redisAdapter) ServerSideEmitWithAck(ctx context.Context, event string, args []json.RawMessage) ([]json.RawMessage, error) {
	ctx, cancel := a.requestContext(ctx)
	defer cancel()
	replies := []json.RawMessage{}
	others, err := a.remoteCount(ctx)
	if err != nil || others <= 0 {
		return replies, err
	}
	id, pr := a.pending.begin(nil)
	defer a.pending.end(id)
	b, err := json.Marshal(jsonRequest{UID: a.r.uid, RequestID: id, Type: reqServerSideEmit, Data: sseData(event, args)})
	if err != nil {
		return replies, err
	}
	if err := a.publishRequest(b); err != nil {
		return replies, err
	}
	err = pr.collect(ctx, others, func(m *wireMessage) {
		if len(m.Data) == 0 {
			replies = append(replies, json.RawMessage("null"))
		} else {
			replies = append(replies, m.Data)
		}
	})
	return replies, a.counted(err)
}

// BroadcastWithAck publishes a BROADCAST request (msgpack, the requester's timeout in its flags),
// delivers p locally, and collects every node's recipient count and its recipients' acks. The
// nodes expected to report are counted with PUBSUB NUMSUB, as Node does. The acks are awaited
// until ctx's deadline when it has one (it is the acks' timeout, Node's flags.timeout, and may be
// longer than the request timeout), until the request timeout otherwise.
func (a *redisAdapter) BroadcastWithAck(ctx context.Context, p *protocol.Packet, opts BroadcastOptions) (BroadcastAcks, error) {
	if opts.Local || a.detached {
		return a.Memory.BroadcastWithAck(ctx, p, opts)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = a.requestContext(ctx)
		defer cancel()
	}
	col := newAckCollector(1)
	id, _ := a.pending.begin(col)
	defer a.pending.end(id)
	timeoutMs := float64(a.r.opts.RequestTimeout.Milliseconds())
	if dl, ok := ctx.Deadline(); ok {
		timeoutMs = float64(time.Until(dl).Milliseconds())
	}
	opts.Rooms, opts.Except = unique(opts.Rooms), unique(opts.Except)
	msg, err := encodeBroadcastRequest(a.r.uid, id, a.name, p, opts, max(timeoutMs, 1))
	if err != nil {
		return BroadcastAcks{Acks: []Value{}}, err
	}
	published := a.publishRequest(msg)
	col.report(a.nsp.DeliverWithAck(ctx, p, a.selectIDs(opts), col.ack))
	if published != nil {
		res, _ := col.wait(ctx)
		return res, published
	}
	servers, err := a.ServerCount(ctx)
	col.setServers(servers)
	res, werr := col.wait(ctx)
	return res, a.counted(errors.Join(err, werr))
}

func nonNilInfos(l []SocketInfo) []SocketInfo {
	if l == nil {
		return []SocketInfo{}
	}
	return l
}

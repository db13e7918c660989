package sio

import (
	"context"
	"encoding/json"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/protocol"
)

// This file is the namespace's side of cluster operations: what the adapter asks of this node's
// sockets (adapter.Namespace), and the operations a handler or the HTTP API runs across every node
// (adapter.Cluster, through the namespace's adapter).

// ServerSideHandler handles an event another node of the cluster sent with ServerSideEmit (chorus)
// or serverSideEmit (Node, the emitter). args are the event's arguments as JSON. ack is nil when
// the sender expects no answer; otherwise call it at most once, from any goroutine, with the answer
// (encoded with encoding/json). Handlers run one at a time, in arrival order, on the goroutine that
// receives from the cluster: they must not block.
type ServerSideHandler func(args []json.RawMessage, ack func(reply any))

// serverSide holds a namespace's ServerSideHandlers.
type serverSide struct {
	mu       sync.RWMutex
	handlers map[string]ServerSideHandler
}

// OnServerSide registers the handler of event for events other nodes send with ServerSideEmit.
func (n *Namespace) OnServerSide(event string, h ServerSideHandler) {
	n.serverSide.mu.Lock()
	defer n.serverSide.mu.Unlock()
	if n.serverSide.handlers == nil {
		n.serverSide.handlers = make(map[string]ServerSideHandler)
	}
	n.serverSide.handlers[event] = h
}

// OnServerSideEmit implements adapter.Namespace.
func (n *Namespace) OnServerSideEmit(event string, args []json.RawMessage, ack func(json.RawMessage)) {
	n.serverSide.mu.RLock()
	h := n.serverSide.handlers[event]
	n.serverSide.mu.RUnlock()
	if h == nil {
		n.srv.log.Debug("server-side event without a handler ignored", "nsp", n.name, "event", event)
		return
	}
	var reply func(any)
	if ack != nil {
		reply = func(v any) {
			b, err := json.Marshal(v)
			if err != nil {
				n.srv.log.Error("server-side ack not sent: it does not encode", "nsp", n.name, "event", event, "err", err)
				return
			}
			ack(b)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			n.srv.log.Error("server-side handler panic", "nsp", n.name, "event", event, "err", r, "stack", string(debug.Stack()))
		}
	}()
	h(args, reply)
}

// DeliverWithAck implements adapter.Namespace: each socket gets p with an ack id of its own; one
// goroutine reports the acks as they arrive, whatever the order of the sockets, until all have
// come or ctx is done; the acks that never came are then forgotten.
func (n *Namespace) DeliverWithAck(ctx context.Context, p *protocol.Packet, ids []string, onAck func(adapter.Value)) int {
	type waiting struct {
		c  *Conn
		id uint64
	}
	var ws []waiting
	sent := time.Now()
	// Each socket's ack (or its disconnect, nil) lands here at most once: sends never block.
	arrived := make(chan *Message, len(ids))
	for _, id := range ids {
		c, ok := n.Socket(id)
		if !ok {
			continue
		}
		c.mu.Lock()
		if !c.connected {
			c.mu.Unlock()
			continue
		}
		c.ackID++
		ackID := c.ackID
		if c.acks == nil {
			c.acks = make(map[uint64]func(*Message))
		}
		c.acks[ackID] = func(m *Message) { arrived <- m }
		c.mu.Unlock()
		q := *p
		q.ID, q.HasID = ackID, true
		c.send(&q)
		ws = append(ws, waiting{c, ackID})
	}
	if len(ws) == 0 {
		return 0
	}
	n.metrics.EventsSent(len(ws))
	report := func(m *Message) {
		if m == nil {
			return // the socket disconnected
		}
		n.metrics.AckRoundTrip(m.at.Sub(sent))
		v := adapter.Value{JSON: json.RawMessage("null"), Attachments: m.Attachments}
		if len(m.Args) > 0 {
			v.JSON = m.Args[0]
		}
		onAck(v)
	}
	go func() {
		for range ws {
			select {
			case m := <-arrived:
				report(m)
			case <-ctx.Done():
				for _, w := range ws {
					w.c.mu.Lock()
					delete(w.c.acks, w.id)
					w.c.mu.Unlock()
				}
				return
			}
		}
	}()
	return len(ws)
}

// DescribeLocal implements adapter.Namespace: the sockets as Node's fetchSockets() reports them.
func (n *Namespace) DescribeLocal(ids []string) []adapter.SocketInfo {
	out := make([]adapter.SocketInfo, 0, len(ids))
	for _, id := range ids {
		c, ok := n.Socket(id)
		if !ok {
			continue
		}
		c.mu.Lock()
		data := json.RawMessage("{}")
		if c.data != nil {
			var err error
			if data, err = json.Marshal(c.data); err != nil {
				data = json.RawMessage("null")
			}
		}
		c.mu.Unlock()
		out = append(out, adapter.SocketInfo{ID: id, Handshake: nodeHandshake(c.handshake, c.client.conn.Request().Host), Rooms: c.Rooms(), Data: data})
	}
	return out
}

// nodeHandshake encodes h as Node's socket.handshake: header names in lower case and values joined,
// the address without its port, the time as Date#toString writes it.
func nodeHandshake(h *Handshake, host string) json.RawMessage {
	headers := make(map[string]any, len(h.Headers)+1)
	if host != "" {
		headers["host"] = host // net/http keeps it apart from the other headers
	}
	for k, v := range h.Headers {
		k = strings.ToLower(k)
		if k == "set-cookie" {
			headers[k] = v
		} else {
			headers[k] = strings.Join(v, ", ")
		}
	}
	query := make(map[string]string, len(h.Query))
	for k, v := range h.Query {
		if len(v) > 0 {
			query[k] = v[len(v)-1]
		}
	}
	addr := h.Address
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	_, xdomain := headers["origin"]
	b, err := json.Marshal(struct {
		Headers map[string]any    `json:"headers"`
		Time    string            `json:"time"`
		Address string            `json:"address"`
		XDomain bool              `json:"xdomain"`
		Secure  bool              `json:"secure"`
		Issued  int64             `json:"issued"`
		URL     string            `json:"url"`
		Query   map[string]string `json:"query"`
		Auth    json.RawMessage   `json:"auth"`
	}{headers, h.Time.Format("Mon Jan 02 2006 15:04:05 GMT-0700 (MST)"), addr, xdomain, h.Secure, h.Issued, h.URL, query, h.Auth})
	if err != nil {
		return json.RawMessage("{}")
	}
	return b
}

// JoinLocal implements adapter.Namespace.
func (n *Namespace) JoinLocal(ids, rooms []string) {
	for _, id := range ids {
		if c, ok := n.Socket(id); ok {
			c.Join(rooms...)
		}
	}
}

// LeaveLocal implements adapter.Namespace.
func (n *Namespace) LeaveLocal(ids, rooms []string) {
	for _, id := range ids {
		if c, ok := n.Socket(id); ok {
			for _, r := range rooms {
				c.Leave(r)
			}
		}
	}
}

// DisconnectLocal implements adapter.Namespace.
func (n *Namespace) DisconnectLocal(ids []string, closeConn bool) {
	for _, id := range ids {
		if c, ok := n.Socket(id); ok {
			c.Disconnect(closeConn)
		}
	}
}

// Cluster operations, across every node that serves the namespace (only this one with the memory
// adapter). Each waits for the other nodes until ctx is done or the adapter's request timeout
// (CHORUS_REDIS_REQUEST_TIMEOUT), and returns what arrived by then with adapter.ErrTimeout.

// ServerCount returns the number of nodes serving the namespace, this one included.
func (n *Namespace) ServerCount(ctx context.Context) (int, error) { return n.adapter.ServerCount(ctx) }

// FetchSockets returns the sockets opts selects, on every node.
func (n *Namespace) FetchSockets(ctx context.Context, opts adapter.BroadcastOptions) ([]adapter.SocketInfo, error) {
	return n.adapter.FetchSockets(ctx, opts)
}

// SocketsJoin makes the sockets opts selects, on every node, join rooms.
func (n *Namespace) SocketsJoin(ctx context.Context, opts adapter.BroadcastOptions, rooms ...string) error {
	return n.adapter.SocketsJoin(ctx, opts, rooms)
}

// SocketsLeave makes the sockets opts selects, on every node, leave rooms.
func (n *Namespace) SocketsLeave(ctx context.Context, opts adapter.BroadcastOptions, rooms ...string) error {
	return n.adapter.SocketsLeave(ctx, opts, rooms)
}

// DisconnectSockets disconnects the sockets opts selects, on every node; with closeConn their
// whole connections are closed.
func (n *Namespace) DisconnectSockets(ctx context.Context, opts adapter.BroadcastOptions, closeConn bool) error {
	return n.adapter.DisconnectSockets(ctx, opts, closeConn)
}

// ServerSideEmit sends event with args (encoded with encoding/json: no binary, as in Node) to the
// namespace's ServerSideHandlers on every other node.
func (n *Namespace) ServerSideEmit(ctx context.Context, event string, args ...any) error {
	js, err := marshalAll(args)
	if err != nil {
		return err
	}
	return n.adapter.ServerSideEmit(ctx, event, js)
}

// ServerSideEmitWithAck does the same and returns one answer per other node.
func (n *Namespace) ServerSideEmitWithAck(ctx context.Context, event string, args ...any) ([]json.RawMessage, error) {
	js, err := marshalAll(args)
	if err != nil {
		return nil, err
	}
	return n.adapter.ServerSideEmitWithAck(ctx, event, js)
}

// EmitWithAck broadcasts event with args to the sockets opts selects, on every node, each asked
// for an ack, and returns the first argument of every ack (and the recipients' count) that arrived
// before ctx was done: its deadline is the acks' timeout; without one, the Redis adapter stops at
// its request timeout and the memory adapter waits for every ack.
func (n *Namespace) EmitWithAck(ctx context.Context, opts adapter.BroadcastOptions, event string, args ...any) (adapter.BroadcastAcks, error) {
	p, err := eventPacket(n.name, event, args)
	if err != nil {
		return adapter.BroadcastAcks{}, err
	}
	return n.adapter.BroadcastWithAck(ctx, p, opts)
}

func marshalAll(args []any) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(args))
	for _, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

package sio

import (
	"context"
	"encoding/json"
	"errors"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/protocol"
)

// maxQueued bounds the events a socket may have waiting for its handlers; past it the connection's
// reader waits, which pushes back on the client through its transport.
const maxQueued = 256

// Handshake is what a socket's connection request carried.
type Handshake struct {
	Headers map[string][]string `json:"headers"`
	Query   map[string][]string `json:"query"`
	Address string              `json:"address"`
	Secure  bool                `json:"secure"`
	Time    time.Time           `json:"-"`
	Issued  int64               `json:"issued"`
	URL     string              `json:"url"`
	Auth    json.RawMessage     `json:"auth"`

	// Set by handshake middleware, for the socket it admits (never sent anywhere):
	// Session is what the socket's later handlers need of the handshake, e.g. its authenticated
	// identity; Rooms are rooms the socket is in from the start, before the client hears that it
	// is connected (e.g. the user's personal room).
	Session any      `json:"-"`
	Rooms   []string `json:"-"`
}

// Conn is a socket: one client's connection to one namespace.
type Conn struct {
	id        string
	nsp       *Namespace
	client    *client
	handshake *Handshake
	transport string // guarded by client.mu; see client.transport

	// pid is the private session id of connection-state recovery ("" when it is off);
	// recovered says that this socket took over a session (recovery.go).
	pid       string
	recovered bool

	mu        sync.Mutex
	connected bool
	data      map[string]any
	ackID     uint64
	acks      map[uint64]func(*Message) // pending acks: each called once, with the ack or with nil on disconnect; must not block
	// With recovery: from is the offset before which the client has received every packet sent
	// to it (adapter.Session.From); pingHead, the adapter's head when the unanswered ping was
	// queued. kicked: the server disconnected the socket on purpose, so no session is kept.
	from     string
	pingHead string
	kicked   bool
	gone     chan struct{} // closed once onClose has finished

	// Handlers run one at a time in arrival order: on the connection's reader when the socket is
	// idle, and events that arrive while one runs wait here.
	qmu     sync.Mutex
	qcond   *sync.Cond // created when the queue is first full
	queue   []queued
	running bool // a handler of this socket is running
	closed  bool
	// inline: a handler is running on the connection's reader. If it waits for a client ack, the
	// reader is handed over (see EmitWithAck) so that the ack can be read.
	inline atomic.Bool
	// acking: the event whose handler is running asked for an ack (AckRequested).
	acking atomic.Bool

	// guard, if set (Guard), is asked on the reader before each incoming event is queued.
	guard func(event string) error
}

type queued struct {
	event string
	msg   *Message
	ackID uint64
	ack   bool
}

func newConn(id string, n *Namespace, cl *client, h *Handshake) *Conn {
	c := &Conn{id: id, nsp: n, client: cl, handshake: h, connected: true, gone: make(chan struct{})}
	return c
}

// ID returns the socket id.
func (c *Conn) ID() string { return c.id }

// ClientID returns the id of the socket's connection (the Engine.IO session id), which its sockets
// in other namespaces share. It is the session's credential for long-polling requests: show it to
// administrators only.
func (c *Conn) ClientID() string { return c.client.conn.ID() }

// Namespace returns the socket's namespace.
func (c *Conn) Namespace() *Namespace { return c.nsp }

// Handshake returns the socket's handshake.
func (c *Conn) Handshake() *Handshake { return c.handshake }

// Transport returns the current transport: "polling" or "websocket".
func (c *Conn) Transport() string { return c.client.conn.Transport() }

// Buffered returns the number of packets queued on the socket's connection and not yet written.
func (c *Conn) Buffered() int { return c.client.conn.Buffered() }

// Set stores a value on the socket for later handlers.
func (c *Conn) Set(key string, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data == nil {
		c.data = make(map[string]any)
	}
	c.data[key] = v
}

// Get returns a value stored with Set.
func (c *Conn) Get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.data[key]
	return v, ok
}

// Connected reports whether the socket is still connected.
func (c *Conn) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Join adds the socket to rooms; it does nothing once the socket has disconnected.
func (c *Conn) Join(rooms ...string) {
	m := c.nsp.srv.monitor
	c.mu.Lock()
	if !c.connected {
		c.mu.Unlock()
		return
	}
	var joined []string
	if m != nil {
		// Which rooms are new, for the monitor; under c.mu, which every change of c's rooms holds.
		had := c.nsp.adapter.Rooms(c.id)
		for _, r := range rooms {
			if !slices.Contains(had, r) && !slices.Contains(joined, r) {
				joined = append(joined, r)
			}
		}
	}
	c.nsp.adapter.Join(c.id, rooms...)
	c.mu.Unlock()
	for _, r := range joined {
		m.Joined(c, r)
	}
}

// Leave removes the socket from room.
func (c *Conn) Leave(room string) {
	m := c.nsp.srv.monitor
	c.mu.Lock()
	if !c.connected {
		c.mu.Unlock()
		return
	}
	was := m != nil && slices.Contains(c.nsp.adapter.Rooms(c.id), room)
	c.nsp.adapter.Leave(c.id, room)
	c.mu.Unlock()
	if was {
		m.Left(c, room)
	}
}

// Rooms returns the socket's rooms, sorted, including the room named by its own id.
func (c *Conn) Rooms() []string {
	r := c.nsp.adapter.Rooms(c.id)
	slices.Sort(r)
	return r
}

// Emit sends event with args to this socket only. With recovery on, it goes through the adapter,
// as in Node, to be stamped with an offset and kept: a client that recovers its session gets it
// even if it was emitted while the connection was down.
func (c *Conn) Emit(event string, args ...any) error {
	p, err := eventPacket(c.nsp.name, event, args)
	if err != nil {
		return err
	}
	if c.pid != "" { // through the adapter, to be kept for recovery; counted there as a broadcast
		c.nsp.adapter.Broadcast(p, adapter.BroadcastOptions{Rooms: []string{c.id}})
		if m := c.nsp.srv.monitor; m != nil {
			m.Event(c, false, p.Data)
		}
		return nil
	}
	c.send(p)
	c.sentEvent(p)
	return nil
}

// sentEvent counts an event sent to this socket alone and shows it to the monitor.
func (c *Conn) sentEvent(p *protocol.Packet) {
	c.nsp.metrics.EventsSent(1)
	if m := c.nsp.srv.monitor; m != nil {
		m.Event(c, false, p.Data)
	}
}

var ErrDisconnected = errors.New("socket disconnected")

// EmitWithAck sends event and waits for the client's ack, until ctx is done or the socket
// disconnects. Acks are handled as they arrive, not behind the socket's queue, so a handler may
// call it without deadlocking.
func (c *Conn) EmitWithAck(ctx context.Context, event string, args ...any) (*Message, error) {
	p, err := eventPacket(c.nsp.name, event, args)
	if err != nil {
		return nil, err
	}
	ch := make(chan *Message, 1)
	c.mu.Lock()
	if !c.connected {
		c.mu.Unlock()
		return nil, ErrDisconnected
	}
	c.ackID++
	id := c.ackID
	if c.acks == nil {
		c.acks = make(map[uint64]func(*Message))
	}
	c.acks[id] = func(m *Message) { ch <- m }
	c.mu.Unlock()
	p.ID, p.HasID = id, true
	sent := time.Now()
	c.send(p)
	c.sentEvent(p)
	if c.inline.CompareAndSwap(true, false) {
		// This handler runs on the connection's reader, which must go on reading for the ack to
		// arrive: hand the reading over to a new goroutine; later events queue behind this handler.
		c.client.conn.ReleaseReader()
	}
	select {
	case m := <-ch:
		if m == nil {
			return nil, ErrDisconnected
		}
		c.nsp.metrics.AckRoundTrip(m.at.Sub(sent))
		return m, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.acks, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *Conn) send(p *protocol.Packet) {
	pkts := encodePacket(p)
	if c.client.conn.Send(pkts...) {
		c.nsp.srv.sent(pkts, 1)
	}
}

// Disconnect removes the socket from its namespace, telling the client (which then does not reconnect
// by itself); with closeConn the whole connection is closed too.
func (c *Conn) Disconnect(closeConn bool) { c.disconnect("", closeConn) }

// EventDisconnect is the event that tells a client why the server is about to disconnect it
// (DisconnectWith); its one argument is {code, message}.
const EventDisconnect = "chorus:disconnect"

// DisconnectWith disconnects the socket like Disconnect, telling the client why first: it receives
// the event EventDisconnect with e ({code, message}), then the disconnect. e.Code is the socket's
// disconnect reason (OnDisconnect, the log).
func (c *Conn) DisconnectWith(e *Error, closeConn bool) {
	if c.Connected() {
		c.Emit(EventDisconnect, e)
	}
	c.disconnect(e.Code, closeConn)
}

func (c *Conn) disconnect(reason string, closeConn bool) {
	c.mu.Lock()
	c.kicked = true // on purpose: no session is kept
	c.mu.Unlock()
	if closeConn {
		if reason == "" {
			reason = "forced server close"
		}
		c.send(&protocol.Packet{Type: protocol.Disconnect, Nsp: c.nsp.name})
		c.client.conn.Close(reason)
		return
	}
	if reason == "" {
		reason = "server namespace disconnect"
	}
	if c.client.detach(c) {
		c.send(&protocol.Packet{Type: protocol.Disconnect, Nsp: c.nsp.name})
		c.onClose(reason)
	}
}

// Guard sets a function asked, on the connection's reader, before each event the client sends is
// queued for its handler: nil lets the event through; an error refuses it (the client gets it in its
// ack if it asked for one: an *Error keeps its code) and the handler does not run. Set it from an
// OnConnect function, before the socket's first event is read; it may call DisconnectWith.
func (c *Conn) Guard(f func(event string) error) { c.guard = f }

// onAck resolves a pending EmitWithAck.
func (c *Conn) onAck(id uint64, m *Message) {
	c.mu.Lock()
	f, ok := c.acks[id]
	delete(c.acks, id)
	c.mu.Unlock()
	if ok {
		m.at = time.Now()
		f(m)
	}
}

// enqueue hands an event to the socket's handlers. When no handler of the socket is running, the
// event runs at once on the caller, the connection's reader: no goroutine is started and no queue is
// touched on the common path. Otherwise it waits in the queue (bounded: past maxQueued the reader
// waits, which pushes back on the client) for the goroutine running the current handler.
func (c *Conn) enqueue(q queued) {
	c.qmu.Lock()
	if c.running {
		for len(c.queue) >= maxQueued && !c.closed {
			if c.qcond == nil {
				c.qcond = sync.NewCond(&c.qmu)
			}
			c.qcond.Wait()
		}
		c.queue = append(c.queue, q)
		c.qmu.Unlock()
		return
	}
	c.running = true
	c.qmu.Unlock()
	c.inline.Store(true)
	c.dispatch(q)
	c.inline.Store(false)
	c.drain()
}

// drain runs the events queued behind a handler, in order, then marks the socket idle. Events that
// arrived before a disconnect still run (a publish sent just before a drop is not lost); their acks go
// nowhere.
func (c *Conn) drain() {
	for {
		c.qmu.Lock()
		if len(c.queue) == 0 {
			c.running = false
			c.qmu.Unlock()
			return
		}
		q := c.queue[0]
		c.queue[0] = queued{}
		c.queue = c.queue[1:]
		if len(c.queue) == 0 {
			c.queue = nil
		}
		if c.qcond != nil {
			c.qcond.Signal()
		}
		c.qmu.Unlock()
		c.dispatch(q)
	}
}

// dispatch runs one event's handler, recovering a panic, and sends the ack if one was asked for.
func (c *Conn) dispatch(q queued) {
	log := c.nsp.srv.log
	h, ok := c.nsp.handlers[q.event]
	var (
		resp any
		err  error
	)
	switch {
	case IsReserved(q.event):
		err = Errorf(CodeReservedEvent, "%q is a reserved event name", q.event)
	case !ok:
		log.Debug("unknown event ignored", "sid", c.id, "nsp", c.nsp.name, "event", q.event)
		if !q.ack {
			return
		}
		err = Errorf(CodeUnknownEvent, "no such event %q", q.event)
	default:
		resp, err = c.run(h, q)
	}
	if !q.ack {
		if err != nil {
			log.Debug("request refused", "sid", c.id, "nsp", c.nsp.name, "event", q.event, "err", err)
		}
		return
	}
	c.ack(q, resp, err)
}

// ack answers request q with resp, or with {ok:false, error} if err is not nil.
func (c *Conn) ack(q queued, resp any, err error) {
	var args []any
	if err != nil {
		args = []any{errorAck{OK: false, Error: asError(err)}}
	} else if m, ok := resp.(*Message); ok {
		args = []any{m}
	} else {
		args = []any{resp}
	}
	data, attachments, encErr := encodeArgs(nil, args)
	if encErr != nil {
		c.nsp.srv.log.Error("ack encoding failed", "sid", c.id, "nsp", c.nsp.name, "event", q.event, "err", encErr)
		data, attachments, _ = encodeArgs(nil, []any{errorAck{Error: &Error{Code: CodeInternal, Message: "internal error"}}})
	}
	c.send(&protocol.Packet{Type: protocol.Ack, Nsp: c.nsp.name, ID: q.ackID, HasID: true, Data: data, Attachments: attachments})
}

// refuse answers request q, which its guard refused, without running it.
func (c *Conn) refuse(q queued, err error) {
	if q.ack {
		c.ack(q, nil, err)
		return
	}
	c.nsp.srv.log.Debug("request refused", "sid", c.id, "nsp", c.nsp.name, "event", q.event, "err", err)
}

func (c *Conn) run(h handlerFunc, q queued) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.nsp.srv.log.Error("handler panic", "sid", c.id, "nsp", c.nsp.name, "event", q.event, "err", r, "stack", string(debug.Stack()))
			resp, err = nil, &Error{Code: CodeInternal, Message: "internal error"}
		}
	}()
	c.acking.Store(q.ack)
	return h(context.Background(), c, q.msg)
}

// AckRequested reports, from a handler of the socket, whether the event it handles asked for an
// ack: without one, nobody hears the handler's answer.
func (c *Conn) AckRequested() bool { return c.acking.Load() }

// onClose finishes a socket that has left its namespace: session (with recovery), rooms, pending
// acks, hooks, log. It runs once; later calls return at once.
func (c *Conn) onClose(reason string) {
	c.mu.Lock()
	if !c.connected {
		c.mu.Unlock()
		return
	}
	c.connected = false
	defer close(c.gone)
	persisted := c.pid != "" && !c.kicked && recoverableReason(reason)
	if persisted {
		c.persistLocked()
	} else if c.pid != "" {
		c.dropSessionLocked()
	}
	mon := c.nsp.srv.monitor
	var rooms []string
	if mon != nil {
		rooms = c.Rooms()
	}
	c.nsp.adapter.LeaveAll(c.id)
	acks := c.acks
	c.acks = nil
	c.mu.Unlock()
	for _, f := range acks {
		f(nil)
	}
	c.qmu.Lock()
	c.closed = true
	if c.qcond != nil {
		c.qcond.Broadcast()
	}
	c.qmu.Unlock()
	c.nsp.remove(c)
	// c is detached from its client by now, so its transport no longer changes.
	c.client.mu.Lock()
	transport := c.transport
	c.client.mu.Unlock()
	c.nsp.metrics.Disconnected(transport, reason)
	if mon != nil {
		mon.Disconnected(c, reason, rooms)
	}
	for _, f := range c.nsp.onDisconnect {
		f(c, reason)
	}
	c.nsp.srv.log.Info("disconnect", "sid", c.id, "nsp", c.nsp.name, "transport", transport, "reason", reason,
		"duration", time.Since(c.handshake.Time).Round(time.Millisecond))
	if persisted {
		c.nsp.srv.keep(c.nsp) // a dynamic namespace stays while the session does
	}
	c.nsp.srv.release(c.nsp) // the socket held its namespace
}

var reserved = []string{"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}

// IsReserved reports whether Socket.IO reserves an event name.
func IsReserved(event string) bool { return slices.Contains(reserved, event) }

package sio

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/engine"
	"github.com/chorus-rt/chorus/internal/protocol"
)

// Middleware decides whether a socket may connect to a namespace. It runs on the connection's reader
// before the socket exists anywhere; auth is the handshake's `auth` object (null if none). An error
// refuses the socket with connect_error (an *Error's code goes to data.code).
type Middleware func(ctx context.Context, h *Handshake, auth json.RawMessage) error

// handlerFunc is a decoded handler: the value it returns is the ack's single argument.
type handlerFunc func(ctx context.Context, c *Conn, m *Message) (any, error)

// Namespace is a Socket.IO namespace. Configure it (Use, Handle, OnConnect…) before clients can reach
// it: for "/" and exact names before serving, for dynamic ones in NamespaceFunc's setup.
type Namespace struct {
	srv     *Server
	name    string
	adapter adapter.Adapter
	metrics NamespaceMetrics

	middleware   []Middleware
	handlers     map[string]handlerFunc
	onConnect    []func(*Conn)
	onDisconnect []func(*Conn, string)
	serverSide   serverSide               // handlers of events from other nodes (cluster.go)
	recovery     *adapter.RecoveryOptions // nil: connection-state recovery is off (recovery.go)
	granted      func(room string) bool   // rooms only handshake middleware grants (HandshakeRooms)

	mu      sync.RWMutex
	sockets map[string]*Conn
	byPID   map[string]*Conn // with recovery: the sockets by private session id

	// Guarded by srv.mu.
	dynamic   bool        // made from a pattern: removed once nothing holds it
	refs      int         // its sockets, the callers of Acquire, connects in progress, and keepTimer
	keepUntil time.Time   // with recovery: the last session of a socket that left is kept until then
	keepTimer *time.Timer // non-nil while keepUntil holds the namespace (Server.keep)
}

// newNamespace returns a namespace without its adapter.
func newNamespace(s *Server, name string) *Namespace {
	n := &Namespace{srv: s, name: name, handlers: make(map[string]handlerFunc), sockets: make(map[string]*Conn)}
	n.metrics = s.metrics.Namespace(name)
	return n
}

// Name returns the namespace's name.
func (n *Namespace) Name() string { return n.name }

// Adapter returns the namespace's adapter.
func (n *Namespace) Adapter() adapter.Adapter { return n.adapter }

// Use appends handshake middleware; they run in order and the first error refuses the socket.
func (n *Namespace) Use(m Middleware) { n.middleware = append(n.middleware, m) }

// HandshakeRooms declares the rooms that only handshake middleware grants, through Handshake.Rooms
// (e.g. personal rooms "user:<sub>"). With recovery, a session is handed over only to a handshake
// granting the same such rooms as the one that made it: a client that reconnects as another user
// starts a new session, so that it never gets the other user's rooms or missed events.
func (n *Namespace) HandshakeRooms(granted func(room string) bool) { n.granted = granted }

// OnConnect registers a function run after a socket has connected (on the connection's reader).
func (n *Namespace) OnConnect(f func(*Conn)) { n.onConnect = append(n.onConnect, f) }

// OnDisconnect registers a function run once a socket has left, with the reason.
func (n *Namespace) OnDisconnect(f func(*Conn, string)) { n.onDisconnect = append(n.onDisconnect, f) }

// Handle registers the handler of event: the wrapper decodes the event's first argument into Req
// (a missing or null argument is refused when Req is a struct, and otherwise leaves Req's zero value
// for Validate or h to refuse; a Validate() error method on Req is called), runs h on the socket's queue, and acks with
// h's Resp, or with {ok:false, error:{code, message}} when h or the decoding fails.
func Handle[Req, Resp any](n *Namespace, event string, h func(ctx context.Context, c *Conn, req Req) (Resp, error)) {
	object := reflect.TypeFor[Req]().Kind() == reflect.Struct
	n.handlers[event] = func(ctx context.Context, c *Conn, m *Message) (any, error) {
		var req Req
		if object && (len(m.Args) == 0 || string(m.Args[0]) == "null") {
			return nil, Errorf(CodeInvalidArgument, "%s takes an object", event)
		}
		if err := m.Decode(0, &req); err != nil {
			return nil, Errorf(CodeInvalidArgument, "%s: %s", event, describeDecodeError(err))
		}
		if v, ok := any(&req).(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
		if b, ok := any(&req).(BinaryCarrier); ok && len(m.Attachments) > 0 {
			b.SetAttachments(m.Attachments)
		}
		return h(ctx, c, req)
	}
}

// HandleMessage registers a handler that takes the event's arguments as they are. If it returns a
// *Message, the ack carries that message's arguments; otherwise the ack carries the one value.
func (n *Namespace) HandleMessage(event string, h func(ctx context.Context, c *Conn, m *Message) (any, error)) {
	n.handlers[event] = h
}

func describeDecodeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return "field " + te.Field + " must be " + te.Type.String()
		}
		return "argument must be " + te.Type.String()
	}
	return "malformed argument"
}

// Socket returns the local socket with the given id.
func (n *Namespace) Socket(id string) (*Conn, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	c, ok := n.sockets[id]
	return c, ok
}

// Len returns the number of local sockets.
func (n *Namespace) Len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.sockets)
}

// Emit broadcasts event with args to the sockets opts selects; Server.Emitted counts it.
func (n *Namespace) Emit(opts adapter.BroadcastOptions, event string, args ...any) error {
	p, err := eventPacket(n.name, event, args)
	if err != nil {
		return err
	}
	n.srv.emitted.Add(1)
	n.adapter.Broadcast(p, opts)
	return nil
}

// EmitCommit broadcasts event with args like Emit and returns once the adapter has committed it
// (adapter.Committer: the Redis adapters, whose broadcasts reach the other nodes after Emit
// returns), with the outcome; claim, if not nil, is claimed with the broadcast (effectively-once
// publish). With an adapter that is not a Committer it is Emit, and the outcome adapter.Committed
// (claim must then be nil: the caller deduplicates). Called from a handler of socket c, it hands
// c's connection reader over while it waits, as EmitWithAck does, so that the connection's other
// traffic (heartbeats, other namespaces) goes on; c's later events wait, in order. When c's event
// asked for no ack and there is no claim, it does not wait.
func (n *Namespace) EmitCommit(ctx context.Context, c *Conn, opts adapter.BroadcastOptions, claim *adapter.DedupKey, event string, args ...any) (adapter.Commit, error) {
	p, err := eventPacket(n.name, event, args)
	if err != nil {
		return 0, err
	}
	cm, ok := n.adapter.(adapter.Committer)
	if !ok {
		if claim != nil {
			return 0, errors.New("sio: EmitCommit with a claim on an adapter that does not commit")
		}
		n.adapter.Broadcast(p, opts)
		return adapter.Committed, nil
	}
	if claim == nil && c != nil && !c.AckRequested() {
		// Nobody would hear the outcome: the socket's next events need not wait for it.
		cm.BroadcastCommit(p, opts, nil, func(adapter.Commit) {})
		return adapter.Committed, nil
	}
	ch := make(chan adapter.Commit, 1)
	cm.BroadcastCommit(p, opts, claim, func(res adapter.Commit) { ch <- res })
	select {
	case res := <-ch:
		return res, nil
	default:
	}
	if c != nil && c.inline.CompareAndSwap(true, false) {
		c.client.conn.ReleaseReader()
	}
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Committing reports whether the namespace's adapter commits broadcasts (EmitCommit waits for
// Redis) and therefore takes claims itself.
func (n *Namespace) Committing() bool {
	_, ok := n.adapter.(adapter.Committer)
	return ok
}

// Deliver implements adapter.Namespace: p is encoded once, queued on every recipient, and their
// writes are scheduled together.
func (n *Namespace) Deliver(p *protocol.Packet, ids []string, volatile bool) {
	if len(ids) == 0 {
		n.metrics.Broadcast(0)
		return
	}
	pkts := encodePacket(p)
	conns := make([]*engine.Conn, 0, len(ids))
	n.mu.RLock()
	for _, id := range ids {
		c, ok := n.sockets[id]
		if !ok || (volatile && !c.client.conn.Writable()) {
			continue
		}
		conns = append(conns, c.client.conn)
	}
	n.mu.RUnlock()
	// Counted first: a recipient that reads its message and then the metrics finds it counted.
	n.metrics.Broadcast(len(conns))
	n.srv.sent(pkts, len(conns))
	engine.Broadcast(conns, pkts)
}

// sent counts pkts queued for recipients sessions.
func (s *Server) sent(pkts []engine.Packet, recipients int) {
	if recipients == 0 {
		return
	}
	size := 0
	for _, p := range pkts {
		size += len(p.Data)
	}
	s.metrics.Sent(len(pkts)*recipients, size*recipients)
}

// encodePacket turns p into its Engine.IO messages: the text header+payload, then each attachment.
func encodePacket(p *protocol.Packet) []engine.Packet {
	pkts := make([]engine.Packet, 1, 1+len(p.Attachments))
	pkts[0] = engine.Packet{Data: p.Encode()}
	for _, a := range p.Attachments {
		pkts = append(pkts, engine.Packet{Data: a, Binary: true})
	}
	return pkts
}

// add makes c reachable: in the namespace's sockets, and in rooms (its own-id room always).
func (n *Namespace) add(c *Conn, rooms ...string) {
	n.mu.Lock()
	n.sockets[c.id] = c
	if c.pid != "" {
		if n.byPID == nil {
			n.byPID = make(map[string]*Conn)
		}
		n.byPID[c.pid] = c
	}
	n.mu.Unlock()
	n.adapter.Join(c.id, append(rooms, c.id)...)
}

func (n *Namespace) remove(c *Conn) {
	n.mu.Lock()
	if n.sockets[c.id] == c {
		delete(n.sockets, c.id)
	}
	if c.pid != "" && n.byPID[c.pid] == c {
		delete(n.byPID, c.pid)
	}
	n.mu.Unlock()
}

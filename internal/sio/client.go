package sio

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/chorus-rt/chorus/internal/engine"
	"github.com/chorus-rt/chorus/internal/protocol"
)

// client is one Engine.IO session and the sockets it has opened, one per namespace. Its methods run
// on the session's reader (engine.Handler's contract: one at a time).
type client struct {
	srv  *Server
	conn *engine.Conn

	mu      sync.Mutex
	sockets []*Conn // one per namespace; a slice, as clients join one or a few
	closed  bool
	// transport is the session's transport as counted in the metrics (and that of its sockets,
	// Conn.transport), changed by OnUpgrade.
	transport string

	pending     *protocol.Packet // a binary packet waiting for its attachments
	want        int
	attachments [][]byte
	size        int64 // bytes of the pending packet so far, header and attachments

	connectTimer *time.Timer
}

func newClient(s *Server, conn *engine.Conn) *client {
	cl := &client{srv: s, conn: conn, transport: conn.Transport()}
	s.metrics.SessionOpened(cl.transport)
	cl.mu.Lock() // the timer may fire before newClient returns
	defer cl.mu.Unlock()
	cl.connectTimer = time.AfterFunc(s.opts.ConnectTimeout, func() {
		cl.mu.Lock()
		idle := len(cl.sockets) == 0
		cl.mu.Unlock()
		if idle {
			conn.Close("connect timeout")
		}
	})
	return cl
}

func (cl *client) OnMessage(data []byte, binary bool) {
	cl.srv.metrics.Received(len(data))
	if binary {
		if cl.pending == nil {
			cl.fail(protocol.ErrUnexpectedData)
			return
		}
		// A packet and its attachments together are held to the max payload: otherwise one packet
		// could make the server hold MaxAttachments times as much.
		if cl.size += int64(len(data)); cl.size > cl.srv.maxPayload {
			cl.fail(errPacketTooLarge)
			return
		}
		cl.attachments = append(cl.attachments, data)
		if len(cl.attachments) < cl.want {
			return
		}
		p := cl.pending
		cl.pending, cl.want = nil, 0
		atts := cl.attachments
		cl.attachments = nil
		if err := p.Complete(atts); err != nil {
			cl.fail(err)
			return
		}
		cl.onPacket(p)
		return
	}
	if cl.pending != nil {
		cl.fail(protocol.ErrAttachments) // text arrived while attachments were still due
		return
	}
	p, want, err := protocol.DecodeHeader(data)
	if err != nil {
		cl.fail(err)
		return
	}
	if want > 0 {
		cl.pending, cl.want, cl.size = &p, want, int64(len(data))
		return
	}
	if p.Type == protocol.BinaryEvent || p.Type == protocol.BinaryAck {
		if err := p.Complete(nil); err != nil {
			cl.fail(err)
			return
		}
	}
	cl.onPacket(&p)
}

var errPacketTooLarge = errors.New("packet and its attachments larger than the max payload")

// fail closes the connection on a packet that does not decode or is too large, as Node does, and
// logs why (once per connection: the connection is closed).
func (cl *client) fail(err error) {
	cl.srv.log.Info("closing connection: bad packet", "conn", cl.conn.ID(), "remote", cl.conn.Request().RemoteAddr, "err", err)
	cl.conn.Close("parse error")
}

func (cl *client) onPacket(p *protocol.Packet) {
	c := cl.socket(p.Nsp)
	switch {
	case p.Type == protocol.Connect && c == nil:
		cl.connect(p)
	case c == nil || p.Type == protocol.Connect || p.Type == protocol.ConnectError:
		// A packet for a namespace this client has not joined, or a second connect: Node closes the
		// connection ("invalid state"), and so do we.
		cl.srv.log.Debug("invalid state", "conn", cl.conn.ID(), "nsp", p.Nsp, "type", int(p.Type))
		cl.conn.Close("parse error")
	case p.Type == protocol.Disconnect:
		if cl.detach(c) {
			c.onClose("client namespace disconnect")
		}
	case p.Type == protocol.Event || p.Type == protocol.BinaryEvent:
		args, err := protocol.Args(p.Data)
		if err != nil || len(args) == 0 {
			cl.fail(protocol.ErrPayload)
			return
		}
		var event string
		if json.Unmarshal(args[0], &event) != nil {
			cl.fail(protocol.ErrPayload)
			return
		}
		c.nsp.metrics.EventReceived()
		if m := cl.srv.monitor; m != nil {
			m.Event(c, true, p.Data)
		}
		q := queued{event: event, msg: &Message{Args: args[1:], Attachments: p.Attachments}, ackID: p.ID, ack: p.HasID}
		if c.guard != nil {
			if err := c.guard(event); err != nil {
				c.refuse(q, err)
				return
			}
		}
		c.enqueue(q)
	case p.Type == protocol.Ack || p.Type == protocol.BinaryAck:
		args, err := protocol.Args(p.Data)
		if err != nil {
			cl.fail(err)
			return
		}
		c.onAck(p.ID, &Message{Args: args, Attachments: p.Attachments})
	}
}

// connect runs the namespace's middleware and, if they agree, registers the socket before telling the
// client it is connected, so that an event the client sends right after is never refused.
func (cl *client) connect(p *protocol.Packet) {
	req := cl.conn.Request()
	cl.mu.Lock()
	full := len(cl.sockets) >= MaxNamespacesPerConn
	cl.mu.Unlock()
	if full {
		cl.refuse(p.Nsp, CodeTooManyNamespaces, Errorf(CodeTooManyNamespaces, "a connection may join at most %d namespaces", MaxNamespacesPerConn))
		return
	}
	// An existing namespace is held from now on; a dynamic one that does not exist yet is only
	// prepared, and made live (its adapter created) once its middleware has admitted the socket.
	n, held := cl.srv.hold(p.Nsp)
	if !held {
		var ok bool
		if n, ok = cl.srv.prepare(p.Nsp); !ok {
			cl.refuse(p.Nsp, "invalid_namespace", &Error{Message: "Invalid namespace"}) // no code: the same packet as Node
			return
		}
	}
	h := &Handshake{
		Headers: req.Header,
		Query:   req.Query,
		Address: req.RemoteAddr,
		Secure:  req.Secure,
		Time:    time.Now(),
		Issued:  time.Now().UnixMilli(),
		URL:     "/socket.io/?" + req.Query.Encode(),
		Auth:    p.Data,
	}
	if len(h.Auth) == 0 {
		h.Auth = json.RawMessage("{}") // as Node: a handshake without auth has auth {}
	}
	for _, m := range n.middleware {
		if err := m(context.Background(), h, h.Auth); err != nil {
			e := asError(err)
			reason := e.Code
			if reason == "" {
				reason = "refused"
			}
			cl.refuse(p.Nsp, reason, e)
			if held {
				cl.srv.release(n)
			}
			return
		}
	}
	if !held {
		n = cl.srv.register(n)
	}
	// From here on the connect holds n: the socket it makes (recovered or new) takes the hold over,
	// and whatever ends the connect without one lets it go.
	if n.recovery != nil {
		if pid, offset, ok := recoveryAuth(h.Auth); ok {
			recovered := cl.recover(n, h, pid, offset)
			n.metrics.Recovered(recovered)
			if recovered {
				return
			}
		}
	}
	c := newConn(newSocketID(), n, cl, h)
	if n.recovery != nil {
		c.pid = newSocketID()
		c.from = n.adapter.Head() // before the socket is reachable: nothing after it was sent yet
	}
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		cl.srv.release(n)
		return
	}
	cl.sockets = append(cl.sockets, c)
	c.transport = cl.transport
	cl.mu.Unlock()
	cl.stopConnectTimer()
	n.add(c, h.Rooms...) // the rooms the middleware chose (e.g. the personal room), before CONNECT
	n.metrics.Connected(c.transport)
	c.send(connectPacket(n.name, c.id, c.pid))
	cl.srv.log.Info("connect", "sid", c.id, "nsp", n.name, "transport", c.transport, "remote", req.RemoteAddr, "conn", cl.conn.ID())
	if m := cl.srv.monitor; m != nil {
		m.Connected(c)
	}
	for _, f := range n.onConnect {
		f(c)
	}
	c.openSession()
}

// refuse tells the client its connect to nsp is refused with e, and logs and counts the refusal
// under reason.
func (cl *client) refuse(nsp, reason string, e *Error) {
	cl.srv.log.Info("handshake refused", "conn", cl.conn.ID(), "nsp", nsp, "reason", reason, "remote", cl.conn.Request().RemoteAddr)
	cl.srv.metrics.HandshakeRefused(reason)
	cl.connectError(nsp, e)
}

func (cl *client) connectError(nsp string, e *Error) {
	var data []byte
	if e.Code == "" {
		data, _ = json.Marshal(struct {
			Message string `json:"message"`
		}{e.Message})
	} else {
		data, _ = json.Marshal(struct {
			Message string            `json:"message"`
			Data    map[string]string `json:"data"`
		}{e.Message, map[string]string{"code": e.Code}})
	}
	p := &protocol.Packet{Type: protocol.ConnectError, Nsp: nsp, Data: data}
	pkts := encodePacket(p)
	if cl.conn.Send(pkts...) {
		cl.srv.sent(pkts, 1)
	}
}

// stopConnectTimer stops the connect timeout and lets the timer go (it would stay with the
// connection for its whole life otherwise).
func (cl *client) stopConnectTimer() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.connectTimer != nil {
		cl.connectTimer.Stop()
		cl.connectTimer = nil
	}
}

// socket returns the client's socket in namespace nsp, if any.
func (cl *client) socket(nsp string) *Conn {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, c := range cl.sockets {
		if c.nsp.name == nsp {
			return c
		}
	}
	return nil
}

// detach removes c from the client; it reports whether c was still attached.
func (cl *client) detach(c *Conn) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	i := slices.Index(cl.sockets, c)
	if i < 0 {
		return false
	}
	cl.sockets = slices.Delete(cl.sockets, i, i+1)
	return true
}

func (cl *client) OnUpgrade(transport string) {
	cl.mu.Lock()
	if cl.closed || cl.transport == transport {
		cl.mu.Unlock()
		return
	}
	from := cl.transport
	cl.transport = transport
	sockets := slices.Clone(cl.sockets)
	for _, c := range sockets {
		c.transport = transport
	}
	cl.mu.Unlock()
	cl.srv.metrics.SessionUpgraded(from, transport)
	ids := make([]string, 0, len(sockets))
	for _, c := range sockets {
		ids = append(ids, c.id)
		c.nsp.metrics.Upgraded(from, transport)
	}
	cl.srv.log.Info("upgrade", "conn", cl.conn.ID(), "sids", ids, "transport", transport)
	if m := cl.srv.monitor; m != nil {
		for _, c := range sockets {
			m.Upgraded(c, transport)
		}
	}
}

func (cl *client) OnClose(reason string) {
	cl.stopConnectTimer()
	cl.mu.Lock()
	cl.closed = true
	sockets := cl.sockets
	cl.sockets = nil
	transport := cl.transport
	cl.mu.Unlock()
	for _, c := range sockets {
		c.onClose(reason)
	}
	cl.srv.metrics.SessionClosed(transport, reason)
}

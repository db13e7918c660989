package sio

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/engine"
	"github.com/chorus-rt/chorus/internal/protocol"
)

// Connection-state recovery (Socket.IO 4.6+, docs/protocol.md "Connection-state recovery"). With
// it on, the CONNECT reply carries {sid, pid}; the adapter stamps every recoverable packet with an
// offset as its last argument, which the stock client remembers; a socket whose connection drops
// for a recoverable reason leaves a session; a client that comes back in time sends {pid, offset}
// in its CONNECT auth and gets the same socket id, rooms and data, and the packets it missed.
//
// Beyond Node: a client that sends no offset (it reconnected before receiving anything) or an old
// one (it has received nothing for longer than the packets are kept) still recovers, from the
// session's From, which each answered heartbeat moves forward; a client that reconnects before
// this node noticed its old connection was dead takes the old socket's session over; and the
// namespace's handshake middleware run on recovery too (Node skips them by default), so recovery
// never lets in a client that could not connect afresh.

// restoreTimeout bounds the adapter's work to restore a session (Redis round trips), besides the
// wait for an unreachable Redis (RecoveryOptions.OutageWait).
const restoreTimeout = 5 * time.Second

// maxOutageWait caps how long a recovery waits for an unreachable Redis. The wait holds the
// connection's reader, so it is also kept under half the ping timeout: the client's pongs are read
// in time.
const maxOutageWait = 10 * time.Second

// recoverableReasons are the disconnect reasons a client comes back from by itself (socket.io
// lib/socket.ts RECOVERABLE_DISCONNECT_REASONS); a socket that leaves for another one (the client
// or the server disconnected it on purpose, a parse error) keeps no session.
var recoverableReasons = map[string]bool{
	"transport error":      true,
	"transport close":      true,
	"forced close":         true,
	"ping timeout":         true,
	"server shutting down": true,
	"forced server close":  true,
}

func recoverableReason(reason string) bool { return recoverableReasons[reason] }

// EnableRecovery turns connection-state recovery on for the namespace. Call it while configuring
// the namespace, before clients can reach it. o.KeepPackets, when 0, becomes o.MaxDisconnection
// plus the heartbeat's interval and timeout: how long a connection can be dead before it is
// noticed, during which packets sent to it are lost.
func (n *Namespace) EnableRecovery(o adapter.RecoveryOptions) {
	if o.MaxDisconnection <= 0 {
		o.MaxDisconnection = adapter.DefaultMaxDisconnection
	}
	if o.KeepPackets <= 0 {
		o.KeepPackets = o.MaxDisconnection + n.srv.pingInterval() + n.srv.pingTimeout()
	}
	o.OutageWait = min(maxOutageWait, n.srv.pingTimeout()/2)
	n.recovery = &o
	if n.adapter != nil { // a dynamic namespace's adapter is created later, with recovery on (Server.register)
		n.adapter.EnableRecovery(o)
	}
}

// RecoveryEnabled reports whether connection-state recovery is on for the namespace.
func (n *Namespace) RecoveryEnabled() bool { return n.recovery != nil }

func (s *Server) pingInterval() time.Duration {
	if d := s.opts.Engine.PingInterval; d > 0 {
		return d
	}
	return 25 * time.Second
}

func (s *Server) pingTimeout() time.Duration {
	if d := s.opts.Engine.PingTimeout; d > 0 {
		return d
	}
	return 20 * time.Second
}

// Recovered reports whether the socket took over the session of a socket whose connection had
// dropped (socket.recovered in Node): same id, rooms and data, missed packets replayed.
func (c *Conn) Recovered() bool { return c.recovered }

// sessionLocked returns the socket's session as it stands; c.mu is held.
func (c *Conn) sessionLocked() adapter.Session {
	data := json.RawMessage("{}")
	if c.data != nil {
		if b, err := json.Marshal(c.data); err == nil {
			data = b
		}
	}
	return adapter.Session{SID: c.id, PID: c.pid, Rooms: c.nsp.adapter.Rooms(c.id), Data: data, From: c.from}
}

// persistLocked hands the socket's session to the adapter; c.mu is held.
func (c *Conn) persistLocked() { c.nsp.adapter.PersistSession(c.sessionLocked()) }

// openSession tells an adapter that keeps live sessions (adapter.LiveSessions) that the socket is
// connected, once it is in its rooms.
func (c *Conn) openSession() {
	ls, ok := c.nsp.adapter.(adapter.LiveSessions)
	if !ok || c.pid == "" {
		return
	}
	// Under c.mu, as onClose's PersistSession or DropSession: whichever comes first, the session
	// ends up as the socket's state says.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connected {
		ls.OpenSession(c.sessionLocked())
	}
}

// dropSessionLocked tells an adapter that keeps live sessions that the socket left for good; c.mu
// is held.
func (c *Conn) dropSessionLocked() {
	if ls, ok := c.nsp.adapter.(adapter.LiveSessions); ok && c.pid != "" {
		ls.DropSession(c.id, c.pid)
	}
}

// takeOver ends a socket of this node whose client has come back on another connection before
// the old one was noticed dead: it leaves as if its transport had closed (keeping its session),
// and returns once it has. Its connection is closed too if no other socket uses it.
func (c *Conn) takeOver() {
	cl := c.client
	if cl.detach(c) {
		c.onClose("transport close")
		cl.mu.Lock()
		idle := len(cl.sockets) == 0
		cl.mu.Unlock()
		if idle {
			cl.conn.Close("transport close")
		}
	}
	<-c.gone
}

// ReleaseSession implements adapter.Namespace: the socket holding session pid, if any, leaves as
// if its connection had dropped (its client is back on another node), and its session is kept.
func (n *Namespace) ReleaseSession(pid string) {
	n.mu.RLock()
	c := n.byPID[pid]
	n.mu.RUnlock()
	if c != nil {
		n.srv.log.Info("session released to another node", "sid", c.id, "nsp", n.name)
		c.takeOver()
	}
}

// recoveryAuth returns the pid and offset of a CONNECT's auth, if it carries a pid.
func recoveryAuth(auth json.RawMessage) (pid, offset string, ok bool) {
	var a struct {
		PID    any `json:"pid"`
		Offset any `json:"offset"`
	}
	if json.Unmarshal(auth, &a) != nil {
		return "", "", false
	}
	pid, ok = a.PID.(string)
	offset, _ = a.Offset.(string)
	return pid, offset, ok && pid != ""
}

// recover restores session pid for this client in namespace n. It reports false when there is no
// session to restore (or the client went away meanwhile), and the socket must connect afresh.
func (cl *client) recover(n *Namespace, h *Handshake, pid, offset string) bool {
	n.mu.RLock()
	old := n.byPID[pid]
	n.mu.RUnlock()
	if old != nil {
		old.takeOver()
	}
	ctx, cancel := context.WithTimeout(context.Background(), restoreTimeout+n.recovery.OutageWait)
	defer cancel()
	var (
		c       *Conn
		missed  int
		orphan  *adapter.Session
		foreign bool
	)
	err := n.adapter.RestoreSession(ctx, pid, offset, func(s adapter.Session, packets []*protocol.Packet) {
		cl.mu.Lock()
		closed := cl.closed
		cl.mu.Unlock()
		if closed {
			orphan = &s
			return
		}
		if !n.sameGrants(s.Rooms, h.Rooms) {
			foreign = true // another identity: the session is dropped, the client gets a new one
			return
		}
		c = newConn(s.SID, n, cl, h)
		c.pid, c.recovered, c.from = s.PID, true, s.From
		var data map[string]any
		if json.Unmarshal(s.Data, &data) == nil && len(data) > 0 {
			c.data = data
		}
		// CONNECT, then the missed packets, in one go; then the socket becomes reachable, with no
		// broadcast in between (the adapter holds it off until attach returns).
		pkts := encodePacket(connectPacket(n.name, c.id, c.pid))
		for _, p := range packets {
			pkts = append(pkts, encodePacket(p)...)
		}
		cl.mu.Lock()
		if cl.closed { // gone since the check above: OnClose would never close c
			cl.mu.Unlock()
			c, orphan = nil, &s
			return
		}
		cl.sockets = append(cl.sockets, c)
		c.transport = cl.transport
		cl.mu.Unlock()
		missed = len(packets)
		if cl.conn.Send(pkts...) {
			n.srv.sent(pkts, 1)
		}
		// the session's rooms and the ones the middleware chose just now (e.g. the personal room)
		n.add(c, append(slices.Clip(s.Rooms), h.Rooms...)...)
	})
	switch {
	case orphan != nil:
		n.adapter.PersistSession(*orphan) // the client left while its session was restored: keep it
		n.srv.keep(n)                     // for as long as a session of a socket that left is kept
		n.srv.release(n)                  // the connect's hold: no socket took it over
		return true
	case foreign:
		cl.srv.log.Info("session not recovered", "nsp", n.name, "conn", cl.conn.ID(), "reason", "the handshake grants other rooms")
		return false
	case errors.Is(err, adapter.ErrNoSession):
		cl.srv.log.Debug("session not recovered", "nsp", n.name, "conn", cl.conn.ID(), "reason", err)
		return false
	case err != nil:
		cl.srv.log.Warn("session not recovered", "nsp", n.name, "conn", cl.conn.ID(), "err", err)
		return false
	case c == nil:
		return false
	}
	cl.stopConnectTimer()
	n.metrics.Connected(c.transport)
	cl.srv.log.Info("connect", "sid", c.id, "nsp", n.name, "transport", c.transport, "remote", h.Address,
		"conn", cl.conn.ID(), "recovered", true, "missed", missed)
	if m := cl.srv.monitor; m != nil {
		m.Connected(c)
	}
	for _, f := range n.onConnect {
		f(c)
	}
	c.openSession()
	return true
}

// sameGrants reports whether a session's rooms and a new handshake's rooms hold the same rooms
// only handshakes grant (HandshakeRooms).
func (n *Namespace) sameGrants(session, handshake []string) bool {
	if n.granted == nil {
		return true
	}
	pick := func(rs []string) []string {
		var out []string
		for _, r := range rs {
			if n.granted(r) && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(pick(session), pick(handshake))
}

// connectPacket is the CONNECT reply: {sid}, and pid when recovery is on.
func connectPacket(nsp, sid, pid string) *protocol.Packet {
	data, _ := json.Marshal(struct {
		SID string `json:"sid"`
		PID string `json:"pid,omitempty"`
	}{sid, pid})
	return &protocol.Packet{Type: protocol.Connect, Nsp: nsp, Data: data}
}

// BeforePing implements engine.HeartbeatHandler: the adapter's head is noted on each socket with
// recovery, to become its From when the client answers.
func (cl *client) BeforePing() {
	for _, c := range cl.recoverable() {
		head := c.nsp.adapter.Head()
		c.mu.Lock()
		c.pingHead = head
		c.mu.Unlock()
	}
}

// OnPong implements engine.HeartbeatHandler: the client has received everything queued before the
// ping, so every packet up to the head noted then.
func (cl *client) OnPong() {
	for _, c := range cl.recoverable() {
		c.mu.Lock()
		if c.pingHead != "" {
			c.from, c.pingHead = c.pingHead, ""
		}
		c.mu.Unlock()
	}
}

// recoverable returns the client's sockets with recovery on.
func (cl *client) recoverable() []*Conn {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []*Conn
	for _, c := range cl.sockets {
		if c.pid != "" {
			out = append(out, c)
		}
	}
	return out
}

var _ engine.HeartbeatHandler = (*client)(nil)

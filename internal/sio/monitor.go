package sio

import "encoding/json"

// Monitor watches the sockets of every namespace as they come, change and go: the Admin UI's server
// side (internal/admin) is one. Install it with Server.SetMonitor before serving.
//
// Its methods run on the goroutine that made the change (a connection's reader, a handler, the
// adapter's receiving goroutine for a change another node asked for), right after it was made, and
// must not block. A Monitor must not call back into the namespace's locks in a way that waits for
// the change's caller (emitting, fetching sockets and reading a Conn are fine).
type Monitor interface {
	// Connected: c has joined its namespace; its rooms are its own-id room.
	Connected(c *Conn)
	// Upgraded: c's connection moved to transport ("websocket").
	Upgraded(c *Conn, transport string)
	// Disconnected: c has left its namespace for reason; rooms are the rooms it was in, its own-id
	// room included.
	Disconnected(c *Conn, reason string, rooms []string)
	// Joined: c has joined room, which it was not in.
	Joined(c *Conn, room string)
	// Left: c has left room, which it was in (not called for the rooms of a disconnecting socket:
	// Disconnected lists them).
	Left(c *Conn, room string)
	// Event: c sent an event (incoming), or was sent one with Conn.Emit or EmitWithAck (broadcasts
	// are not reported, as in Node). data is the event's JSON array, its name first (binary parts
	// are placeholders); it is valid only during the call.
	Event(c *Conn, incoming bool, data json.RawMessage)
}

// SetMonitor installs m; call it once, before serving.
func (s *Server) SetMonitor(m Monitor) { s.monitor = m }

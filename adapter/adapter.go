// Package adapter keeps room membership for a namespace and routes broadcasts to its sockets. Memory
// is the single-node adapter; a cluster adapter (Redis) wraps the same contract and also forwards
// broadcasts to the other nodes.
package adapter

import "github.com/chorus-rt/chorus/internal/protocol"

// BroadcastOptions selects the recipients of a broadcast.
type BroadcastOptions struct {
	// Rooms limits the broadcast to sockets in at least one of these rooms; empty means every socket
	// of the namespace. Each socket is in a room named by its own id, so a socket id works as a room.
	Rooms []string
	// Except skips the sockets that are in any of these rooms.
	Except []string
	// Volatile packets may be dropped for sockets that cannot take them at once.
	Volatile bool
	// Local keeps the broadcast on this node.
	Local bool
}

// Namespace is what an adapter needs from the namespace it serves.
type Namespace interface {
	// Name is the namespace's name, e.g. "/" or "/tenant-a".
	Name() string
	// Deliver sends p to the local sockets with the given ids; ids of sockets that are gone are
	// skipped. It is called on the broadcaster's goroutine and must not block on slow sockets.
	Deliver(p *protocol.Packet, ids []string, volatile bool)
}

// Adapter keeps one namespace's rooms. Its methods are called from many goroutines at once: from each
// socket's handlers (Join, Leave), from the namespace on disconnect (LeaveAll) and from whoever
// broadcasts. Broadcasts from one goroutine reach each socket in the order they were made.
type Adapter interface {
	// Join adds socket id to rooms.
	Join(id string, rooms ...string)
	// Leave removes socket id from room.
	Leave(id, room string)
	// LeaveAll removes socket id from every room; called once when the socket disconnects.
	LeaveAll(id string)
	// Rooms returns the rooms of socket id (including its own-id room).
	Rooms(id string) []string
	// Sockets returns the ids of the local sockets in any of rooms (every socket if rooms is empty).
	Sockets(rooms []string) []string
	// Broadcast delivers p to the sockets opts selects.
	Broadcast(p *protocol.Packet, opts BroadcastOptions)
	// Close releases the adapter's resources; the namespace calls it last.
	Close() error
}

// Factory creates the adapter of a namespace when the namespace is created.
type Factory func(nsp Namespace) Adapter

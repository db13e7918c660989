package adapter

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/chorus-rt/chorus/internal/protocol"
)

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
	// skipped. p.Offset, when set, is the recovery offset every recipient gets with it. It is
	// called on the broadcaster's goroutine (in streams mode, on the stream reader's or the
	// publisher's) and must not block on slow sockets.
	Deliver(p *protocol.Packet, ids []string, volatile bool)

	// The methods below carry out cluster operations on this node's sockets. The adapter selects
	// the ids (under its own lock, released before the call) and calls them on the goroutine of the
	// operation: the caller's for a local one, the adapter's receiving goroutine for one from
	// another node. None of them may block on a slow socket. Ids of sockets that are gone are
	// skipped.

	// DeliverWithAck sends p to each of the sockets ids with an ack id of its own and calls onAck
	// with the first argument of every ack that arrives before ctx is done, one call at a time, from
	// a goroutine of the namespace's. It returns the number of sockets p was sent to.
	DeliverWithAck(ctx context.Context, p *protocol.Packet, ids []string, onAck func(Value)) int
	// DescribeLocal returns the sockets ids as FetchSockets reports them.
	DescribeLocal(ids []string) []SocketInfo
	// JoinLocal adds the sockets ids to rooms.
	JoinLocal(ids, rooms []string)
	// LeaveLocal removes the sockets ids from rooms.
	LeaveLocal(ids, rooms []string)
	// DisconnectLocal disconnects the sockets ids from the namespace; with closeConn their whole
	// connections are closed.
	DisconnectLocal(ids []string, closeConn bool)
	// OnServerSideEmit hands the namespace an event another node sent with ServerSideEmit; args
	// are its arguments as JSON. ack is nil when the sender expects no answer; otherwise the
	// namespace calls it at most once, from any goroutine, with its answer.
	OnServerSideEmit(event string, args []json.RawMessage, ack func(reply json.RawMessage))
	// ReleaseSession ends the local socket whose recovery session is pid, if any, as if its
	// connection had dropped, so that its session is kept: its client has come back on another
	// node before this one noticed. It may block until the session is handed to the adapter.
	ReleaseSession(pid string)
}

// Value is one value as it travels between nodes: JSON in which binary parts are Socket.IO
// placeholders {"_placeholder":true,"num":i} pointing into Attachments.
type Value struct {
	JSON        json.RawMessage
	Attachments [][]byte
}

// SocketInfo is a socket as FetchSockets reports it, whichever node it lives on. Its JSON form is
// an entry of @socket.io/redis-adapter's REMOTE_FETCH response.
type SocketInfo struct {
	ID string `json:"id"`
	// Handshake is the socket's handshake as Node's socket.handshake has it: headers, time,
	// address, xdomain, secure, issued, url, query, auth.
	Handshake json.RawMessage `json:"handshake"`
	// Rooms includes the socket's own-id room.
	Rooms []string `json:"rooms"`
	// Data is the socket's data (socket.data in Node); {} when nothing was set.
	Data json.RawMessage `json:"data"`
}

// BroadcastAcks is what BroadcastWithAck collected.
type BroadcastAcks struct {
	// Acks holds the first argument of every recipient's ack, in the order they arrived.
	Acks []Value
	// Clients is the number of recipients, summed over the nodes that reported theirs.
	Clients int
	// Servers is the number of nodes that were expected to report; Reported, those that did.
	Servers, Reported int
}

// Errors of cluster operations. Both come with whatever results did arrive.
var (
	// ErrTimeout: some node did not answer before the context or the request timeout ended.
	ErrTimeout = errors.New("adapter: not every node answered in time")
	// ErrUnavailable: the cluster could not be reached; the results are this node's only.
	ErrUnavailable = errors.New("adapter: cluster unreachable")
)

// Cluster is what an adapter offers beyond this node: operations on the sockets of every node that
// serves the namespace. Memory implements it for a single node. Each method may be called from any
// goroutine; a context ends the wait for other nodes (the Redis adapter also stops at its request
// timeout), and results that arrived by then are returned with ErrTimeout. With opts.Local set, only
// this node's sockets are concerned.
type Cluster interface {
	// ServerCount returns the number of nodes serving the namespace, this one included.
	ServerCount(ctx context.Context) (int, error)
	// FetchSockets returns the sockets opts selects, on every node.
	FetchSockets(ctx context.Context, opts BroadcastOptions) ([]SocketInfo, error)
	// SocketsJoin makes the sockets opts selects, on every node, join rooms. Other nodes apply it
	// when the request reaches them: there is no answer to wait for.
	SocketsJoin(ctx context.Context, opts BroadcastOptions, rooms []string) error
	// SocketsLeave makes the sockets opts selects, on every node, leave rooms (no answer either).
	SocketsLeave(ctx context.Context, opts BroadcastOptions, rooms []string) error
	// DisconnectSockets disconnects the sockets opts selects, on every node (no answer either).
	DisconnectSockets(ctx context.Context, opts BroadcastOptions, closeConn bool) error
	// ServerSideEmit sends event with args (JSON) to the namespace on every other node.
	ServerSideEmit(ctx context.Context, event string, args []json.RawMessage) error
	// ServerSideEmitWithAck does the same and returns one answer per other node.
	ServerSideEmitWithAck(ctx context.Context, event string, args []json.RawMessage) ([]json.RawMessage, error)
	// BroadcastWithAck delivers p like Broadcast, each recipient asked for an ack, and collects the
	// acks until every recipient on every node has answered. ctx's deadline is the acks' timeout
	// on every node, even past the Redis adapter's request timeout, which applies only when ctx
	// has no deadline.
	BroadcastWithAck(ctx context.Context, p *protocol.Packet, opts BroadcastOptions) (BroadcastAcks, error)
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
	// Broadcast delivers p to the sockets opts selects. With recovery on, p and opts' slices are
	// kept (to be replayed): the caller must not modify them afterwards.
	Broadcast(p *protocol.Packet, opts BroadcastOptions)
	// Close releases the adapter's resources; the namespace calls it last.
	Close() error
	// Cluster operations (see Cluster).
	Cluster
	// Connection-state recovery (see Recovery).
	Recovery
}

// Commit is the outcome of a broadcast handed to a Committer.
type Commit int

const (
	// Committed: Redis took the broadcast (pub/sub: published; streams: added to the stream,
	// with its offset): every node connected to Redis delivers it, and in streams mode a client
	// that recovers its session later on any node gets it too.
	Committed Commit = iota
	// Duplicate: the claim's key was taken within the dedup window; nothing was broadcast.
	Duplicate
	// LocalOnly: Redis could not take it (unreachable, or the publish queue was full): the
	// broadcast reached this node's sockets only. In pub/sub mode it stays queued and may reach
	// the other nodes when Redis is back, late.
	LocalOnly
	// Unavailable: with a claim, Redis could not be reached: nothing was broadcast (in pub/sub
	// mode the claim and broadcast may still go out, once, if it was queued when Redis failed).
	Unavailable
)

func (c Commit) String() string {
	return [...]string{"committed", "duplicate", "local only", "unavailable"}[c]
}

// Committer is implemented by adapters whose broadcasts reach the other nodes after Broadcast
// returns (the Redis adapters): a publisher that acknowledges a message to its client waits for
// the commit, so that an acknowledged message is never one a crash of this node could still lose.
type Committer interface {
	// BroadcastCommit broadcasts p like Broadcast and calls done exactly once, from any goroutine
	// (possibly before it returns), with the outcome. With a claim (a published message's id),
	// the key is claimed for the dedup window and the broadcast made in one Redis operation: the
	// broadcast happens if and only if the claim is first (Committed, or Duplicate), so that no
	// crash can leave a claim without its broadcast; with Redis unreachable nothing is broadcast
	// (Unavailable). done must not block.
	BroadcastCommit(p *protocol.Packet, opts BroadcastOptions, claim *DedupKey, done func(Commit))
}

// Factory creates the adapter of a namespace when the namespace is created.
type Factory func(nsp Namespace) Adapter

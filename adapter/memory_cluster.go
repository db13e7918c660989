package adapter

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Memory is a cluster of one node: its Cluster methods act on this node's sockets and never wait
// for anyone else.

func (m *Memory) ServerCount(context.Context) (int, error) { return 1, nil }

// selectIDs returns the local sockets opts selects (rooms minus except).
func (m *Memory) selectIDs(opts BroadcastOptions) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.selectLocked(opts.Rooms, opts.Except)
}

// has reports whether id is a local socket of the namespace.
func (m *Memory) has(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.sids[id]
	return ok
}

// hasRoom reports whether a local socket is in room (a socket id is its own room).
func (m *Memory) hasRoom(room string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, isRoom := m.rooms[room]
	_, isSocket := m.sids[room]
	return isRoom || isSocket
}

// allRooms returns every local room, own-id rooms included (as Node lists them).
func (m *Memory) allRooms() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.rooms)+len(m.sids))
	for r := range m.rooms {
		out = append(out, r)
	}
	for id := range m.sids {
		if _, dup := m.rooms[id]; !dup {
			out = append(out, id)
		}
	}
	return out
}

func (m *Memory) FetchSockets(_ context.Context, opts BroadcastOptions) ([]SocketInfo, error) {
	return m.nsp.DescribeLocal(m.selectIDs(opts)), nil
}

func (m *Memory) SocketsJoin(_ context.Context, opts BroadcastOptions, rooms []string) error {
	m.nsp.JoinLocal(m.selectIDs(opts), rooms)
	return nil
}

func (m *Memory) SocketsLeave(_ context.Context, opts BroadcastOptions, rooms []string) error {
	m.nsp.LeaveLocal(m.selectIDs(opts), rooms)
	return nil
}

func (m *Memory) DisconnectSockets(_ context.Context, opts BroadcastOptions, closeConn bool) error {
	m.nsp.DisconnectLocal(m.selectIDs(opts), closeConn)
	return nil
}

// ServerSideEmit has no other node to reach.
func (m *Memory) ServerSideEmit(context.Context, string, []json.RawMessage) error { return nil }

// ServerSideEmitWithAck has no other node to hear from: no answers.
func (m *Memory) ServerSideEmitWithAck(context.Context, string, []json.RawMessage) ([]json.RawMessage, error) {
	return []json.RawMessage{}, nil
}

func (m *Memory) BroadcastWithAck(ctx context.Context, p *protocol.Packet, opts BroadcastOptions) (BroadcastAcks, error) {
	c := newAckCollector(1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.report(m.nsp.DeliverWithAck(ctx, p, m.selectIDs(opts), c.ack))
	return c.wait(ctx)
}

// ackCollector gathers the acks of a broadcast and the recipient counts of the nodes.
type ackCollector struct {
	mu      sync.Mutex
	res     BroadcastAcks
	changed chan struct{} // signalled (non-blocking, capacity 1) on every change
}

func newAckCollector(servers int) *ackCollector {
	return &ackCollector{res: BroadcastAcks{Acks: []Value{}, Servers: servers}, changed: make(chan struct{}, 1)}
}

func (c *ackCollector) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// report records that one node sent p to clients recipients.
func (c *ackCollector) report(clients int) {
	c.mu.Lock()
	c.res.Clients += clients
	c.res.Reported++
	c.mu.Unlock()
	c.signal()
}

func (c *ackCollector) ack(v Value) {
	c.mu.Lock()
	c.res.Acks = append(c.res.Acks, v)
	c.mu.Unlock()
	c.signal()
}

// setServers sets the number of nodes expected to report (known once ServerCount answered).
func (c *ackCollector) setServers(n int) {
	c.mu.Lock()
	c.res.Servers = n
	c.mu.Unlock()
	c.signal()
}

// snapshot returns a copy of what has arrived and whether it is everything.
func (c *ackCollector) snapshot() (BroadcastAcks, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := c.res
	res.Acks = append([]Value(nil), c.res.Acks...)
	done := res.Reported >= res.Servers && len(res.Acks) >= res.Clients
	return res, done
}

// wait returns once every node has reported and every recipient acked, or when ctx is done (with
// ErrTimeout and what arrived).
func (c *ackCollector) wait(ctx context.Context) (BroadcastAcks, error) {
	for {
		res, done := c.snapshot()
		if done {
			return res, nil
		}
		select {
		case <-c.changed:
		case <-ctx.Done():
			res, done := c.snapshot()
			if done {
				return res, nil
			}
			return res, timeoutError(ctx)
		}
	}
}

// timeoutError is ErrTimeout wrapped with why ctx ended.
func timeoutError(ctx context.Context) error {
	return fmt.Errorf("%w: %w", ErrTimeout, context.Cause(ctx))
}

package adapter

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Memory is the single-node adapter: rooms live in this process only.
//
// A socket's own-id room is implicit: it is not stored in rooms, and a socket that has joined no
// other room has a nil set in sids. Every socket has that room, so storing it would cost two maps
// per connection for nothing.
type Memory struct {
	nsp Namespace
	rec atomic.Pointer[recoveryLog] // set by EnableRecovery

	mu    sync.RWMutex
	rooms map[string]map[string]struct{} // room → socket ids (own-id rooms excluded)
	sids  map[string]map[string]struct{} // socket id → rooms (own-id room excluded)
}

// NewMemory is a Factory for the in-memory adapter.
func NewMemory(nsp Namespace) Adapter {
	return &Memory{nsp: nsp, rooms: make(map[string]map[string]struct{}), sids: make(map[string]map[string]struct{})}
}

func (m *Memory) Join(id string, rooms ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mine, known := m.sids[id]
	if !known {
		m.sids[id] = nil
	}
	for _, r := range rooms {
		if r == id {
			continue
		}
		if mine == nil {
			mine = make(map[string]struct{}, len(rooms))
			m.sids[id] = mine
		}
		mine[r] = struct{}{}
		members := m.rooms[r]
		if members == nil {
			members = make(map[string]struct{})
			m.rooms[r] = members
		}
		members[id] = struct{}{}
	}
}

func (m *Memory) Leave(id, room string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leaveLocked(id, room)
}

func (m *Memory) leaveLocked(id, room string) {
	if mine := m.sids[id]; mine != nil {
		delete(mine, room)
	}
	if members := m.rooms[room]; members != nil {
		delete(members, id)
		if len(members) == 0 {
			delete(m.rooms, room)
		}
	}
}

func (m *Memory) LeaveAll(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for r := range m.sids[id] {
		m.leaveLocked(id, r)
	}
	delete(m.sids, id)
}

func (m *Memory) Rooms(id string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mine, known := m.sids[id]
	if !known {
		return nil
	}
	out := make([]string, 0, 1+len(mine))
	out = append(out, id)
	for r := range mine {
		out = append(out, r)
	}
	return out
}

func (m *Memory) Sockets(rooms []string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.selectLocked(rooms, nil)
}

// selectLocked returns the sockets in any of rooms (all if empty) and in none of except.
func (m *Memory) selectLocked(rooms, except []string) []string {
	excluded := func(id string) bool {
		for _, r := range except {
			if r == id {
				return true
			}
			if _, ok := m.rooms[r][id]; ok {
				return true
			}
		}
		return false
	}
	var out []string
	if len(rooms) == 0 {
		out = make([]string, 0, len(m.sids))
		for id := range m.sids {
			if !excluded(id) {
				out = append(out, id)
			}
		}
		return out
	}
	if len(rooms) == 1 {
		members := m.rooms[rooms[0]]
		out = make([]string, 0, len(members)+1)
		for id := range members {
			if !excluded(id) {
				out = append(out, id)
			}
		}
		if _, isSocket := m.sids[rooms[0]]; isSocket && !excluded(rooms[0]) {
			out = append(out, rooms[0])
		}
		return out
	}
	seen := make(map[string]struct{})
	add := func(id string) {
		if _, dup := seen[id]; dup || excluded(id) {
			return
		}
		seen[id] = struct{}{}
		out = append(out, id)
	}
	for _, r := range rooms {
		for id := range m.rooms[r] {
			add(id)
		}
		if _, isSocket := m.sids[r]; isSocket {
			add(r)
		}
	}
	return out
}

// Broadcast delivers p to the local sockets opts selects. With recovery on, a recoverable packet is
// stamped with the next offset and kept, the recipients chosen and the packet queued on them
// before the next broadcast of the namespace takes its offset.
func (m *Memory) Broadcast(p *protocol.Packet, opts BroadcastOptions) {
	if l := m.rec.Load(); l != nil && recoverable(p, opts) {
		l.broadcast(p, opts, func(q *protocol.Packet) { m.nsp.Deliver(q, m.selectIDs(opts), false) })
		return
	}
	m.nsp.Deliver(p, m.selectIDs(opts), opts.Volatile)
}

func (m *Memory) Close() error {
	if l := m.rec.Load(); l != nil {
		l.close()
	}
	return nil
}

// Recovery, in this process's memory.

func (m *Memory) EnableRecovery(o RecoveryOptions) {
	m.rec.CompareAndSwap(nil, newRecoveryLog(o))
}

func (m *Memory) Head() string {
	if l := m.rec.Load(); l != nil {
		return l.head()
	}
	return ""
}

func (m *Memory) PersistSession(s Session) {
	if l := m.rec.Load(); l != nil {
		l.persist(s)
	}
}

func (m *Memory) RestoreSession(_ context.Context, pid, offset string, attach func(Session, []*protocol.Packet)) error {
	l := m.rec.Load()
	if l == nil {
		return errNoSession("recovery is off")
	}
	return l.restore(pid, offset, attach)
}

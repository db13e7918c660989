package adapter

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Connection-state recovery, as Socket.IO 4.6+ does it (socket.io lib/socket.ts, socket.io-adapter
// lib/in-memory-adapter.ts SessionAwareAdapter): every recoverable packet a namespace sends carries
// an offset as its last argument, which the client remembers; when a socket's connection drops for
// a reason a client comes back from, the socket's state is kept as a Session for a while; a client
// that reconnects in time sends {pid, offset} in its CONNECT and gets the same socket id, its rooms
// and data, and every recoverable packet sent to it after that offset.
//
// A packet is recoverable when it is an event, has no ack id and is not volatile.

// Defaults of RecoveryOptions.
const (
	// DefaultMaxDisconnection is how long a session waits for its client by default (as in Node).
	DefaultMaxDisconnection = 2 * time.Minute
	// DefaultMaxPackets caps the packets one namespace keeps for recovery in memory.
	DefaultMaxPackets = 100_000
	// maxLogBytes caps the bytes of the packets one namespace keeps for recovery in memory.
	maxLogBytes = 64 << 20
)

// RecoveryOptions configures a namespace's connection-state recovery.
type RecoveryOptions struct {
	// MaxDisconnection is how long a session waits for its client after the connection dropped;
	// 0 means DefaultMaxDisconnection.
	MaxDisconnection time.Duration
	// KeepPackets is how long recoverable packets are kept in memory. It must cover
	// MaxDisconnection and the time a dead connection can go unnoticed (the heartbeat's interval
	// and timeout): the namespace sets it; 0 means MaxDisconnection plus one minute.
	KeepPackets time.Duration
	// MaxPackets caps the packets kept in memory; past it the oldest go first, and sessions that
	// would need them start afresh. 0 means DefaultMaxPackets.
	MaxPackets int
	// OutageWait is how long a restore waits for a store it cannot reach (Redis, in streams mode)
	// before it gives up and the client gets a new session; the namespace sets it (its caller's
	// context must allow for it). 0: it does not wait.
	OutageWait time.Duration
}

func (o RecoveryOptions) withDefaults() RecoveryOptions {
	if o.MaxDisconnection <= 0 {
		o.MaxDisconnection = DefaultMaxDisconnection
	}
	if o.KeepPackets <= 0 {
		o.KeepPackets = o.MaxDisconnection + time.Minute
	}
	if o.KeepPackets < o.MaxDisconnection {
		o.KeepPackets = o.MaxDisconnection
	}
	if o.MaxPackets <= 0 {
		o.MaxPackets = DefaultMaxPackets
	}
	return o
}

// Session is what a socket whose connection dropped leaves for its client to recover.
type Session struct {
	// SID is the socket id, which the recovered socket keeps.
	SID string
	// PID is the private session id the client was given in the CONNECT reply and sends back.
	PID string
	// Rooms are the socket's rooms, its own-id room included.
	Rooms []string
	// Data is the socket's data (socket.data in Node) as JSON; {} when nothing was set.
	Data json.RawMessage
	// From is an offset (Recovery.Head) before which the client is known to have received every
	// packet sent to it: the head when the socket connected, moved forward at each heartbeat the
	// client answered. Packets after it are replayed when the client sends no offset, or an older
	// one, so that a client that reconnects before it received anything, or long after the last
	// packet it received, still recovers.
	From string
}

// ErrNoSession is returned by RestoreSession when a session cannot be recovered: unknown or expired
// pid, or packets it missed that are no longer kept. The client then gets a new session.
var ErrNoSession = errors.New("adapter: no session to recover")

// Recovery is connection-state recovery, per namespace. The namespace calls EnableRecovery once,
// before any socket connects; until then the adapter stamps no packet and keeps no session.
// Offsets are opaque strings to the namespace: memory offsets are this process's, Redis Streams
// offsets are stream entry ids shared by the cluster.
//
// Every method may be called from any goroutine.
type Recovery interface {
	// EnableRecovery turns recovery on with o.
	EnableRecovery(o RecoveryOptions)
	// Head returns the offset of the latest recoverable packet this node has delivered (or an
	// offset before any, for an empty log): every packet at or before it has been queued on its
	// recipients. The namespace reads it when a socket connects and before each heartbeat to build
	// Session.From. It returns "" when recovery is off.
	Head() string
	// PersistSession keeps s until the client comes back or MaxDisconnection has passed. Called
	// once per socket, when its connection drops for a recoverable reason.
	PersistSession(s Session)
	// RestoreSession takes the session pid (it can be restored once) and the recoverable packets
	// sent to it after offset ("" when the client sent none) or after the session's From, whichever
	// is later, in order, each with its Offset set. It calls attach with them at a point where no
	// broadcast can fall between those packets and the ones delivered live: attach must queue the
	// packets on the new socket and make it reachable (join its rooms) before it returns, and must
	// not call back into the adapter's broadcast. It returns ErrNoSession (wrapped with the reason)
	// when the session cannot be recovered, and then does not call attach.
	RestoreSession(ctx context.Context, pid, offset string, attach func(s Session, missed []*protocol.Packet)) error
}

// LiveSessions is implemented by adapters that keep a connected socket's session where other nodes
// find it (the Redis Streams adapter, streams_live.go), so that its client recovers even when this
// node dies without calling PersistSession (SIGKILL, a crash, a lost machine). The adapter keeps
// such a session's rooms up to date through its own Join and Leave, and its expiry alive, until
// PersistSession (the connection dropped) or DropSession (the socket left for good).
type LiveSessions interface {
	// OpenSession is called once a socket with recovery has connected or recovered, with its
	// session as PersistSession would get it.
	OpenSession(s Session)
	// DropSession is called when the socket leaves without a session to keep (the client or the
	// server disconnected it on purpose): nobody may recover it.
	DropSession(sid, pid string)
}

// recoverable reports whether a broadcast of p with opts is stamped with an offset and kept.
func recoverable(p *protocol.Packet, opts BroadcastOptions) bool {
	return (p.Type == protocol.Event || p.Type == protocol.BinaryEvent) && !p.HasID && !opts.Volatile
}

// shouldInclude reports whether a packet broadcast with rooms and except reaches a socket in
// sessionRooms (socket.io-adapter shouldIncludePacket).
func shouldInclude(sessionRooms, rooms, except []string) bool {
	included := len(rooms) == 0
	for _, r := range sessionRooms {
		if slices.Contains(except, r) {
			return false
		}
		if !included && slices.Contains(rooms, r) {
			included = true
		}
	}
	return included
}

// recoveryLog keeps one namespace's recoverable packets and sessions in memory (the single-node
// and Redis pub/sub adapters). Offsets are "<epoch>.<seq>": a random epoch per log, so that an
// offset of another process or node (or a string an application happened to send last) is never
// taken for one of ours, and a sequence number in base 36.
//
// Broadcasting holds mu from the offset's assignment until the packet is queued on its recipients,
// so each socket receives packets in offset order and restoring (under mu too) never lets a
// packet fall between the replayed ones and the live ones.
type recoveryLog struct {
	opts     RecoveryOptions
	epoch    string
	maxBytes int // maxLogBytes (tests lower it)

	mu       sync.Mutex
	seq      uint64 // the last offset given
	entries  packetRing
	bytes    int
	trimmed  uint64 // the newest offset dropped from entries (0: none)
	sessions map[string]*keptSession
	expiry   []expiring // sessions in the order they expire
	timer    *time.Timer
	armed    bool
	closed   bool
	now      func() time.Time
}

type logEntry struct {
	seq           uint64
	p             *protocol.Packet // with Offset set
	rooms, except []string
	at            time.Time
	size          int
}

type keptSession struct {
	s       Session
	expires time.Time
}

type expiring struct {
	pid string
	at  time.Time
}

func newRecoveryLog(o RecoveryOptions) *recoveryLog {
	var b [4]byte
	rand.Read(b[:])
	epoch := strconv.FormatUint(uint64(b[0])<<24|uint64(b[1])<<16|uint64(b[2])<<8|uint64(b[3]), 36)
	return &recoveryLog{opts: o.withDefaults(), epoch: epoch, maxBytes: maxLogBytes, sessions: make(map[string]*keptSession), now: time.Now}
}

func (l *recoveryLog) offset(seq uint64) string {
	var b [32]byte
	o := append(append(b[:0], l.epoch...), '.')
	return string(strconv.AppendUint(o, seq, 36))
}

// parse returns the sequence number of one of this log's offsets.
func (l *recoveryLog) parse(off string) (uint64, bool) {
	epoch, seq, ok := strings.Cut(off, ".")
	if !ok || epoch != l.epoch {
		return 0, false
	}
	n, err := strconv.ParseUint(seq, 36, 64)
	return n, err == nil
}

func (l *recoveryLog) head() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.offset(l.seq)
}

// broadcast stamps p with the next offset, delivers it with deliver (under mu) and keeps it.
func (l *recoveryLog) broadcast(p *protocol.Packet, opts BroadcastOptions, deliver func(p *protocol.Packet)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	q := *p
	q.Offset = l.offset(l.seq)
	deliver(&q)
	if l.closed {
		return
	}
	size := len(q.Data) + len(q.Offset) + 64
	for _, a := range q.Attachments {
		size += len(a)
	}
	for _, r := range opts.Rooms {
		size += len(r) + 16
	}
	for _, r := range opts.Except {
		size += len(r) + 16
	}
	// opts' slices are kept as they are: Adapter.Broadcast's callers do not modify them after.
	l.entries.push(logEntry{seq: l.seq, p: &q, rooms: opts.Rooms, except: opts.Except, at: l.now(), size: size})
	l.bytes += size
	for l.entries.n > l.opts.MaxPackets || l.bytes > l.maxBytes {
		l.dropFirst()
	}
	l.armLocked()
}

func (l *recoveryLog) dropFirst() {
	e := l.entries.pop()
	l.trimmed = e.seq
	l.bytes -= e.size
}

func (l *recoveryLog) persist(s Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	at := l.now().Add(l.opts.MaxDisconnection)
	l.sessions[s.PID] = &keptSession{s: s, expires: at}
	l.expiry = append(l.expiry, expiring{s.PID, at})
	l.armLocked()
}

func (l *recoveryLog) restore(pid, offset string, attach func(Session, []*protocol.Packet)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks := l.sessions[pid]
	if ks == nil {
		return errNoSession("unknown or expired session")
	}
	delete(l.sessions, pid)
	if !l.now().Before(ks.expires) {
		return errNoSession("session expired")
	}
	from, ok := l.parse(ks.s.From)
	if !ok {
		return errNoSession("session without a position")
	}
	if c, ok := l.parse(offset); ok && c > from && c <= l.seq {
		from = c
	}
	if from < l.trimmed {
		return errNoSession("packets it missed are no longer kept")
	}
	// The entries hold consecutive offsets: the first after from is at from+1 - first.
	var missed []*protocol.Packet
	if l.entries.n > 0 {
		i := max(int(from+1-l.entries.at(0).seq), 0)
		for ; i < l.entries.n; i++ {
			if e := l.entries.at(i); shouldInclude(ks.s.Rooms, e.rooms, e.except) {
				missed = append(missed, e.p)
			}
		}
	}
	attach(ks.s, missed)
	return nil
}

// armLocked schedules a sweep when packets or sessions are kept and none is scheduled.
func (l *recoveryLog) armLocked() {
	if l.armed || l.closed {
		return
	}
	var next time.Time
	if l.entries.n > 0 {
		next = l.entries.at(0).at.Add(l.opts.KeepPackets)
	}
	if len(l.expiry) > 0 && (next.IsZero() || l.expiry[0].at.Before(next)) {
		next = l.expiry[0].at
	}
	if next.IsZero() {
		return
	}
	// At least a second apart: expiring a little late costs memory for a moment, not correctness
	// (restore checks expiry itself; a packet kept longer is only more to replay from).
	d := max(next.Sub(l.now()), time.Second)
	l.armed = true
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.sweep)
	} else {
		l.timer.Reset(d)
	}
}

// sweep drops the packets older than KeepPackets and the sessions past their expiry.
func (l *recoveryLog) sweep() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = false
	now := l.now()
	for l.entries.n > 0 && now.Sub(l.entries.at(0).at) >= l.opts.KeepPackets {
		l.dropFirst()
	}
	for len(l.expiry) > 0 && !now.Before(l.expiry[0].at) {
		x := l.expiry[0]
		l.expiry = l.expiry[1:]
		if ks := l.sessions[x.pid]; ks != nil && !now.Before(ks.expires) {
			delete(l.sessions, x.pid)
		}
	}
	if len(l.expiry) == 0 {
		l.expiry = nil
	}
	l.armLocked()
}

// close forgets everything and stops the sweeps.
func (l *recoveryLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
	}
	l.entries, l.sessions, l.expiry = packetRing{}, nil, nil
}

// stats returns what the log keeps: packets, their bytes, sessions (for tests and metrics).
func (l *recoveryLog) stats() (packets, bytes, sessions int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entries.n, l.bytes, len(l.sessions)
}

// packetRing is a FIFO of log entries in a ring buffer: a steady stream of broadcasts reuses its
// slots instead of re-allocating and copying a slice; it shrinks once a burst has drained.
type packetRing struct {
	buf   []logEntry
	start int
	n     int
}

func (r *packetRing) at(i int) *logEntry { return &r.buf[(r.start+i)%len(r.buf)] }

func (r *packetRing) push(e logEntry) {
	if r.n == len(r.buf) {
		r.resize(max(64, 2*len(r.buf)))
	}
	r.buf[(r.start+r.n)%len(r.buf)] = e
	r.n++
}

func (r *packetRing) pop() logEntry {
	e := r.buf[r.start]
	r.buf[r.start] = logEntry{}
	r.start = (r.start + 1) % len(r.buf)
	r.n--
	if len(r.buf) > 1024 && r.n < len(r.buf)/4 {
		r.resize(len(r.buf) / 2)
	}
	return e
}

func (r *packetRing) resize(size int) {
	buf := make([]logEntry, size)
	for i := range r.n {
		buf[i] = *r.at(i)
	}
	r.buf, r.start = buf, 0
}

func errNoSession(reason string) error {
	return &noSessionError{reason}
}

type noSessionError struct{ reason string }

func (e *noSessionError) Error() string { return "no session to recover: " + e.reason }
func (e *noSessionError) Is(target error) bool {
	return target == ErrNoSession
}

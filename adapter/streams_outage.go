package adapter

import (
	"strconv"
	"strings"
	"time"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// The outage log (streams mode). A broadcast this node delivers without adding it to the stream
// (Redis unreachable, its XADD failed, the queue full, or asked to stay local) has no entry id.
// With recovery on, the namespace's adapter keeps it in a bounded node-local log, stamped with a
// local offset, so that a client of this node that drops meanwhile gets it when it recovers here:
// the restore replays the missed stream entries and the missed local entries, merged in the order
// this node delivered them.
//
// A local offset is "<stream id>:<node uid>:<seq>": the stream entry this node had delivered last
// when it delivered the broadcast (the stream's head), the node's uid, and the log's sequence
// number (a broadcast of this node delivered ahead of the reader, deliverStale, counts as
// delivered: a local entry after it follows it). A position is ordered by its stream id, then by seq (a stream id alone is seq 0): local
// entries come after the stream entry they followed and before any later one, as they were
// delivered. The stock client echoes the last offset it received; a node that is not the one that
// made a local offset reads its stream id only.
//
// The entries stay local: they are not added to the stream once Redis is back. Added then, they
// would reach the other nodes' sockets late and out of order (after entries those sockets already
// got, with ids later than what they were sent after), and their recovery offsets would not be the
// ones this node's sockets received; the publisher was told {local:true}, which promises delivery
// on its node only.

// outageLogMax and maxLogBytes (as the memory log) bound the entries of a namespace's outage log;
// the oldest go first, and a recovery that needs one of them fails (the client starts a new
// session).
const outageLogMax = 10_000

// position is where a socket stands in what this node delivered: after stream entry id, and after
// the local entry seq of this node that followed it (0: none).
type position struct {
	id  streamID
	seq uint64
}

func (a position) less(b position) bool {
	return a.id.less(b.id) || (a.id == b.id && a.seq < b.seq)
}

// localEntry is a broadcast of the outage log.
type localEntry struct {
	pos  position
	at   time.Time
	p    *protocol.Packet // with Offset set
	opts BroadcastOptions
}

// outageLog is a namespace's outage log; st.deliverMu guards it.
type outageLog struct {
	entries []localEntry
	bytes   int // the entries' packets, roughly
	seq     uint64
	trimmed *position // the last entry dropped, if any
}

// localOffset writes a local offset.
func localOffset(pos position, uid string) string {
	return pos.id.String() + ":" + uid + ":" + strconv.FormatUint(pos.seq, 10)
}

// parseOffset reads a stream entry id or a local offset; a local offset of another node (or of
// this node before it restarted) is read as its stream id.
func (a *streamsAdapter) parseOffset(s string) (position, bool) {
	id, rest, local := strings.Cut(s, ":")
	sid, ok := newStreamID(id)
	if !ok {
		return position{}, false
	}
	if !local {
		return position{id: sid}, true
	}
	uid, n, ok := strings.Cut(rest, ":")
	seq, err := strconv.ParseUint(n, 10, 64)
	if !ok || err != nil {
		return position{}, false
	}
	if uid != a.r.uid {
		return position{id: sid}, true
	}
	return position{sid, seq}, true
}

// deliverLocalLocked delivers a broadcast that is not in the stream to the local sockets, kept in
// the outage log with a local offset when it is recoverable; st.deliverMu is held.
func (a *streamsAdapter) deliverLocalLocked(p *protocol.Packet, opts BroadcastOptions) {
	o := a.rec.Load()
	h, started := a.r.streams.headID()
	if o == nil || !started || !recoverable(p, opts) {
		a.deliver(p, opts, "")
		return
	}
	head, _ := newStreamID(h)
	if head.less(a.r.streams.stale) {
		head = a.r.streams.stale // delivered already, ahead of the reader
	}
	l := &a.outage
	l.seq++
	pos := position{head, l.seq}
	q := *p
	q.Offset = localOffset(pos, a.r.uid)
	now := time.Now()
	l.entries = append(l.entries, localEntry{pos: pos, at: now, p: &q, opts: opts})
	l.bytes += entrySize(&q)
	a.trimOutageLocked(now, o.KeepPackets)
	a.nsp.Deliver(&q, a.selectIDs(opts), opts.Volatile)
}

// deliverLocal is deliverLocalLocked for a caller that does not hold st.deliverMu.
func (a *streamsAdapter) deliverLocal(p *protocol.Packet, opts BroadcastOptions) {
	st := a.r.streams
	st.deliverMu.Lock()
	defer st.deliverMu.Unlock()
	a.deliverLocalLocked(p, opts)
}

// trimOutageLocked drops the entries older than keep, and the oldest beyond outageLogMax.
func (a *streamsAdapter) trimOutageLocked(now time.Time, keep time.Duration) {
	l := &a.outage
	n := 0
	for n < len(l.entries) && (len(l.entries)-n > outageLogMax || l.bytes > maxLogBytes || now.Sub(l.entries[n].at) > keep) {
		l.bytes -= entrySize(l.entries[n].p)
		n++
	}
	if n == 0 {
		return
	}
	last := l.entries[n-1].pos
	l.trimmed = &last
	clear(l.entries[:n])
	l.entries = l.entries[n:]
	if len(l.entries) == 0 {
		l.entries = nil
	}
}

// headLocked returns the offset of the last broadcast delivered: the newest local entry, if it
// came after the stream's head, or the head; st.deliverMu is held.
func (a *streamsAdapter) headLocked(h string) string {
	if n := len(a.outage.entries); n > 0 {
		last := a.outage.entries[n-1]
		if head, ok := newStreamID(h); ok && !last.pos.id.less(head) {
			return last.p.Offset
		}
	}
	return h
}

// missedLocal returns the outage log's entries after from that reach rooms, and false when some
// entry after from was dropped from the log; st.deliverMu is held.
func (a *streamsAdapter) missedLocal(from position, rooms []string) ([]localEntry, bool) {
	l := &a.outage
	if o := a.rec.Load(); o != nil {
		a.trimOutageLocked(time.Now(), o.KeepPackets)
	}
	if l.trimmed != nil && from.less(*l.trimmed) {
		return nil, false
	}
	var out []localEntry
	for _, e := range l.entries {
		if from.less(e.pos) && shouldInclude(rooms, e.opts.Rooms, e.opts.Except) {
			out = append(out, e)
		}
	}
	return out, true
}

// mergeMissed merges the missed stream entries and local entries, both in order, in the order
// this node delivered them: a local entry after the stream entry it followed.
func mergeMissed(stream []*protocol.Packet, ids []streamID, local []localEntry) []*protocol.Packet {
	if len(local) == 0 {
		return stream
	}
	out := make([]*protocol.Packet, 0, len(stream)+len(local))
	i := 0
	for _, e := range local {
		for i < len(stream) && !e.pos.id.less(ids[i]) {
			out = append(out, stream[i])
			i++
		}
		out = append(out, e.p)
	}
	return append(out, stream[i:]...)
}

// entrySize is roughly what an entry of the outage log holds.
func entrySize(p *protocol.Packet) int {
	n := len(p.Data) + len(p.Offset) + 128
	for _, a := range p.Attachments {
		n += len(a)
	}
	return n
}

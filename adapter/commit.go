package adapter

import (
	"strconv"
	"sync/atomic"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Committed broadcasts (Committer) of the Redis adapters. A broadcast's PUBLISH or XADD goes
// through the publish queue like any other; its pendingCommit is told the outcome when the pipeline
// that carried it returns. A broadcast with a claim is one EVAL of a script that checks the dedup
// key, broadcasts, and only then sets the key (Redis runs a script without interleaving anything
// else): there is no moment at which the claim exists without its broadcast, so neither a node
// killed between the two nor a broadcast that fails can leave a retry to be taken for a duplicate
// of a message nobody received.

// claimPublishScript: KEYS[1] the dedup key; ARGV: node uid, window (ms), channel, payload. 1 when
// claimed and published, 0 for a duplicate.
const claimPublishScript = `if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
redis.call("PUBLISH", ARGV[3], ARGV[4])
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return 1`

// claimXAddScript: KEYS[1] the dedup key, KEYS[2] the stream; ARGV: node uid, window (ms), MAXLEN,
// then the entry's field/value pairs. The entry id when claimed and added, 0 for a duplicate.
const claimXAddScript = `if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
local id = redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[3], "*", unpack(ARGV, 4))
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return id`

// pendingCommit is a broadcast's outcome to report, once.
type pendingCommit struct {
	done  func(Commit)
	claim bool // a claimed broadcast: Unavailable rather than LocalOnly when Redis fails
	fired atomic.Bool
}

func newCommit(done func(Commit), claim bool) *pendingCommit {
	if done == nil {
		return nil
	}
	return &pendingCommit{done: done, claim: claim}
}

// fire reports c, the first time only; the Redis adapter forgets the commit.
func (r *Redis) fire(pc *pendingCommit, c Commit) {
	if pc == nil || pc.fired.Swap(true) {
		return
	}
	r.commitMu.Lock()
	delete(r.commits, pc)
	r.commitMu.Unlock()
	pc.done(c)
}

// failed reports the outcome of a commit whose command Redis did not take.
func (r *Redis) failed(pc *pendingCommit) {
	if pc == nil {
		return
	}
	if pc.claim {
		r.fire(pc, Unavailable)
	} else {
		r.fire(pc, LocalOnly)
	}
}

// track remembers a commit until it fires, so that an outage can answer it without waiting.
func (r *Redis) track(pc *pendingCommit) {
	if pc == nil {
		return
	}
	r.commitMu.Lock()
	r.commits[pc] = struct{}{}
	r.commitMu.Unlock()
}

// failOutstanding answers every commit still waiting (Redis is down: their commands wait in the
// queue, or were lost with a pipeline).
func (r *Redis) failOutstanding() {
	r.commitMu.Lock()
	out := make([]*pendingCommit, 0, len(r.commits))
	for pc := range r.commits {
		out = append(out, pc)
	}
	r.commitMu.Unlock()
	for _, pc := range out {
		r.failed(pc)
	}
}

// claimMsg is a pub/sub broadcast made with a claim: the script's EVAL replaces the PUBLISH, and
// the local sockets get it once Redis says the claim was first.
type claimMsg struct {
	key   string
	local func()
}

// enqueueCommit queues m with its commit; when the queue refuses it, the commit fails at once.
func (r *Redis) enqueueCommit(m outMsg, pc *pendingCommit) bool {
	r.track(pc)
	if !r.enqueue(m) {
		r.failed(pc)
		return false
	}
	return true
}

func (r *Redis) windowMillis() string {
	return strconv.FormatInt(r.opts.DedupWindow.Milliseconds(), 10)
}

func (r *Redis) dedupKey(k DedupKey) string { return r.opts.Prefix + "#dedup#" + k.String() }

// BroadcastCommit implements Committer in pub/sub mode. Without a claim, the local sockets get p at
// once and the PUBLISH is queued; with one, nothing is delivered until Redis says the claim was
// first.
func (a *redisAdapter) BroadcastCommit(p *protocol.Packet, opts BroadcastOptions, claim *DedupKey, done func(Commit)) {
	r := a.r
	down := linkState(r.current.Load()) == linkDown
	if claim == nil {
		a.Memory.Broadcast(p, opts)
		if opts.Local || a.detached || (len(opts.Rooms) == 1 && len(opts.Except) == 0 && a.has(opts.Rooms[0])) {
			done(Committed)
			return
		}
		msg, ch, err := a.encode(p, opts)
		if err != nil {
			done(LocalOnly)
			return
		}
		pc := newCommit(done, false)
		r.enqueueCommit(outMsg{channel: ch, payload: msg, commit: pc}, pc)
		if down {
			r.fire(pc, LocalOnly) // queued for when Redis is back; the client hears now
		}
		return
	}
	if down || a.detached || r.ctx.Err() != nil {
		done(Unavailable)
		return
	}
	msg, ch, err := a.encode(p, opts)
	if err != nil {
		done(Unavailable)
		return
	}
	pc := newCommit(done, true)
	r.enqueueCommit(outMsg{channel: ch, payload: msg, commit: pc, claim: &claimMsg{key: r.dedupKey(*claim), local: func() { a.Memory.Broadcast(p, opts) }}}, pc)
}

// BroadcastCommit implements Committer in streams mode: the entry is added (with a claim, by the
// script), the commit fires when XADD has returned, and the reader delivers it to the local
// sockets as any broadcast of this node. With Redis unreachable, a broadcast without a claim goes
// to the local sockets at once (LocalOnly), one with a claim nowhere (Unavailable).
func (a *streamsAdapter) BroadcastCommit(p *protocol.Packet, opts BroadcastOptions, claim *DedupKey, done func(Commit)) {
	r := a.r
	if a.local(opts) || r.ctx.Err() != nil {
		switch {
		case claim != nil:
			done(Unavailable)
		case opts.Local:
			a.deliverLocal(p, opts)
			done(Committed)
		default:
			a.deliverLocal(p, opts)
			done(LocalOnly)
		}
		return
	}
	x, err := a.xadd(p, opts)
	if err != nil {
		if claim != nil {
			done(Unavailable)
			return
		}
		a.deliverLocal(p, opts)
		done(LocalOnly)
		return
	}
	pc := newCommit(done, claim != nil)
	x.commit = pc
	if claim != nil {
		x.claim = r.dedupKey(*claim)
		x.values = append(x.values, claimField, "1")
	}
	if !r.enqueueCommit(outMsg{xadd: x}, pc) && claim == nil {
		a.deliverLocal(p, opts) // the queue is full: this node's sockets at least
	}
}

package adapter

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Live sessions (streams mode). Node's streams adapter, and chorus before it, write a socket's
// session to Redis when its connection drops; a node that dies without running that code (SIGKILL,
// a crash, a lost machine) leaves its clients nothing to recover. So chorus keeps every connected
// socket's session in Redis while it is connected, under the key Node uses (sio:session:<pid>), in
// Node's format plus two fields Node ignores: "from" (Session.From) and "node", the uid of the node
// the socket is live on. It is written when the socket connects (or recovers), again when its
// rooms change, and its expiry is pushed forward by one PEXPIRE per socket every liveInterval
// (pipelined, in batches); a key the PEXPIRE finds gone (Redis lost its data) is written again.
// When the connection drops, PersistSession overwrites it with the released session, without
// "node", as before; when the socket leaves for good, the key is deleted.
//
// A restore that finds a live session whose node is alive asks that node to let the socket go
// (message type 101, as for a connection it has not noticed dead) and waits a little for the
// released session; if that node is gone (no subscriber on its private channel: it died), the live
// session is restored at once. A Node server restores a live session like any other.

// liveInterval is how often the expiry of live sessions is pushed forward, at most; a namespace
// with a shorter MaxDisconnection does it every quarter of that.
const liveInterval = 30 * time.Second

// liveExpireBatch bounds the keys of one PEXPIRE batch (one entry of the publish queue).
const liveExpireBatch = 1000

// liveGrace bounds the wait for a live session's node to release it.
var liveGrace = []time.Duration{25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}

// expireMsg pushes forward the expiry of live session keys (PEXPIRE each); keys found gone are
// written again by a.
type expireMsg struct {
	a    *streamsAdapter
	keys []string
	ttl  time.Duration
}

// liveTiming returns how often live sessions are refreshed and the expiry they are given: a node
// that dies right after a refresh leaves its sessions for MaxDisconnection plus two intervals,
// right before one for MaxDisconnection plus one.
func liveTiming(o *RecoveryOptions) (interval, ttl time.Duration) {
	interval = min(liveInterval, max(o.MaxDisconnection/4, time.Second))
	return interval, o.MaxDisconnection + 2*interval
}

// OpenSession implements LiveSessions: s is written to Redis as live on this node.
func (a *streamsAdapter) OpenSession(s Session) {
	o := a.rec.Load()
	if o == nil || a.detached || s.PID == "" {
		return
	}
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if a.live == nil {
		a.live = make(map[string]*Session)
	}
	a.live[s.SID] = &s
	a.writeLiveLocked(&s, o)
	if a.liveTimer == nil {
		interval, _ := liveTiming(o)
		a.liveTimer = time.AfterFunc(interval, a.refreshLive)
	}
}

// DropSession implements LiveSessions: the socket left for good; its session is deleted.
func (a *streamsAdapter) DropSession(sid, pid string) {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if _, ok := a.live[sid]; !ok {
		return
	}
	delete(a.live, sid)
	a.r.enqueue(outMsg{del: sessionKeyPrefix + pid})
}

// forgetLive stops keeping s live, for PersistSession, which then writes the released session; the
// caller holds liveMu.
func (a *streamsAdapter) forgetLiveLocked(sid string) {
	delete(a.live, sid)
}

// writeLiveLocked queues the SET of a live session with its current rooms; liveMu is held, so that
// it cannot come after the released session PersistSession writes.
func (a *streamsAdapter) writeLiveLocked(s *Session, o *RecoveryOptions) {
	if rooms := a.Memory.Rooms(s.SID); rooms != nil {
		s.Rooms = rooms
	}
	b, err := encodeSessionLive(*s, a.r.uid)
	if err != nil {
		a.r.log.Warn("live session not kept: it does not encode", "nsp", a.name, "sid", s.SID, "err", err)
		return
	}
	_, ttl := liveTiming(o)
	if !a.r.enqueue(outMsg{set: &setMsg{key: sessionKeyPrefix + s.PID, value: base64.StdEncoding.EncodeToString(b), ttl: ttl}}) {
		a.r.log.Warn("live session not kept: the redis queue is full", "nsp", a.name, "sid", s.SID)
	}
}

// roomsChanged writes the live session of socket sid again, if it has one.
func (a *streamsAdapter) roomsChanged(sid string) {
	o := a.rec.Load()
	if o == nil {
		return
	}
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if s, ok := a.live[sid]; ok {
		a.writeLiveLocked(s, o)
	}
}

func (a *streamsAdapter) Join(id string, rooms ...string) {
	a.Memory.Join(id, rooms...)
	a.roomsChanged(id)
}

func (a *streamsAdapter) Leave(id, room string) {
	a.Memory.Leave(id, room)
	a.roomsChanged(id)
}

// refreshLive pushes forward the expiry of every live session, in batches of PEXPIRE, and re-arms
// itself while there are some.
func (a *streamsAdapter) refreshLive() {
	o := a.rec.Load()
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if len(a.live) == 0 || o == nil {
		a.liveTimer = nil
		return
	}
	interval, ttl := liveTiming(o)
	keys := make([]string, 0, min(len(a.live), liveExpireBatch))
	flush := func() {
		if len(keys) > 0 && !a.r.enqueue(outMsg{expire: &expireMsg{a: a, keys: keys, ttl: ttl}}) {
			a.r.log.Warn("live sessions' expiry not pushed forward: the redis queue is full", "nsp", a.name, "sessions", len(keys))
		}
		keys = make([]string, 0, liveExpireBatch)
	}
	for _, s := range a.live {
		keys = append(keys, sessionKeyPrefix+s.PID)
		if len(keys) == liveExpireBatch {
			flush()
		}
	}
	flush()
	a.liveTimer = time.AfterFunc(interval, a.refreshLive)
}

// rewriteLive writes again the live sessions whose keys a PEXPIRE found gone (Redis restarted
// without its data, or evicted them).
func (a *streamsAdapter) rewriteLive(keys []string) {
	o := a.rec.Load()
	if o == nil {
		return
	}
	gone := make(map[string]bool, len(keys))
	for _, k := range keys {
		gone[k] = true
	}
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	n := 0
	for _, s := range a.live {
		if gone[sessionKeyPrefix+s.PID] {
			a.writeLiveLocked(s, o)
			n++
		}
	}
	if n > 0 {
		a.r.log.Info("live sessions written again: redis had lost them", "nsp", a.name, "sessions", n)
	}
}

// stopLive stops the refresh (the adapter closes).
func (a *streamsAdapter) stopLive() {
	a.liveMu.Lock()
	defer a.liveMu.Unlock()
	if a.liveTimer != nil {
		a.liveTimer.Stop()
		a.liveTimer = nil
	}
	a.live = nil
}

// nodeAlive reports whether the node uid is subscribed to its private channel of this namespace.
func (a *streamsAdapter) nodeAlive(ctx context.Context, uid string) bool {
	ch := a.r.opts.Prefix + "#" + a.name + "#" + uid + "#"
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	counts, err := a.r.client.PubSubNumSub(ctx, ch).Result()
	return err != nil || counts[ch] > 0 // unknown: take it for alive, and wait for it
}

// awaitReleased returns once session pid is no longer live on a node that may still hold its
// socket: gone from Redis (raw ""), released, or live on a node that is dead. It asks a live
// node other than this one to let the socket go (this node's own socket was let go by the
// caller), and waits at most liveGrace for it.
func (a *streamsAdapter) awaitReleased(ctx context.Context, pid string) error {
	asked := false
	for i := 0; ; i++ {
		raw, err := a.r.client.Get(ctx, sessionKeyPrefix+pid).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return err
		}
		node := liveNode(raw)
		if node == "" || i >= len(liveGrace) {
			return nil
		}
		if node != a.r.uid {
			if !a.nodeAlive(ctx, node) {
				return nil // its node died: the live session is all there is
			}
			if !asked {
				asked = true
				a.publishRequest(msgReleaseSession, 1, func(e *msgEncoder) {
					e.str("pid")
					e.str(pid)
				})
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(liveGrace[i]):
		}
	}
}

// liveNode returns the node a raw session is live on, "" for a released one (or one that does not
// decode: the restore reports that).
func liveNode(raw string) string {
	s, err := decodeSession(raw)
	if err != nil {
		return ""
	}
	return s.node
}

// encodeSessionLive writes a live session: Node's fields, "from" and "node".
func encodeSessionLive(s Session, node string) ([]byte, error) {
	return encodeSessionFields(s, node)
}

// awaitUp returns once the link to Redis is up, or an error after wait (or when ctx ends first).
func (r *Redis) awaitUp(ctx context.Context, wait time.Duration) error {
	if linkState(r.current.Load()) == linkUp {
		return nil
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for linkState(r.current.Load()) != linkUp {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return errors.New("the adapter is closed")
		case <-deadline.C:
			return fmt.Errorf("redis unreachable for %s", wait)
		case <-tick.C:
		}
	}
	return nil
}

package adapter_test

// Live sessions and committed publishes in a cluster (issue 9, scenario 2: a node killed with
// SIGKILL). The end-to-end test with real SIGKILLs is tests/reliability/node-kill.test.mjs; these
// pin down each piece.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// storedSession reads the session key of pid as Redis holds it ({} fields of the msgpack map), and
// its TTL; nil when there is none.
func storedSession(t *testing.T, rc *redis.Client, pid string) (map[string]any, time.Duration) {
	t.Helper()
	ctx := context.Background()
	raw, err := rc.Get(ctx, "sio:session:"+pid).Result()
	if err == redis.Nil {
		return nil, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	ttl, err := rc.PTTL(ctx, "sio:session:"+pid).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m, ttl
}

func roomsOf(m map[string]any) []string {
	var out []string
	for _, r := range m["rooms"].([]any) {
		out = append(out, r.(string))
	}
	slices.Sort(out)
	return out
}

// A connected socket's session is in Redis, live on its node, with its rooms, for longer than the
// window; a drop leaves the released session (no node, the window as expiry); a socket that leaves
// on purpose leaves nothing; a live key Redis lost is written again.
func TestStreamsLiveSession(t *testing.T) {
	t.Parallel()
	const window = 2 * time.Second // refreshed every second (liveTiming)
	nodes, _ := streamsNodes(t, sharedRedis(t), 1, func(c *config.Config) { c.RecoveryMaxDisconnection = window })
	a := nodes[0]
	rc := redisClient(t, sharedRedis(t).url())

	c := dial(t, a.url)
	var live map[string]any
	waitFor(t, "the live session in redis", func() bool {
		live, _ = storedSession(t, rc, c.PID)
		return live != nil
	})
	if live["sid"] != c.ID || live["pid"] != c.PID || live["node"] == nil || live["node"] == "" {
		t.Fatalf("live session %v", live)
	}
	join(t, c, "r1", "r2")
	waitFor(t, "the live session's rooms follow the joins", func() bool {
		live, _ = storedSession(t, rc, c.PID)
		return slices.Equal(roomsOf(live), slices.Sorted(slices.Values([]string{c.ID, "r1", "r2"})))
	})
	request(t, c, "leave", "r1")
	waitFor(t, "and the leave", func() bool {
		live, _ = storedSession(t, rc, c.PID)
		return slices.Equal(roomsOf(live), slices.Sorted(slices.Values([]string{c.ID, "r2"})))
	})

	// Its expiry is pushed forward: it outlives the window while the socket is connected.
	time.Sleep(window + time.Second)
	if live, ttl := storedSession(t, rc, c.PID); live == nil || ttl <= window {
		t.Fatalf("live session after the window: %v, TTL %s", live, ttl)
	}
	// Redis loses it (a restart without persistence): it is written again.
	if err := rc.Del(context.Background(), "sio:session:"+c.PID).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lost live session written again", func() bool {
		live, _ = storedSession(t, rc, c.PID)
		return live != nil && live["node"] != nil && slices.Contains(roomsOf(live), "r2")
	})

	// The connection drops: the released session, without node, expiring with the window.
	dropOn(t, a, c)
	waitFor(t, "the released session", func() bool {
		m, ttl := storedSession(t, rc, c.PID)
		return m != nil && m["node"] == nil && ttl > 0 && ttl <= window
	})

	// A client that disconnects on purpose leaves no session to recover.
	d := dial(t, a.url)
	waitFor(t, "the live session of the second client", func() bool {
		m, _ := storedSession(t, rc, d.PID)
		return m != nil
	})
	if err := d.WriteRaw("41"); err != nil { // socket.disconnect()
		t.Fatal(err)
	}
	waitFor(t, "its session deleted", func() bool {
		m, _ := storedSession(t, rc, d.PID)
		return m == nil
	})
	back := dialAuth(t, a.url, map[string]string{"pid": d.PID})
	if back.Recovered {
		t.Fatal("a client that disconnected on purpose recovered")
	}
}

// A node that dies without a word (no disconnect, no persisted session: here its connections to
// Redis are cut before its sockets close) leaves the live sessions of its sockets: their clients
// recover on another node, at once (the dead node does not answer on its channel), with every
// event sent meanwhile.
func TestStreamsRecoveryAfterNodeDeath(t *testing.T) {
	t.Parallel()
	rs := startRedis(t)
	nodes, prefix := streamsNodes(t, rs, 1, nil)
	b := nodes[0]
	// A talks to Redis through a proxy that the test cuts: A can no longer write anything.
	proxy := startTCPProxy(t, rs.port)
	a := newNode(t, "A", "redis://"+proxy.addr, prefix, func(c *config.Config) { c.RedisMode = "streams" })
	waitServerCount(t, 2, a, b)

	sender := dial(t, b.url)
	c := dial(t, a.url)
	join(t, c, "room")
	publish(t, sender, "room", "m", 1)
	ev := next(t, c)
	rc := redisClient(t, rs.url())
	waitFor(t, "the live session with its room", func() bool {
		m, _ := storedSession(t, rc, c.PID)
		return m != nil && slices.Contains(roomsOf(m), "room")
	})

	proxy.cut() // A is gone for Redis: it cannot persist anything, nor answer on its channel
	waitServerCount(t, 1, b)
	publish(t, sender, "room", "m", 2)
	start := time.Now()
	back := dialAuth(t, b.url, map[string]string{"pid": c.PID, "offset": ev.Offset})
	if !back.Recovered || back.ID != c.ID {
		t.Fatalf("recovered %v id %s, want %s", back.Recovered, back.ID, c.ID)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("recovery took %s: it waited for the dead node", took)
	}
	expect(t, back, "m", "2")
	publish(t, sender, "room", "m", 3)
	expect(t, back, "m", "3")
}

// A publish is acked once Redis has it: while Redis holds writes back (CLIENT PAUSE WRITE), the
// ack waits, and when it comes the message is in Redis (streams: in the stream).
func TestClusterPublishAckedOnceCommitted(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		rs := startRedis(t)
		prefix := testPrefix(t)
		a := newNode(t, "A", rs.url(), prefix, func(c *config.Config) { c.RedisMode = mode })
		b := newNode(t, "B", rs.url(), prefix, func(c *config.Config) { c.RedisMode = mode })
		waitServerCount(t, 2, a, b)
		sender, receiver := dial(t, a.url), dial(t, b.url)
		join(t, receiver, "room")
		rc := redisClient(t, rs.url())
		const pause = 500 * time.Millisecond
		if err := rc.Do(context.Background(), "CLIENT", "PAUSE", pause.Milliseconds(), "WRITE").Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		request(t, sender, "publish", map[string]any{"room": "room", "event": "m", "data": "paused"})
		if took := time.Since(start); took < pause*4/5 {
			t.Fatalf("acked after %s, while Redis held writes for %s", took, pause)
		}
		if mode == "streams" {
			entries, err := rc.XRange(context.Background(), prefix, "-", "+").Result()
			if err != nil || !slices.ContainsFunc(entries, func(e redis.XMessage) bool { d, _ := e.Values["data"].(string); return d != "" }) {
				t.Fatalf("acked, and the stream holds %v (%v)", entries, err)
			}
		}
		expect(t, receiver, "m", `"paused"`)
	})
}

// A publish with an id whose broadcast fails is not left claimed: the claim and the broadcast are
// one operation, so the retry is delivered (not taken for a duplicate of a message nobody got).
func TestStreamsClaimNotLeftWithoutBroadcast(t *testing.T) {
	t.Parallel()
	rs := startRedis(t)
	nodes, prefix := streamsNodes(t, rs, 2, nil)
	a, b := nodes[0], nodes[1]
	sender, receiver := dial(t, a.url), dial(t, b.url)
	join(t, receiver, "room")
	publish(t, sender, "room", "m", "before")
	expect(t, receiver, "m", `"before"`)

	rc := redisClient(t, rs.url())
	ctx := context.Background()
	// The stream becomes a string: every XADD fails (WRONGTYPE), inside the claim's script too.
	if err := rc.Del(ctx, prefix).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, prefix, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	msg := map[string]any{"room": "room", "event": "m", "data": "retried", "id": "m-1"}
	var refused struct {
		OK    bool `json:"ok"`
		Error struct{ Code string }
	}
	if got := ackOf(t, sender, "publish", msg); json.Unmarshal([]byte(got), &refused) != nil || refused.OK || refused.Error.Code != "unavailable" {
		t.Fatalf("publish with an id whose XADD fails: %s, want unavailable", got)
	}
	if err := rc.Del(ctx, prefix).Err(); err != nil {
		t.Fatal(err)
	}
	if got := ackOf(t, sender, "publish", msg); got != `{"ok":true}` {
		t.Fatalf("the retry once the stream works: %s, want {\"ok\":true}", got)
	}
	expect(t, receiver, "m", `"retried"`)
	if got := ackOf(t, sender, "publish", msg); got != `{"ok":true,"duplicate":true}` {
		t.Fatalf("a second retry: %s, want a duplicate", got)
	}
	quiet(t, a, receiver)
}

// tcpProxy forwards connections to a port on 127.0.0.1 until cut, which closes them all and
// refuses new ones: a node's link to Redis that dies with the node.
type tcpProxy struct {
	addr string
	ln   net.Listener

	mu    sync.Mutex
	conns []net.Conn
	dead  bool
	muted atomic.Bool
}

func startTCPProxy(t *testing.T, port int) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: ln.Addr().String(), ln: ln}
	t.Cleanup(p.cut)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.dead {
				p.mu.Unlock()
				c.Close()
				s.Close()
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { p.copyReplies(c, s); c.Close() }()
		}
	}()
	return p
}

// copyReplies copies what Redis sends to the node, dropping it while the proxy is muted.
func (p *tcpProxy) copyReplies(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.muted.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// mute drops every reply Redis sends to the node for d: its commands run, it never hears.
func (p *tcpProxy) mute(d time.Duration) {
	p.muted.Store(true)
	time.AfterFunc(d, func() { p.muted.Store(false) })
}

// cut closes every forwarded connection and the listener.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return
	}
	p.dead = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// A publish with an id whose claim and entry Redis made while the node never heard the reply: the
// publisher is told unavailable; the message still reaches everyone once, this node's sockets
// included (its reader delivers its own claimed entry it has not delivered), and the client's retry
// is a duplicate.
func TestStreamsClaimReplyLost(t *testing.T) {
	t.Parallel()
	rs := startRedis(t)
	nodes, prefix := streamsNodes(t, rs, 1, nil)
	b := nodes[0]
	proxy := startTCPProxy(t, rs.port)
	a := newNode(t, "A", "redis://"+proxy.addr, prefix, func(c *config.Config) { c.RedisMode = "streams" })
	waitServerCount(t, 2, a, b)
	sender, ra, rb := dial(t, a.url), dial(t, a.url), dial(t, b.url)
	join(t, ra, "room")
	join(t, rb, "room")
	publish(t, sender, "room", "m", "before")
	expect(t, ra, "m", `"before"`)
	expect(t, rb, "m", `"before"`)

	proxy.mute(3500 * time.Millisecond) // longer than a pipeline's timeout (3 s)
	msg := map[string]any{"room": "room", "event": "m", "data": "claimed", "id": "m-1"}
	var refused struct {
		OK    bool `json:"ok"`
		Error struct{ Code string }
	}
	if got := ackOf(t, sender, "publish", msg); json.Unmarshal([]byte(got), &refused) != nil || refused.OK || refused.Error.Code != "unavailable" {
		t.Fatalf("publish whose reply was lost: %s, want unavailable", got)
	}
	expect(t, rb, "m", `"claimed"`)
	// A's reader gets it once its link works again (a read whose reply was swallowed times out
	// after the block time and the command timeout).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if ev, err := ra.Next(ctx); err != nil || ev.Name != "m" || len(ev.Args) != 1 || string(ev.Args[0]) != `"claimed"` {
		t.Fatalf("A's own receiver: %v %v", ev, err)
	}
	waitFor(t, "node A reports redis up", func() bool { return readyzState(t, a) == "up" })
	if got := ackOf(t, sender, "publish", msg); got != `{"ok":true,"duplicate":true}` {
		t.Fatalf("the retry: %s, want a duplicate", got)
	}
	quiet(t, a, ra, rb)
}

// A client that comes back while Redis is unreachable waits for it (its CONNECT is answered when
// Redis is back, within RecoveryOptions.OutageWait) and recovers its session, instead of getting a
// new one.
func TestStreamsRecoveryWaitsForRedis(t *testing.T) {
	t.Parallel()
	rs := startRedisPersistent(t)
	nodes, _ := streamsNodes(t, rs, 2, nil)
	a, b := nodes[0], nodes[1]
	c := dial(t, a.url)
	join(t, c, "room")
	sender := dial(t, b.url)
	publish(t, sender, "room", "m", 1)
	ev := next(t, c)

	rs.stop()
	waitFor(t, "node A reports redis down", func() bool { return readyzState(t, a) == "down" })
	dropOn(t, a, c) // its session waits in A's queue for Redis
	type dialed struct {
		c   *siotest.Client
		err error
	}
	back := make(chan dialed, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cl, err := siotest.Dial(ctx, a.url, "/", map[string]string{"pid": c.PID, "offset": ev.Offset})
		back <- dialed{cl, err}
	}()
	time.Sleep(time.Second)
	if err := rs.restart(); err != nil {
		t.Fatal(err)
	}
	d := <-back
	if d.err != nil {
		t.Fatal(d.err)
	}
	t.Cleanup(d.c.Close)
	if !d.c.Recovered || d.c.ID != c.ID {
		t.Fatalf("recovered %v id %s after %s, want %s", d.c.Recovered, d.c.ID, time.Since(start), c.ID)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("answered after %s, before Redis was back", took)
	}
	waitServerCount(t, 2, a, b)
	publish(t, sender, "room", "m", 2)
	expect(t, d.c, "m", "2")
}

// After Redis lost its data (restarted without persistence), a client whose offset the new stream
// does not hold gets a new session: what came after its offset may be lost, and it is told so
// (recovered false) rather than given a session with a silent gap. Its session itself is there:
// it was connected across the restart, and dropped after.
func TestStreamsRecoveryAfterRedisLostTheStream(t *testing.T) {
	for _, more := range []bool{false, true} {
		t.Run(map[bool]string{false: "nothing added since", true: "entries added since"}[more], func(t *testing.T) {
			t.Parallel()
			rs := startRedis(t)
			nodes, _ := streamsNodes(t, rs, 2, nil)
			a, b := nodes[0], nodes[1]
			c := dial(t, a.url)
			join(t, c, "room")
			sender := dial(t, b.url)
			publish(t, sender, "room", "m", 1)
			ev := next(t, c)
			if err := rs.restart(); err != nil {
				t.Fatal(err)
			}
			waitServerCount(t, 2, a, b)
			if more {
				publish(t, sender, "other", "m", "after")
			}
			dropOn(t, a, c)
			rc := redisClient(t, rs.url())
			waitFor(t, "its session in the new redis", func() bool {
				m, _ := storedSession(t, rc, c.PID)
				return m != nil
			})
			back := dialAuth(t, b.url, map[string]string{"pid": c.PID, "offset": ev.Offset})
			if back.Recovered {
				t.Fatal("recovered across a lost stream")
			}
		})
	}
}

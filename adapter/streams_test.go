package adapter_test

// Streams mode (CHORUS_REDIS_MODE=streams): connection-state recovery across chorus nodes, and
// what the stream and the session keys hold. Clusters run in-process; clients are siotest over
// WebSocket; a client "drops" by closing its TCP connection.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// redisClient is a plain client of rs for a test's checks.
// streamsNodes starts n nodes in streams mode on one prefix (the stream's name), edited by edit.
func streamsNodes(t *testing.T, rs *redisServer, n int, edit func(*config.Config)) ([]*node, string) {
	t.Helper()
	prefix := testPrefix(t)
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = newNode(t, string(rune('A'+i)), rs.url(), prefix, func(c *config.Config) {
			c.RedisMode = "streams"
			if edit != nil {
				edit(c)
			}
		})
	}
	waitServerCount(t, n, nodes...)
	return nodes, prefix
}

// dialAuth connects to n's "/" with auth (the stock client's {pid, offset} to recover).
func dialAuth(t *testing.T, url string, auth any) *siotest.Client {
	t.Helper()
	return siotest.Connect(t, url, "/", auth)
}

// dropOn closes c's connection and waits until n has noticed (its session is then being kept).
func dropOn(t *testing.T, n *node, c *siotest.Client) {
	t.Helper()
	c.Close()
	waitFor(t, "node "+n.name+" notices the drop", func() bool {
		_, ok := n.root().Socket(c.ID)
		return !ok
	})
}

func publish(t *testing.T, c *siotest.Client, room, event string, data any) {
	t.Helper()
	request(t, c, "publish", map[string]any{"room": room, "event": event, "data": data})
}

func TestStreamsRecoveryAcrossNodes(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	nodes, prefix := streamsNodes(t, rs, 2, nil)
	a, b := nodes[0], nodes[1]
	sender := dial(t, b.url)
	a1 := dial(t, a.url)
	if a1.PID == "" {
		t.Fatal("the CONNECT reply has no pid")
	}
	join(t, a1, "room")
	publish(t, sender, "room", "m", 1)
	ev := next(t, a1)
	if _, ok := parseID(ev.Offset); !ok || string(ev.Args[0]) != "1" {
		t.Fatalf("first event %s %s offset %q: want the stream entry id as offset", ev.Name, ev.Args, ev.Offset)
	}
	if c, ok := a.root().Socket(a1.ID); ok {
		c.Set("user", "ada")
	}
	dropOn(t, a, a1)

	// The session, in Node's format, under sio:session:<pid>, with the window as its expiry.
	rc := redisClient(t, rs.url())
	var raw string
	waitFor(t, "the session in Redis", func() bool { // A writes it through its publish queue
		var err error
		raw, err = rc.Get(context.Background(), "sio:session:"+a1.PID).Result()
		return err == nil
	})
	if ttl := rc.PTTL(context.Background(), "sio:session:"+a1.PID).Val(); ttl <= 0 || ttl > 2*time.Minute {
		t.Errorf("session expiry %s, want at most the 2m window", ttl)
	}
	sess, _ := base64.StdEncoding.DecodeString(raw)
	for _, want := range []string{"sid", a1.ID, "pid", a1.PID, "rooms", "room", "data", "user", "ada"} {
		if !strings.Contains(string(sess), want) {
			t.Errorf("session %q lacks %q", sess, want)
		}
	}

	// Acks and 202s come before the entries are added (each node adds its own): wait for each
	// node's entry before the other node adds the next, so that the stream holds them in order.
	last := func(what string) {
		t.Helper()
		waitFor(t, what+" in the stream", func() bool {
			l, err := rc.XRevRangeN(context.Background(), prefix, "+", "-", 1).Result()
			return err == nil && len(l) == 1 && strings.Contains(l[0].Values["data"].(string), what)
		})
	}
	publish(t, sender, "room", "m", 2)
	if err := b.root().Emit(adapter.BroadcastOptions{Rooms: []string{"room"}, Volatile: true}, "m", "volatile"); err != nil {
		t.Fatal(err)
	}
	last(`"volatile"`)
	apiEmit(t, a, `{"rooms":["`+a1.ID+`"],"event":"m","data":"to-the-socket"}`)
	last("to-the-socket")
	publish(t, sender, "room", "m", 3)

	back := dialAuth(t, b.url, map[string]string{"pid": a1.PID, "offset": ev.Offset})
	if !back.Recovered || back.ID != a1.ID || back.PID != a1.PID {
		t.Fatalf("on B: id %s pid %s recovered %v; want %s %s true", back.ID, back.PID, back.Recovered, a1.ID, a1.PID)
	}
	for _, want := range []string{"2", `"to-the-socket"`, "3"} {
		expect(t, back, "m", want)
	}
	publish(t, sender, "room", "m", 4) // live, through the restored room
	expect(t, back, "m", "4")
	c, ok := b.root().Socket(back.ID)
	if !ok || !slices.Contains(c.Rooms(), "room") || !c.Recovered() {
		t.Fatalf("B's socket: %v", ok)
	}
	if v, _ := c.Get("user"); v != "ada" {
		t.Errorf("socket data after recovery: %v", v)
	}
	quiet(t, b, back)

	// Each entry as Node's adapter writes it: uid, nsp, type and JSON data.
	entries, err := rc.XRange(context.Background(), prefix, "-", "+").Result()
	if err != nil || len(entries) == 0 {
		t.Fatalf("stream %s: %v, %d entries", prefix, err, len(entries))
	}
	var fields []string
	for k := range entries[0].Values {
		fields = append(fields, k)
	}
	slices.Sort(fields)
	if !slices.Equal(fields, []string{"data", "nsp", "type", "uid"}) || entries[0].Values["type"] != "3" ||
		!strings.HasPrefix(entries[0].Values["data"].(string), `{"packet":{"type":2,"data":["m",1]`) {
		t.Errorf("first entry %+v", entries[0])
	}
}

func parseID(s string) (string, bool) {
	a, b, ok := strings.Cut(s, "-")
	return s, ok && a != "" && b != "" && strings.Trim(a+b, "0123456789") == ""
}

// A client that drops before it received anything sends {pid} alone; it still recovers, on the
// other node, with what it missed.
func TestStreamsRecoveryWithoutOffset(t *testing.T) {
	t.Parallel()
	nodes, _ := streamsNodes(t, sharedRedis(t), 2, nil)
	a, b := nodes[0], nodes[1]
	sender := dial(t, a.url)
	a1 := dial(t, a.url)
	join(t, a1, "quiet")
	dropOn(t, a, a1)
	publish(t, sender, "quiet", "m", "missed")
	back := dialAuth(t, b.url, map[string]string{"pid": a1.PID})
	if !back.Recovered || back.ID != a1.ID {
		t.Fatalf("recovered %v id %s, want %s", back.Recovered, back.ID, a1.ID)
	}
	expect(t, back, "m", `"missed"`)
	quiet(t, a, back)
}

// A client that comes back on B while A still holds its socket (A has not noticed the old
// connection is dead): B asks A to let the session go, and the client recovers on B.
func TestStreamsRecoveryBeforeTheOldNodeNoticed(t *testing.T) {
	t.Parallel()
	nodes, _ := streamsNodes(t, sharedRedis(t), 2, nil)
	a, b := nodes[0], nodes[1]
	sender := dial(t, a.url)
	old := dial(t, a.url)
	join(t, old, "held")
	publish(t, sender, "held", "m", 1)
	ev := next(t, old)
	back := dialAuth(t, b.url, map[string]string{"pid": old.PID, "offset": ev.Offset})
	if !back.Recovered || back.ID != old.ID {
		t.Fatalf("recovered %v id %s, want %s", back.Recovered, back.ID, old.ID)
	}
	select {
	case <-old.Done(): // A closed the old connection
	case <-time.After(5 * time.Second):
		t.Fatal("A kept the old connection")
	}
	if _, ok := a.root().Socket(old.ID); ok {
		t.Fatal("A still has the socket")
	}
	publish(t, sender, "held", "m", 2)
	expect(t, back, "m", "2")
	quiet(t, a, back)
}

// When what a client missed has been trimmed from the stream, it gets a new session; so it does
// with a pid nobody knows.
func TestStreamsRecoveryTrimmed(t *testing.T) {
	t.Parallel()
	nodes, prefix := streamsNodes(t, sharedRedis(t), 2, func(c *config.Config) { c.RedisStreamMaxLen = 10 })
	a, b := nodes[0], nodes[1]
	sender := dial(t, a.url)
	a1 := dial(t, a.url)
	join(t, a1, "r")
	publish(t, sender, "r", "m", 0)
	ev := next(t, a1)
	dropOn(t, a, a1)
	publish(t, sender, "r", "m", "lost")
	for i := range 250 { // MAXLEN ~ trims whole nodes of 100 entries
		if err := sender.Emit("publish", map[string]any{"room": "noise", "event": "n", "data": i}); err != nil {
			t.Fatal(err)
		}
	}
	rc := redisClient(t, sharedRedis(t).url())
	waitFor(t, "the client's offset trimmed from the stream", func() bool {
		info, err := rc.XInfoStream(context.Background(), prefix).Result()
		return err == nil && idLess(ev.Offset, info.FirstEntry.ID) && info.Length < 250
	})
	back := dialAuth(t, b.url, map[string]string{"pid": a1.PID, "offset": ev.Offset})
	if back.Recovered || back.ID == a1.ID {
		t.Fatalf("recovered %v with id %s after its missed packets were trimmed", back.Recovered, back.ID)
	}
	stranger := dialAuth(t, b.url, map[string]string{"pid": "nobody", "offset": ev.Offset})
	if stranger.Recovered {
		t.Fatal("an unknown pid recovered")
	}
	quiet(t, a, back)
}

// The stream's and sessions' expiries: an expired session is not restored.
func TestStreamsRecoveryExpired(t *testing.T) {
	t.Parallel()
	nodes, _ := streamsNodes(t, sharedRedis(t), 1, func(c *config.Config) { c.RecoveryMaxDisconnection = 300 * time.Millisecond })
	a := nodes[0]
	a1 := dial(t, a.url)
	dropOn(t, a, a1)
	time.Sleep(600 * time.Millisecond) // the window passes
	back := dialAuth(t, a.url, map[string]string{"pid": a1.PID})
	if back.Recovered || back.ID == a1.ID {
		t.Fatal("recovered after the window")
	}
}

// Both nodes deliver every broadcast in stream order: a socket that heard broadcasts of both nodes
// recovers from its last offset without losing or repeating one.
func TestStreamsOrderAcrossNodes(t *testing.T) {
	t.Parallel()
	nodes, _ := streamsNodes(t, sharedRedis(t), 2, nil)
	a, b := nodes[0], nodes[1]
	sa, sb := dial(t, a.url), dial(t, b.url)
	c := dial(t, a.url)
	join(t, c, "mix")
	const n = 150
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			sb.Emit("publish", map[string]any{"room": "mix", "event": "b", "data": i})
		}
	}()
	for i := range n {
		sa.Emit("publish", map[string]any{"room": "mix", "event": "a", "data": i})
	}
	<-done
	var got []siotest.Event
	for range n / 2 {
		got = append(got, next(t, c))
	}
	last := got[len(got)-1].Offset
	dropOn(t, a, c)
	back := dialAuth(t, b.url, map[string]string{"pid": c.PID, "offset": last})
	if !back.Recovered {
		t.Fatal("not recovered")
	}
	for len(got) < 2*n {
		got = append(got, next(t, back))
	}
	seen := map[string]int{"a": 0, "b": 0}
	prev := ""
	for _, ev := range got {
		if want := seen[ev.Name]; string(ev.Args[0]) != strconvItoa(want) {
			t.Fatalf("%s: got %s, want %d (no loss, no repeat, each sender in order)", ev.Name, ev.Args[0], want)
		}
		seen[ev.Name]++
		if prev != "" && !idLess(prev, ev.Offset) {
			t.Fatalf("offsets out of order: %s then %s", prev, ev.Offset)
		}
		prev = ev.Offset
	}
	quiet(t, a, back)
}

func strconvItoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// idLess compares stream ids.
func idLess(x, y string) bool {
	xm, xs, _ := strings.Cut(x, "-")
	ym, ys, _ := strings.Cut(y, "-")
	if len(xm) != len(ym) {
		return len(xm) < len(ym)
	}
	if xm != ym {
		return xm < ym
	}
	if len(xs) != len(ys) {
		return len(xs) < len(ys)
	}
	return xs < ys
}

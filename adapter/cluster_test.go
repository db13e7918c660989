package adapter_test

// Cluster tests: chorus servers in-process (app.New with CHORUS_REDIS_URL pointing at a redis-server
// this test started), stock-protocol clients (siotest) over WebSocket, everything over the wire.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// testPrefix is a channel prefix no other test uses, so that tests sharing a redis-server never
// hear each other.
func testPrefix(t testing.TB) string {
	var b [4]byte
	rand.Read(b[:])
	return "chorus-test-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + hex.EncodeToString(b[:])
}

var (
	sharedRedisOnce sync.Once
	sharedRedisSrv  *redisServer
	sharedRedisErr  error
	sharedRedisDir  string // removed by TestMain
)

// sharedRedis returns the redis-server the tests of this package share (each with its own
// prefix); TestMain stops it.
func sharedRedis(t testing.TB) *redisServer {
	t.Helper()
	sharedRedisOnce.Do(func() {
		sharedRedisDir, sharedRedisErr = os.MkdirTemp("", "chorus-redis-")
		if sharedRedisErr == nil {
			sharedRedisSrv, sharedRedisErr = newRedisServer(sharedRedisDir)
		}
	})
	if sharedRedisErr != nil {
		t.Fatal(sharedRedisErr)
	}
	return sharedRedisSrv
}

// logBuffer collects a node's log lines (JSON), safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many lines hold s.
func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// node is one chorus server of a test cluster.
type node struct {
	name string
	srv  *sio.Server
	url  string
	logs *logBuffer
}

func (n *node) root() *sio.Namespace { return n.srv.Namespace("/") }

// newNode runs chorus in-process on 127.0.0.1 with the Redis adapter.
func newNode(t *testing.T, name, redisURL, prefix string, edit func(*config.Config)) *node {
	t.Helper()
	cfg := config.Default()
	cfg.APIKey = "secret"
	cfg.RedisURL = redisURL
	cfg.RedisPrefix = prefix
	cfg.RedisRequestTimeout = 3 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	var w io.Writer = logs
	srv, h := app.New(cfg, slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
		if t.Failed() {
			t.Logf("logs of node %s:\n%s", name, logs)
		}
	})
	return &node{name: name, srv: srv, url: ts.URL, logs: logs}
}

// cluster starts n nodes on one prefix and waits until each counts them all.
func cluster(t *testing.T, redisURL string, n int) []*node {
	return clusterIn(t, "pubsub", redisURL, n)
}

// clusterIn starts n nodes in a Redis mode (pubsub or streams).
func clusterIn(t *testing.T, mode, redisURL string, n int) []*node {
	t.Helper()
	prefix := testPrefix(t)
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = newNode(t, string(rune('A'+i)), redisURL, prefix, func(c *config.Config) { c.RedisMode = mode })
	}
	waitServerCount(t, n, nodes...)
	return nodes
}

// inModes runs test in parallel subtests, once per Redis mode.
func inModes(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range []string{"pubsub", "streams"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			test(t, mode)
		})
	}
}

func waitServerCount(t *testing.T, want int, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("node %s counts %d servers", n.name, want), func() bool {
			got, err := n.root().ServerCount(context.Background())
			return err == nil && got == want
		})
	}
}

// waitFor polls cond every 5 ms for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, url string) *siotest.Client {
	t.Helper()
	return siotest.Connect(t, url, "/", nil)
}

// request emits event with arg and checks that the ack is {ok:true}.
func request(t *testing.T, c *siotest.Client, event string, arg any) {
	t.Helper()
	requestAcked(t, c, event, arg, `{"ok":true}`)
}

// publishLocal publishes while Redis is unreachable: the message reaches the node's own members,
// and the ack says so.
func publishLocal(t *testing.T, c *siotest.Client, arg any) {
	t.Helper()
	requestAcked(t, c, "publish", arg, `{"ok":true,"local":true}`)
}

func requestAcked(t *testing.T, c *siotest.Client, event string, arg any, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := c.EmitWithAck(ctx, event, arg)
	if err != nil {
		t.Fatalf("%s: %v", event, err)
	}
	if len(ev.Args) == 0 || string(ev.Args[0]) != want {
		t.Fatalf("%s(%v) acked %s, want %s", event, arg, ev.Args, want)
	}
}

func join(t *testing.T, c *siotest.Client, rooms ...string) {
	t.Helper()
	for _, r := range rooms {
		request(t, c, "join", r)
	}
}

// next returns c's next event, failing after 5 s.
func next(t *testing.T, c *siotest.Client) siotest.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("client %s: no event: %v", c.ID, err)
	}
	return ev
}

// expect checks that c's next event is name with the JSON argument arg.
func expect(t *testing.T, c *siotest.Client, name, arg string) {
	t.Helper()
	ev := next(t, c)
	if ev.Name != name || len(ev.Args) != 1 || string(ev.Args[0]) != arg {
		t.Fatalf("client %s: got %s %s, want %s [%s]", c.ID, ev.Name, ev.Args, name, arg)
	}
}

// quiet checks that c receives nothing more: a marker broadcast to everyone is its next event.
func quiet(t *testing.T, from *node, clients ...*siotest.Client) {
	t.Helper()
	if err := from.root().Emit(adapter.BroadcastOptions{}, "marker", 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		expect(t, c, "marker", "0")
	}
}

func TestClusterBroadcast(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		nodes := clusterIn(t, mode, sharedRedis(t).url(), 2)
		a, b := nodes[0], nodes[1]
		a1, b1, b2, b3 := dial(t, a.url), dial(t, b.url), dial(t, b.url), dial(t, b.url)
		join(t, a1, "red")
		join(t, b1, "red")
		join(t, b2, "red", "blue")

		// A client's publish on A reaches the room's members on B (and not the sender).
		request(t, a1, "publish", map[string]any{"room": "red", "event": "chat", "data": map[string]any{"text": "hi", "n": 1.5}})
		expect(t, b1, "chat", `{"n":1.5,"text":"hi"}`)
		expect(t, b2, "chat", `{"n":1.5,"text":"hi"}`)

		// Rooms minus except, from the server side of A.
		if err := a.root().Emit(adapter.BroadcastOptions{Rooms: []string{"red"}, Except: []string{"blue"}}, "notBlue", "x"); err != nil {
			t.Fatal(err)
		}
		expect(t, a1, "notBlue", `"x"`)
		expect(t, b1, "notBlue", `"x"`)
		// Several rooms (the namespace channel, not a room's).
		if err := a.root().Emit(adapter.BroadcastOptions{Rooms: []string{"blue", "nobody"}}, "blueOrNobody", 2); err != nil {
			t.Fatal(err)
		}
		expect(t, b2, "blueOrNobody", "2")
		// A socket id as a room, from B to A.
		if err := b.root().Emit(adapter.BroadcastOptions{Rooms: []string{a1.ID}}, "direct", true); err != nil {
			t.Fatal(err)
		}
		expect(t, a1, "direct", "true")
		// The whole namespace, from B: A's client and B's own.
		if err := b.root().Emit(adapter.BroadcastOptions{}, "all", nil); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*siotest.Client{a1, b1, b2, b3} {
			expect(t, c, "all", "null")
		}
		// Local stays local.
		if err := a.root().Emit(adapter.BroadcastOptions{Local: true}, "localOnly", 1); err != nil {
			t.Fatal(err)
		}
		expect(t, a1, "localOnly", "1")
		// The HTTP API on A reaches members on B.
		apiEmit(t, a, `{"rooms":["blue"],"event":"fromAPI","data":{"k":[1,2]}}`)
		quiet(t, a, b1, b3) // nothing else for b1 and b3 so far
		expect(t, b2, "fromAPI", `{"k":[1,2]}`)
		expect(t, b2, "marker", "0")
	})
}

func apiEmit(t *testing.T, n *node, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, n.url+"/api/v1/emit", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer secret")
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/v1/emit %s: %s", body, res.Status)
	}
}

func TestClusterPublishBurstInOrder(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		nodes := clusterIn(t, mode, sharedRedis(t).url(), 2)
		sender, receiver := dial(t, nodes[0].url), dial(t, nodes[1].url)
		join(t, receiver, "burst")
		n := map[string]int{"pubsub": 2000, "streams": 500}[mode] // streams: a round trip more each
		for i := range n {
			if err := sender.Emit("publish", map[string]any{"room": "burst", "event": "seq", "data": i}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			ev := next(t, receiver)
			if want := fmt.Sprint(i); ev.Name != "seq" || string(ev.Args[0]) != want {
				t.Fatalf("message %d: got %s %s", i, ev.Name, ev.Args)
			}
		}
	})
}

func TestClusterBinary(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		nodes := clusterIn(t, mode, sharedRedis(t).url(), 2)
		a, b := nodes[0], nodes[1]
		a1, b1 := dial(t, a.url), dial(t, b.url)
		join(t, b1, "bin")
		join(t, a1, "bin")
		blob1, blob2 := []byte{0, 1, 2, 255, 254}, bytes.Repeat([]byte{7}, 70000) // bin8 and bin32
		raw := sio.Raw{
			JSON:        json.RawMessage(`{"a":{"_placeholder":true,"num":0},"list":[1,{"_placeholder":true,"num":1}],"s":"é\u2028"}`),
			Attachments: [][]byte{blob1, blob2},
		}
		for _, tc := range []struct{ from, to *node }{{a, b}, {b, a}} {
			if err := tc.from.root().Emit(adapter.BroadcastOptions{Rooms: []string{"bin"}}, "blob", raw, "second"); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*siotest.Client{b1, a1} {
			for range 2 { // its own node's broadcast and the other's
				ev := next(t, c)
				if ev.Name != "blob" || len(ev.Args) != 2 || string(ev.Args[1]) != `"second"` || len(ev.Attachments) != 2 ||
					!bytes.Equal(ev.Attachments[0], blob1) || !bytes.Equal(ev.Attachments[1], blob2) {
					t.Fatalf("got %s %s with %d attachments", ev.Name, ev.Args, len(ev.Attachments))
				}
				var got map[string]any
				json.Unmarshal(ev.Args[0], &got)
				if got["s"] != "é\u2028" {
					t.Fatalf("string changed: %s", ev.Args[0])
				}
			}
		}
	})
}

func TestClusterOperations(t *testing.T) {
	inModes(t, func(t *testing.T, mode string) {
		nodes := clusterIn(t, mode, sharedRedis(t).url(), 2)
		a, b := nodes[0], nodes[1]
		a1, b1, b2 := dial(t, a.url), dial(t, b.url), dial(t, b.url)
		join(t, a1, "team")
		join(t, b1, "team")
		join(t, b2, "other")
		if c, ok := b.root().Socket(b1.ID); ok {
			c.Set("user", map[string]any{"name": "bee", "id": 1})
		} else {
			t.Fatal("b1 is not a socket of B")
		}
		ctx := context.Background()

		t.Run("ServerCount", func(t *testing.T) {
			if n, err := a.root().ServerCount(ctx); n != 2 || err != nil {
				t.Fatalf("ServerCount = %d, %v", n, err)
			}
		})

		t.Run("FetchSockets", func(t *testing.T) {
			got, err := a.root().FetchSockets(ctx, adapter.BroadcastOptions{Rooms: []string{"team"}})
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(got, func(x, y adapter.SocketInfo) int { return strings.Compare(x.ID, y.ID) })
			want := []string{a1.ID, b1.ID}
			slices.Sort(want)
			if len(got) != 2 || got[0].ID != want[0] || got[1].ID != want[1] {
				t.Fatalf("FetchSockets(team) = %+v, want %v", got, want)
			}
			for _, s := range got {
				if !slices.Contains(s.Rooms, "team") || !slices.Contains(s.Rooms, s.ID) {
					t.Errorf("%s: rooms %v", s.ID, s.Rooms)
				}
				var hs struct {
					Headers map[string]string `json:"headers"`
					Query   map[string]string `json:"query"`
					Address string            `json:"address"`
				}
				if err := json.Unmarshal(s.Handshake, &hs); err != nil || hs.Query["EIO"] != "4" || hs.Address != "127.0.0.1" || hs.Headers["upgrade"] != "websocket" || hs.Headers["host"] == "" {
					t.Errorf("%s: handshake %s", s.ID, s.Handshake)
				}
				wantData := `{}`
				if s.ID == b1.ID {
					wantData = `{"user":{"id":1,"name":"bee"}}`
				}
				if string(s.Data) != wantData {
					t.Errorf("%s: data %s, want %s", s.ID, s.Data, wantData)
				}
			}
			all, err := b.root().FetchSockets(ctx, adapter.BroadcastOptions{Except: []string{"other"}})
			if err != nil || len(all) != 2 {
				t.Fatalf("FetchSockets(except other) from B = %+v, %v", all, err)
			}
			local, err := b.root().FetchSockets(ctx, adapter.BroadcastOptions{Local: true})
			if err != nil || len(local) != 2 {
				t.Fatalf("FetchSockets(local) from B = %+v, %v", local, err)
			}
		})

		t.Run("SocketsJoin and SocketsLeave", func(t *testing.T) {
			if err := a.root().SocketsJoin(ctx, adapter.BroadcastOptions{Rooms: []string{"team"}}, "joined", "also"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "b1 joined", func() bool {
				c, ok := b.root().Socket(b1.ID)
				return ok && slices.Contains(c.Rooms(), "joined") && slices.Contains(c.Rooms(), "also")
			})
			if c, _ := a.root().Socket(a1.ID); !slices.Contains(c.Rooms(), "joined") {
				t.Fatalf("a1 (local) rooms %v", c.Rooms())
			}
			if c, _ := b.root().Socket(b2.ID); slices.Contains(c.Rooms(), "joined") {
				t.Fatalf("b2 joined though not in team: %v", c.Rooms())
			}
			if err := b.root().SocketsLeave(ctx, adapter.BroadcastOptions{}, "also"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "a1 left", func() bool {
				c, _ := a.root().Socket(a1.ID)
				return !slices.Contains(c.Rooms(), "also") && slices.Contains(c.Rooms(), "joined")
			})
		})

		t.Run("ServerSideEmit", func(t *testing.T) {
			got := make(chan string, 4)
			b.root().OnServerSide("hello", func(args []json.RawMessage, ack func(any)) {
				got <- fmt.Sprintf("%s ack:%v", args, ack != nil)
			})
			b.root().OnServerSide("ping", func(args []json.RawMessage, ack func(any)) {
				go ack(map[string]any{"pong": "B", "args": args}) // an ack may come from any goroutine
			})
			if err := a.root().ServerSideEmit(ctx, "hello", "world", 42); err != nil {
				t.Fatal(err)
			}
			select {
			case s := <-got:
				if s != `["world" 42] ack:false` {
					t.Fatalf("handler got %s", s)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("B's handler was not called")
			}
			replies, err := a.root().ServerSideEmitWithAck(ctx, "ping", 1)
			if err != nil || len(replies) != 1 || string(replies[0]) != `{"args":[1],"pong":"B"}` {
				t.Fatalf("ServerSideEmitWithAck = %s, %v", replies, err)
			}
		})

		t.Run("EmitWithAck", func(t *testing.T) {
			// a1 and b1 answer; b2 is not in the room.
			for _, c := range []*siotest.Client{a1, b1} {
				go func() {
					ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					ev, err := c.Next(ctx)
					if err == nil && ev.HasAck {
						c.Ack(ev.AckID, "ack-"+c.ID, "ignored")
					}
				}()
			}
			res, err := a.root().EmitWithAck(ctx, adapter.BroadcastOptions{Rooms: []string{"team"}}, "question", 1)
			if err != nil {
				t.Fatal(err)
			}
			var acks []string
			for _, v := range res.Acks {
				acks = append(acks, string(v.JSON))
			}
			slices.Sort(acks)
			want := []string{fmt.Sprintf("%q", "ack-"+a1.ID), fmt.Sprintf("%q", "ack-"+b1.ID)}
			slices.Sort(want)
			if !slices.Equal(acks, want) || res.Clients != 2 || res.Servers != 2 || res.Reported != 2 {
				t.Fatalf("EmitWithAck = %+v (acks %v), want %v", res, acks, want)
			}
		})

		t.Run("DisconnectSockets", func(t *testing.T) {
			if err := a.root().DisconnectSockets(ctx, adapter.BroadcastOptions{Rooms: []string{"other"}}, false); err != nil {
				t.Fatal(err)
			}
			select {
			case <-b2.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("b2 was not disconnected")
			}
			waitFor(t, "B has one socket", func() bool { return b.root().Len() == 1 })
			if a.root().Len() != 1 {
				t.Fatal("a1 was disconnected")
			}
		})
	})
}

// TestClusterRequestTimeout: a third subscriber that never answers (it counts in PUBSUB NUMSUB)
// makes requests wait for the timeout, and they return what did arrive.
func TestClusterRequestTimeout(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	prefix := testPrefix(t)
	a := newNode(t, "A", rs.url(), prefix, func(c *config.Config) { c.RedisRequestTimeout = 500 * time.Millisecond })
	b := newNode(t, "B", rs.url(), prefix, nil)
	muteSubscriber(t, rs, prefix+"-request#/#")
	waitServerCount(t, 3, a, b)
	a1, b1 := dial(t, a.url), dial(t, b.url)
	join(t, a1, "r")
	join(t, b1, "r")
	ctx := context.Background()

	start := time.Now()
	got, err := a.root().FetchSockets(ctx, adapter.BroadcastOptions{Rooms: []string{"r"}})
	took := time.Since(start)
	if !errors.Is(err, adapter.ErrTimeout) || len(got) != 2 {
		t.Fatalf("FetchSockets = %d sockets, %v; want both sockets and ErrTimeout", len(got), err)
	}
	if took < 400*time.Millisecond || took > 3*time.Second {
		t.Fatalf("FetchSockets took %s with a 500ms request timeout", took)
	}
	// A shorter context wins over the request timeout.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := a.root().FetchSockets(short, adapter.BroadcastOptions{}); !errors.Is(err, adapter.ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Fatalf("FetchSockets with a 100ms context: %v after %s", err, time.Since(start))
	}

	b.root().OnServerSide("ping", func(_ []json.RawMessage, ack func(any)) { ack("pong") })
	replies, err := a.root().ServerSideEmitWithAck(ctx, "ping")
	if !errors.Is(err, adapter.ErrTimeout) || len(replies) != 1 || string(replies[0]) != `"pong"` {
		t.Fatalf("ServerSideEmitWithAck = %s, %v", replies, err)
	}

	go func() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if ev, err := b1.Next(ctx); err == nil && ev.HasAck {
			b1.Ack(ev.AckID, "b")
		}
	}()
	res, err := a.root().EmitWithAck(ctx, adapter.BroadcastOptions{Rooms: []string{"r"}}, "q")
	// a1 never answers: B's ack arrives, a1's does not, the mute node never reports.
	if !errors.Is(err, adapter.ErrTimeout) || len(res.Acks) != 1 || string(res.Acks[0].JSON) != `"b"` || res.Servers != 3 || res.Reported != 2 || res.Clients != 2 {
		t.Fatalf("EmitWithAck = %+v, %v", res, err)
	}
}

// readyz returns /readyz's status, X-Chorus-Redis header and body.
func readyz(t *testing.T, n *node) (int, string, string) {
	t.Helper()
	res, err := http.Get(n.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("X-Chorus-Redis"), string(body)
}

// TestClusterRedisRestart kills redis-server under two nodes: each keeps serving its own clients,
// reports the outage in /readyz and logs it once; the goroutine count stays flat; when redis-server
// comes back on the same port, cross-node delivery resumes within 5 s.
func TestClusterRedisRestart(t *testing.T) {
	rs := startRedis(t) // its own server: this test kills it
	nodes := cluster(t, rs.url(), 2)
	a, b := nodes[0], nodes[1]
	a1, a2, b1 := dial(t, a.url), dial(t, a.url), dial(t, b.url)
	join(t, a1, "room")
	join(t, a2, "room")
	join(t, b1, "room")
	request(t, a1, "publish", map[string]any{"room": "room", "event": "before", "data": 0})
	expect(t, a2, "before", "0")
	expect(t, b1, "before", "0")
	for _, n := range nodes {
		if code, state, body := readyz(t, n); code != 200 || state != "up" || !strings.HasPrefix(body, "ok\n") {
			t.Fatalf("node %s /readyz before the outage: %d %s %q", n.name, code, state, body)
		}
	}

	rs.stop()
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" reports redis down", func() bool {
			code, state, body := readyz(t, n)
			return code == 200 && state == "down" && strings.HasPrefix(body, "degraded\n")
		})
	}
	// Local delivery goes on: client publishes and the HTTP API, many times.
	before := runtime.NumGoroutine()
	for i := range 200 {
		publishLocal(t, a1, map[string]any{"room": "room", "event": "during", "data": i})
		if i%20 == 0 {
			apiEmit(t, a, fmt.Sprintf(`{"rooms":["room"],"event":"api","data":%d}`, i))
		}
	}
	for i := range 200 {
		ev := next(t, a2)
		if ev.Name == "api" {
			ev = next(t, a2)
		}
		if ev.Name != "during" || string(ev.Args[0]) != fmt.Sprint(i) {
			t.Fatalf("a2 during the outage: got %s %s, want during %d", ev.Name, ev.Args, i)
		}
	}
	// More broadcasts than the publish queue holds: the excess is dropped and counted, memory stays
	// bounded.
	var heapBefore, heapAfter runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heapBefore)
	for i := range 30000 {
		if err := a.root().Emit(adapter.BroadcastOptions{Rooms: []string{"nobody-here"}}, "overflow", i); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // an outage long enough for several reconnection attempts
	if after := runtime.NumGoroutine(); after > before+3 {
		t.Fatalf("goroutines grew during the outage: %d → %d", before, after)
	}
	runtime.GC()
	runtime.ReadMemStats(&heapAfter)
	if grew := int64(heapAfter.HeapAlloc) - int64(heapBefore.HeapAlloc); grew > 64<<20 {
		t.Fatalf("heap grew by %d MiB during the outage", grew>>20)
	}
	if _, _, body := readyz(t, a); !strings.Contains(body, "dropped") || strings.Contains(body, "dropped 0 ") {
		t.Fatalf("node A /readyz during the outage: %q", body)
	}

	restarted := time.Now()
	if err := rs.restart(); err != nil {
		t.Fatal(err)
	}
	// Probe from A every 50 ms until B's client hears one.
	heard := make(chan time.Duration, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			ev, err := b1.Next(ctx)
			if err != nil {
				close(heard)
				return
			}
			if ev.Name == "probe" {
				heard <- time.Since(restarted)
				return
			}
		}
	}()
	var resumed time.Duration
probe:
	for i := 0; ; i++ {
		if err := a.root().Emit(adapter.BroadcastOptions{Rooms: []string{"room"}}, "probe", i); err != nil {
			t.Fatal(err)
		}
		select {
		case d, ok := <-heard:
			if !ok {
				t.Fatal("B's client heard no probe within 10 s of redis-server's restart")
			}
			resumed = d
			break probe
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("cross-node delivery resumed %s after redis-server restarted", resumed.Round(time.Millisecond))
	if resumed > 5*time.Second {
		t.Fatalf("cross-node delivery resumed after %s, want within 5s", resumed)
	}
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" reports redis up", func() bool {
			code, state, _ := readyz(t, n)
			return code == 200 && state == "up"
		})
		if down, back := n.logs.count(`"msg":"redis unreachable`), n.logs.count(`"msg":"redis reachable again`); down != 1 || back != 1 {
			t.Errorf("node %s logged the outage %d times and the return %d times, want once each", n.name, down, back)
		}
	}
}

// TestClusterStartsWithoutRedis: a node whose Redis is not there yet serves its own clients, says
// so once, and joins the cluster when Redis appears.
func TestClusterStartsWithoutRedis(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	rs := &redisServer{port: port, dir: t.TempDir()}
	prefix := testPrefix(t)
	a := newNode(t, "A", rs.url(), prefix, nil)
	waitFor(t, "node A reports redis down", func() bool {
		code, state, _ := readyz(t, a)
		return code == 200 && state == "down"
	})
	a1, a2 := dial(t, a.url), dial(t, a.url)
	join(t, a2, "room")
	publishLocal(t, a1, map[string]any{"room": "room", "event": "local", "data": 1})
	expect(t, a2, "local", "1")
	if n, err := a.root().ServerCount(context.Background()); !errors.Is(err, adapter.ErrUnavailable) || n != 1 {
		t.Fatalf("ServerCount without Redis = %d, %v", n, err)
	}
	if got, err := a.root().FetchSockets(context.Background(), adapter.BroadcastOptions{}); !errors.Is(err, adapter.ErrUnavailable) || len(got) != 2 {
		t.Fatalf("FetchSockets without Redis = %d sockets, %v; want the 2 local ones and ErrUnavailable", len(got), err)
	}

	if err := rs.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.stop)
	b := newNode(t, "B", rs.url(), prefix, nil)
	waitServerCount(t, 2, a, b)
	b1 := dial(t, b.url)
	join(t, b1, "room")
	request(t, a1, "publish", map[string]any{"room": "room", "event": "crossed", "data": 2})
	expect(t, b1, "crossed", "2")
	if down, back := a.logs.count(`"msg":"redis unreachable`), a.logs.count(`"msg":"redis reachable again`); down != 1 || back != 1 {
		t.Errorf("node A logged the outage %d times and the return %d times, want once each", down, back)
	}
}

// api calls the HTTP API of n and decodes its JSON answer.
func api(t *testing.T, n *node, method, path, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, n.url+path, rd)
	req.Header.Set("Authorization", "Bearer secret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return res.StatusCode, out
}

// TestClusterHTTPAPI: GET /api/v1/sockets and POST /api/v1/disconnect on one node act on every
// node's sockets.
func TestClusterHTTPAPI(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, sharedRedis(t).url(), 2)
	a, b := nodes[0], nodes[1]
	a1, b1, b2, b3 := dial(t, a.url), dial(t, b.url), dial(t, b.url), dial(t, b.url)
	join(t, a1, "room")
	join(t, b1, "room")
	if c, ok := b.root().Socket(b1.ID); ok {
		c.Set("user", "bee")
	}

	ids := func(res map[string]any) []string {
		var out []string
		for _, s := range res["sockets"].([]any) {
			out = append(out, s.(map[string]any)["id"].(string))
		}
		return out
	}
	sorted := func(l ...string) []string { slices.Sort(l); return l }

	code, res := api(t, a, "GET", "/api/v1/sockets?room=room", "")
	if code != 200 || res["complete"] != true || !slices.Equal(ids(res), sorted(a1.ID, b1.ID)) {
		t.Fatalf("GET sockets?room=room: %d %v", code, res)
	}
	for _, s := range res["sockets"].([]any) {
		s := s.(map[string]any)
		wantData := map[string]any{}
		if s["id"] == b1.ID {
			wantData = map[string]any{"user": "bee"}
		}
		if !slices.Equal(toStrings(s["rooms"]), sorted("room", s["id"].(string))) || !reflectEqual(s["data"], wantData) {
			t.Errorf("socket %v", s)
		}
	}
	if code, res := api(t, b, "GET", "/api/v1/sockets?namespace=/", ""); code != 200 || len(ids(res)) != 4 {
		t.Fatalf("GET sockets (whole namespace): %d %v", code, res)
	}

	// By id on the other node, then by room, closing the connection.
	if code, res := api(t, a, "POST", "/api/v1/disconnect", fmt.Sprintf(`{"sockets":[%q]}`, b2.ID)); code != 202 || res["ok"] != true || res["complete"] != true {
		t.Fatalf("POST disconnect sockets: %d %v", code, res)
	}
	gone(t, b2)
	if code, res := api(t, a, "POST", "/api/v1/disconnect", `{"namespace":"/","rooms":["room"],"close":true}`); code != 202 {
		t.Fatalf("POST disconnect rooms: %d %v", code, res)
	}
	gone(t, a1)
	gone(t, b1)
	waitFor(t, "only b3 is left", func() bool {
		_, res := api(t, a, "GET", "/api/v1/sockets", "")
		return slices.Equal(ids(res), []string{b3.ID})
	})

	for _, tc := range []struct {
		name, method, path, body, code string
		status                         int
	}{
		{"sockets: wrong method", "POST", "/api/v1/sockets", "", "method_not_allowed", 405},
		{"sockets: unknown namespace", "GET", "/api/v1/sockets?namespace=/nope", "", "unknown_namespace", 400},
		{"sockets: empty room", "GET", "/api/v1/sockets?room=", "", "invalid_room", 400},
		{"disconnect: wrong method", "GET", "/api/v1/disconnect", "", "method_not_allowed", 405},
		{"disconnect: no target", "POST", "/api/v1/disconnect", `{"close":true}`, "invalid_target", 400},
		{"disconnect: bad json", "POST", "/api/v1/disconnect", `{"rooms":"x"}`, "bad_json", 400},
		{"disconnect: empty room", "POST", "/api/v1/disconnect", `{"rooms":[""]}`, "invalid_room", 400},
		{"disconnect: unknown namespace", "POST", "/api/v1/disconnect", `{"namespace":"/nope","rooms":["r"]}`, "unknown_namespace", 400},
	} {
		code, res := api(t, a, tc.method, tc.path, tc.body)
		if e, _ := res["error"].(map[string]any); code != tc.status || e == nil || e["code"] != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.name, code, res, tc.status, tc.code)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

func reflectEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// gone waits until c's connection has ended, failing after 5 s.
func gone(t *testing.T, c *siotest.Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("client %s is still connected", c.ID)
	}
}

// dialNsp connects c to namespace nsp of url.
func dialNsp(t *testing.T, url, nsp string) *siotest.Client {
	t.Helper()
	return siotest.Connect(t, url, nsp, nil)
}

// TestClusterNamespaces: each namespace has its own channels; a dynamic namespace joins the cluster
// when a node creates it.
func TestClusterNamespaces(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	prefix := testPrefix(t)
	withNamespaces := func(c *config.Config) {
		c.Namespaces = []config.Namespace{{Name: "/chat"}, {Name: "/tenant-*"}}
	}
	a := newNode(t, "A", rs.url(), prefix, withNamespaces)
	b := newNode(t, "B", rs.url(), prefix, withNamespaces)
	waitServerCount(t, 2, a, b)
	rootB := dial(t, b.url)
	join(t, rootB, "room")
	for _, nsp := range []string{"/chat", "/tenant-x"} {
		sender, receiver := dialNsp(t, a.url, nsp), dialNsp(t, b.url, nsp)
		join(t, receiver, "room")
		nb, _ := b.srv.Lookup(nsp)
		waitFor(t, "both nodes serve "+nsp, func() bool {
			n, err := nb.ServerCount(context.Background())
			return err == nil && n == 2
		})
		request(t, sender, "publish", map[string]any{"room": "room", "event": "inNsp", "data": nsp})
		expect(t, receiver, "inNsp", fmt.Sprintf("%q", nsp))
	}
	quiet(t, a, rootB) // "/" got none of them
}

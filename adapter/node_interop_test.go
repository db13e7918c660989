package adapter_test

// Interop with the real npm packages: a chorus node and a stock Node peer (socket.io 4.8 with
// @socket.io/redis-adapter 8.3, two socket.io-client sockets, a @socket.io/redis-emitter 5.1;
// tests/node/cluster/peer.mjs) share one Redis. chorus's cluster operations act on Node's sockets,
// Node's on chorus's, and the emitter's reach chorus.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/internal/siotest"
)

type nodePeer struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan []byte
	stderr  *logBuffer
	mu      sync.Mutex
	nextID  int
	clients map[string]string // name → socket id
}

// startNodePeer runs tests/node/cluster/peer.mjs against redisURL with prefix.
func startNodePeer(t *testing.T, redisURL, prefix string) *nodePeer {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: the interop tests run the stock Node packages (Debian: apt-get install -y nodejs npm)")
	}
	root, _ := filepath.Abs("..")
	if _, err := os.Stat(filepath.Join(root, "node_modules", "@socket.io", "redis-adapter")); err != nil {
		t.Fatal("node_modules lacks @socket.io/redis-adapter: run npm ci at the repository root")
	}
	cmd := exec.Command("node", filepath.Join(root, "tests", "node", "cluster", "peer.mjs"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "REDIS_URL="+redisURL, "PREFIX="+prefix)
	p := &nodePeer{t: t, cmd: cmd, lines: make(chan []byte, 64), stderr: &logBuffer{}}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	t.Cleanup(p.close)
	var ready struct {
		Ready   bool              `json:"ready"`
		Clients map[string]string `json:"clients"`
	}
	select {
	case line, ok := <-p.lines:
		if !ok || json.Unmarshal(line, &ready) != nil || !ready.Ready {
			t.Fatalf("Node peer did not start: %s\n%s", line, p.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Node peer not ready within 20s:\n%s", p.stderr)
	}
	p.clients = ready.Clients
	return p
}

func (p *nodePeer) close() {
	p.stdin.Close() // the peer exits when its stdin closes
	done := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	for range p.lines {
	}
	if p.t.Failed() {
		p.t.Logf("Node peer stderr:\n%s", p.stderr)
	}
}

// do runs one operation on the peer and returns its result.
func (p *nodePeer) do(op string, args map[string]any) (json.RawMessage, error) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	req := map[string]any{"id": p.nextID, "op": op}
	for k, v := range args {
		req[k] = v
	}
	b, _ := json.Marshal(req)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("peer %s: %v\n%s", op, err, p.stderr)
	}
	timeout := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("peer exited during %s:\n%s", op, p.stderr)
			}
			var res struct {
				ID     int             `json:"id"`
				Result json.RawMessage `json:"result"`
				Error  *string         `json:"error"`
			}
			if json.Unmarshal(line, &res) != nil || res.ID != p.nextID {
				continue
			}
			if res.Error != nil {
				return nil, errors.New(*res.Error)
			}
			return res.Result, nil
		case <-timeout:
			p.t.Fatalf("peer %s: no answer within 15s\n%s", op, p.stderr)
		}
	}
}

// must runs op and decodes its result into v (if not nil).
func (p *nodePeer) must(op string, args map[string]any, v any) {
	p.t.Helper()
	res, err := p.do(op, args)
	if err != nil {
		p.t.Fatalf("peer %s(%v): %v", op, args, err)
	}
	if v != nil {
		if err := json.Unmarshal(res, v); err != nil {
			p.t.Fatalf("peer %s: result %s: %v", op, res, err)
		}
	}
}

type peerEvent struct {
	Event string            `json:"event"`
	Args  []json.RawMessage `json:"args"`
}

type peerState struct {
	Clients map[string]struct {
		ID           string      `json:"id"`
		Events       []peerEvent `json:"events"`
		Disconnected *string     `json:"disconnected"`
		Rooms        []string    `json:"rooms"`
	} `json:"clients"`
	ServerSide []peerEvent `json:"serverSide"`
}

func (p *nodePeer) state() peerState {
	var st peerState
	p.must("state", nil, &st)
	return st
}

// waitEvent waits until the peer's client got event, and returns its arguments.
func (p *nodePeer) waitEvent(client, event string) []json.RawMessage {
	p.t.Helper()
	var args []json.RawMessage
	waitFor(p.t, fmt.Sprintf("Node client %s gets %q", client, event), func() bool {
		for _, e := range p.state().Clients[client].Events {
			if e.Event == event {
				args = e.Args
				return true
			}
		}
		return false
	})
	return args
}

// nextEvent returns c's next event named name, skipping others; it fails after 5 s.
func nextEvent(t *testing.T, c *siotest.Client, name string) siotest.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("client %s: no %q: %v", c.ID, name, err)
		}
		if ev.Name == name {
			return ev
		}
	}
}

func TestNodeInterop(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	prefix := testPrefix(t)
	a := newNode(t, "A", rs.url(), prefix, nil)
	peer := startNodePeer(t, rs.url(), prefix)
	waitServerCount(t, 2, a)
	n1 := peer.clients["n1"]
	a1, a2 := dial(t, a.url), dial(t, a.url)
	join(t, a1, "team")
	join(t, a2, "other")
	if c, ok := a.root().Socket(a1.ID); ok {
		c.Set("name", "a1")
	}
	ctx := context.Background()
	chorusSSE := make(chan string, 8)
	a.root().OnServerSide("hello", func(args []json.RawMessage, ack func(any)) { chorusSSE <- fmt.Sprintf("hello %s", args) })
	a.root().OnServerSide("emitterHello", func(args []json.RawMessage, ack func(any)) {
		chorusSSE <- fmt.Sprintf("emitterHello %s %v", args, ack != nil)
	})
	a.root().OnServerSide("ping", func(args []json.RawMessage, ack func(any)) { ack(map[string]any{"pong": "chorus", "args": args}) })
	sse := func(want string) {
		t.Helper()
		select {
		case got := <-chorusSSE:
			if got != want {
				t.Fatalf("chorus server-side handler got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("chorus server-side handler not called (want %q)", want)
		}
	}

	// chorus → Node.
	t.Run("chorus ServerCount", func(t *testing.T) {
		if n, err := a.root().ServerCount(ctx); n != 2 || err != nil {
			t.Fatalf("ServerCount = %d, %v", n, err)
		}
	})
	t.Run("chorus broadcast to a room reaches a Node client, binary included", func(t *testing.T) {
		raw := sio.Raw{JSON: json.RawMessage(`{"bin":{"_placeholder":true,"num":0},"n":1}`), Attachments: [][]byte{{0xde, 0xad, 0xbe, 0xef}}}
		if err := a.root().Emit(adapter.BroadcastOptions{Rooms: []string{"team"}}, "fromChorus", raw, "x"); err != nil {
			t.Fatal(err)
		}
		args := peer.waitEvent("n1", "fromChorus")
		if len(args) != 2 || string(args[0]) != `{"bin":{"$bin":"deadbeef"},"n":1}` || string(args[1]) != `"x"` {
			t.Fatalf("Node client got %s", args)
		}
		request(t, a1, "publish", map[string]any{"room": "team", "event": "published", "data": "hi"})
		if args := peer.waitEvent("n1", "published"); string(args[0]) != `"hi"` {
			t.Fatalf("Node client got publish %s", args)
		}
	})
	t.Run("chorus FetchSockets sees Node's sockets", func(t *testing.T) {
		got, err := a.root().FetchSockets(ctx, adapter.BroadcastOptions{Rooms: []string{"team"}})
		if err != nil {
			t.Fatal(err)
		}
		var node *adapter.SocketInfo
		for i := range got {
			if got[i].ID == n1 {
				node = &got[i]
			}
		}
		if len(got) != 2 || node == nil || !slices.Contains(node.Rooms, "team") || string(node.Data) != `{"node":true,"name":"n1"}` {
			t.Fatalf("FetchSockets(team) = %+v", got)
		}
		if !bytes.Contains(node.Handshake, []byte(`"auth":{"name":"n1","rooms":["team"]}`)) {
			t.Fatalf("handshake %s", node.Handshake)
		}
	})
	t.Run("chorus SocketsJoin and SocketsLeave act on Node's sockets", func(t *testing.T) {
		if err := a.root().SocketsJoin(ctx, adapter.BroadcastOptions{Rooms: []string{"team"}}, "joinedByChorus"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "n1 joined", func() bool { return slices.Contains(peer.state().Clients["n1"].Rooms, "joinedByChorus") })
		if err := a.root().SocketsLeave(ctx, adapter.BroadcastOptions{}, "joinedByChorus"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "n1 left", func() bool { return !slices.Contains(peer.state().Clients["n1"].Rooms, "joinedByChorus") })
	})
	t.Run("chorus ServerSideEmit reaches Node, with acks", func(t *testing.T) {
		if err := a.root().ServerSideEmit(ctx, "hello", "from chorus", 1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "Node's hello handler", func() bool {
			ss := peer.state().ServerSide
			return len(ss) == 1 && ss[0].Event == "hello" && string(ss[0].Args[0]) == `"from chorus"`
		})
		replies, err := a.root().ServerSideEmitWithAck(ctx, "ping", 7)
		if err != nil || len(replies) != 1 || string(replies[0]) != `{"pong":"node","arg":7}` {
			t.Fatalf("ServerSideEmitWithAck = %s, %v", replies, err)
		}
	})
	t.Run("chorus EmitWithAck collects Node clients' acks", func(t *testing.T) {
		go func() {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			for {
				ev, err := a1.Next(ctx)
				if err != nil {
					return
				}
				if ev.Name == "question" && ev.HasAck {
					a1.Ack(ev.AckID, "ack-chorus")
					return
				}
			}
		}()
		res, err := a.root().EmitWithAck(ctx, adapter.BroadcastOptions{Rooms: []string{"team"}}, "question", 1)
		var acks []string
		for _, v := range res.Acks {
			acks = append(acks, string(v.JSON))
		}
		slices.Sort(acks)
		if err != nil || !slices.Equal(acks, []string{`"ack-chorus"`, `"ack-node-n1"`}) || res.Clients != 2 || res.Reported != 2 {
			t.Fatalf("EmitWithAck = %+v %v, %v", res, acks, err)
		}
	})

	// Node → chorus.
	t.Run("Node broadcast to a room reaches a chorus client, binary included", func(t *testing.T) {
		peer.must("emit", map[string]any{"rooms": []string{"team"}, "event": "fromNode", "args": []any{map[string]any{"$bin": "0102ff"}, map[string]any{"k": []any{1, "two", nil}}}}, nil)
		ev := nextEvent(t, a1, "fromNode")
		if len(ev.Args) != 2 || string(ev.Args[0]) != `{"_placeholder":true,"num":0}` || !bytes.Equal(ev.Attachments[0], []byte{1, 2, 0xff}) || string(ev.Args[1]) != `{"k":[1,"two",null]}` {
			t.Fatalf("chorus client got %s %s %v", ev.Name, ev.Args, ev.Attachments)
		}
		peer.must("emit", map[string]any{"except": []string{"team"}, "event": "notTeam", "args": []any{1}}, nil)
		nextEvent(t, a2, "notTeam")
	})
	t.Run("Node fetchSockets sees chorus's sockets", func(t *testing.T) {
		var got []struct {
			ID    string            `json:"id"`
			Rooms []string          `json:"rooms"`
			Data  map[string]any    `json:"data"`
			Query map[string]string `json:"query"`
		}
		peer.must("fetchSockets", map[string]any{"rooms": []string{"team"}}, &got)
		var found bool
		for _, s := range got {
			if s.ID == a1.ID {
				found = slices.Contains(s.Rooms, "team") && s.Data["name"] == "a1" && s.Query["EIO"] == "4"
			}
		}
		if len(got) != 2 || !found {
			t.Fatalf("Node fetchSockets(team) = %+v", got)
		}
	})
	t.Run("Node socketsJoin and socketsLeave act on chorus's sockets", func(t *testing.T) {
		peer.must("socketsJoin", map[string]any{"rooms": []string{"team"}, "join": []string{"joinedByNode"}}, nil)
		c, _ := a.root().Socket(a1.ID)
		waitFor(t, "a1 joined", func() bool { return slices.Contains(c.Rooms(), "joinedByNode") })
		peer.must("socketsLeave", map[string]any{"leave": []string{"joinedByNode"}}, nil)
		waitFor(t, "a1 left", func() bool { return !slices.Contains(c.Rooms(), "joinedByNode") })
	})
	t.Run("Node serverSideEmit reaches chorus, with acks", func(t *testing.T) {
		peer.must("serverSideEmit", map[string]any{"event": "hello", "args": []any{"from node"}}, nil)
		sse(`hello ["from node"]`)
		var replies []json.RawMessage
		peer.must("serverSideEmitWithAck", map[string]any{"event": "ping", "args": []any{3}}, &replies)
		if len(replies) != 1 || string(replies[0]) != `{"args":[3],"pong":"chorus"}` {
			t.Fatalf("Node serverSideEmitWithAck = %s", replies)
		}
	})
	t.Run("Node emitWithAck collects chorus clients' acks", func(t *testing.T) {
		go func() {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			for {
				ev, err := a2.Next(ctx)
				if err != nil {
					return
				}
				if ev.Name == "nodeQuestion" && ev.HasAck {
					a2.Ack(ev.AckID, map[string]any{"from": "a2"})
					return
				}
			}
		}()
		var acks []json.RawMessage
		peer.must("emitWithAck", map[string]any{"rooms": []string{"other"}, "event": "nodeQuestion", "timeout": 3000}, &acks)
		got := make([]string, 0, len(acks))
		for _, a := range acks {
			got = append(got, string(a))
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{`"ack-node-n2"`, `{"from":"a2"}`}) {
			t.Fatalf("Node emitWithAck = %v", got)
		}
		var count int
		peer.must("serverCount", nil, &count)
		if count != 2 {
			t.Fatalf("Node serverCount = %d", count)
		}
	})

	// The emitter → chorus.
	t.Run("emitter", func(t *testing.T) {
		peer.must("emitterEmit", map[string]any{"rooms": []string{"team"}, "event": "emitted", "args": []any{map[string]any{"$bin": "00ff"}}}, nil)
		if ev := nextEvent(t, a1, "emitted"); len(ev.Attachments) != 1 || !bytes.Equal(ev.Attachments[0], []byte{0, 0xff}) {
			t.Fatalf("emitter to(room).emit: %s %v", ev.Args, ev.Attachments)
		}
		peer.must("emitterEmit", map[string]any{"event": "emittedToAll", "args": []any{"all"}}, nil)
		for _, c := range []*siotest.Client{a1, a2} {
			if ev := nextEvent(t, c, "emittedToAll"); string(ev.Args[0]) != `"all"` {
				t.Fatalf("emitter emit: %s", ev.Args)
			}
		}
		peer.must("emitterSocketsJoin", map[string]any{"rooms": []string{"other"}, "join": []string{"byEmitter"}}, nil)
		c2, _ := a.root().Socket(a2.ID)
		waitFor(t, "a2 joined byEmitter", func() bool { return slices.Contains(c2.Rooms(), "byEmitter") })
		peer.must("emitterSocketsLeave", map[string]any{"rooms": []string{"other"}, "leave": []string{"byEmitter"}}, nil)
		waitFor(t, "a2 left byEmitter", func() bool { return !slices.Contains(c2.Rooms(), "byEmitter") })
		peer.must("emitterServerSideEmit", map[string]any{"event": "emitterHello", "args": []any{1, "two"}}, nil)
		sse(`emitterHello [1 "two"] false`)
		peer.must("emitterDisconnectSockets", map[string]any{"rooms": []string{"other"}, "close": false}, nil)
		select {
		case <-a2.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("emitter disconnectSockets did not disconnect a2")
		}
		waitFor(t, "n2 disconnected by the emitter", func() bool { return peer.state().Clients["n2"].Disconnected != nil })
	})

	t.Run("chorus DisconnectSockets disconnects Node's sockets, Node's disconnects chorus's", func(t *testing.T) {
		if err := a.root().DisconnectSockets(ctx, adapter.BroadcastOptions{Rooms: []string{"team"}, Except: []string{a1.ID}}, true); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "n1 disconnected", func() bool { return peer.state().Clients["n1"].Disconnected != nil })
		if a.root().Len() != 1 {
			t.Fatalf("a1 was disconnected too")
		}
		peer.must("disconnectSockets", map[string]any{"rooms": []string{"team"}, "close": true}, nil)
		select {
		case <-a1.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Node's disconnectSockets did not disconnect a1")
		}
	})
}

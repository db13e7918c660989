package sio_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/internal/siotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start serves a sio.Server on 127.0.0.1; setup configures "/" before any client can connect.
func start(t *testing.T, setup func(s *sio.Server, root *sio.Namespace)) (*sio.Server, string) {
	t.Helper()
	// Default heartbeats: these tests are about handlers and broadcasts, and a 1 s ping timeout closed
	// healthy clients on a loaded 2-core machine.
	s := sio.NewServer(sio.Options{})
	setup(s, s.Namespace("/"))
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close()
		ts.Close()
	})
	return s, ts.URL
}

func dial(t *testing.T, url, nsp string) *siotest.Client {
	t.Helper()
	return siotest.Connect(t, url, nsp, nil)
}

type echoReq struct {
	N int `json:"n"`
}

type ackError struct {
	OK    bool `json:"ok"`
	Error struct {
		Code string `json:"code"`
	} `json:"error"`
}

func decodeAck[T any](t *testing.T, ev siotest.Event) T {
	t.Helper()
	var v T
	if len(ev.Args) != 1 {
		t.Fatalf("ack has %d arguments, want 1: %s", len(ev.Args), ev.Args)
	}
	if err := json.Unmarshal(ev.Args[0], &v); err != nil {
		t.Fatalf("ack %s: %v", ev.Args[0], err)
	}
	return v
}

// The library sent CONNECT before registering the socket, so an event sent right after it could be
// refused ("invalid state") on a multi-core machine. Every client here emits the moment it is connected.
func TestEventRightAfterConnect(t *testing.T) {
	t.Parallel()
	_, url := start(t, func(_ *sio.Server, root *sio.Namespace) {
		sio.Handle(root, "echo", func(ctx context.Context, c *sio.Conn, req echoReq) (echoReq, error) { return req, nil })
	})
	const clients = 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			c, err := siotest.Dial(ctx, url, "/", nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			ev, err := c.EmitWithAck(ctx, "echo", echoReq{N: i})
			if err != nil {
				errs <- err
				return
			}
			var got echoReq
			if err := json.Unmarshal(ev.Args[0], &got); err != nil || got.N != i {
				errs <- errors.New("wrong echo: " + string(ev.Args[0]))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A panicking handler is answered with an internal error; the socket, the process and every other
// socket carry on.
func TestHandlerPanicIsRecovered(t *testing.T) {
	t.Parallel()
	_, url := start(t, func(_ *sio.Server, root *sio.Namespace) {
		sio.Handle(root, "boom", func(ctx context.Context, c *sio.Conn, req echoReq) (echoReq, error) { panic("boom") })
		sio.Handle(root, "echo", func(ctx context.Context, c *sio.Conn, req echoReq) (echoReq, error) { return req, nil })
	})
	a, b := dial(t, url, "/"), dial(t, url, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := a.EmitWithAck(ctx, "boom", echoReq{N: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeAck[ackError](t, ev); got.OK || got.Error.Code != sio.CodeInternal {
		t.Fatalf("panic ack = %+v, want code %s", got, sio.CodeInternal)
	}
	for _, c := range []*siotest.Client{a, b} {
		ev, err := c.EmitWithAck(ctx, "echo", echoReq{N: 7})
		if err != nil {
			t.Fatalf("after the panic: %v", err)
		}
		if got := decodeAck[echoReq](t, ev); got.N != 7 {
			t.Fatalf("echo after panic = %+v", got)
		}
	}
}

// The library queued a client's ack behind the handler waiting for it, so the handler timed out.
// Here the handler asks the client a question and must get the answer at once.
func TestHandlerCanWaitForClientAck(t *testing.T) {
	t.Parallel()
	_, url := start(t, func(_ *sio.Server, root *sio.Namespace) {
		sio.Handle(root, "ask", func(ctx context.Context, c *sio.Conn, _ echoReq) (json.RawMessage, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			m, err := c.EmitWithAck(ctx, "question", "what is six times seven?")
			if err != nil {
				return nil, err
			}
			return m.Args[0], nil
		})
	})
	c := dial(t, url, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		ev, err := c.Next(ctx)
		if err == nil && ev.Name == "question" && ev.HasAck {
			c.Ack(ev.AckID, 42)
		}
	}()
	begin := time.Now()
	ev, err := c.EmitWithAck(ctx, "ask", echoReq{})
	if err != nil {
		t.Fatal(err)
	}
	if string(ev.Args[0]) != "42" {
		t.Fatalf("answer = %s, want 42", ev.Args[0])
	}
	if d := time.Since(begin); d > 4*time.Second {
		t.Fatalf("the handler waited %v: the client's ack was held behind it", d)
	}
}

// Events from one socket are handled one at a time, in the order sent, even when handlers take time.
func TestHandlersRunInOrderPerSocket(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []int
	inFlight := 0
	overlap := false
	_, url := start(t, func(_ *sio.Server, root *sio.Namespace) {
		sio.Handle(root, "seq", func(ctx context.Context, c *sio.Conn, req echoReq) (echoReq, error) {
			mu.Lock()
			inFlight++
			overlap = overlap || inFlight > 1
			mu.Unlock()
			if req.N%100 == 0 {
				time.Sleep(time.Millisecond) // a slow handler must not let later events overtake it
			}
			mu.Lock()
			seen = append(seen, req.N)
			inFlight--
			mu.Unlock()
			return req, nil
		})
	})
	c := dial(t, url, "/")
	const n = 2000
	for i := range n {
		if err := c.Emit("seq", echoReq{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.EmitWithAck(ctx, "seq", echoReq{N: n}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Error("two handlers of one socket ran at the same time")
	}
	if len(seen) != n+1 {
		t.Fatalf("handled %d events, want %d", len(seen), n+1)
	}
	for i, v := range seen {
		if v != i {
			t.Fatalf("event %d handled at position %d", v, i)
		}
	}
}

// Broadcasts reach every selected socket, skip the excepted ones, and keep their order.
func TestBroadcastSelectsAndKeepsOrder(t *testing.T) {
	t.Parallel()
	s, url := start(t, func(_ *sio.Server, root *sio.Namespace) {
		sio.Handle(root, "join", func(ctx context.Context, c *sio.Conn, room string) (bool, error) {
			c.Join(room)
			return true, nil
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in, out := dial(t, url, "/"), dial(t, url, "/")
	if _, err := in.EmitWithAck(ctx, "join", "r"); err != nil {
		t.Fatal(err)
	}
	root := s.Namespace("/")
	const n = 3000
	for i := range n {
		if err := root.Emit(adapter.BroadcastOptions{Rooms: []string{"r"}}, "m", i); err != nil {
			t.Fatal(err)
		}
	}
	root.Emit(adapter.BroadcastOptions{Except: []string{"r"}}, "only-out", 1)
	for i := range n {
		ev, err := in.Next(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", i, err)
		}
		if ev.Name != "m" || string(ev.Args[0]) != itoa(i) {
			t.Fatalf("message %d = %s %s", i, ev.Name, ev.Args)
		}
	}
	ev, err := out.Next(ctx)
	if err != nil || ev.Name != "only-out" {
		t.Fatalf("the socket outside the room got %+v, %v; want only-out", ev, err)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// Drain closes sessions in batches spread over the window, not all at once, and refuses new ones.
func TestDrainSpreadsDisconnects(t *testing.T) {
	t.Parallel()
	s, url := start(t, func(*sio.Server, *sio.Namespace) {})
	const clients = 40
	cs := make([]*siotest.Client, clients)
	for i := range cs {
		cs[i] = dial(t, url, "/")
	}
	window := 1200 * time.Millisecond
	begin := time.Now()
	closedAt := make([]time.Duration, clients)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-c.Done():
				closedAt[i] = time.Since(begin)
			case <-time.After(10 * time.Second):
				closedAt[i] = -1
			}
		}()
	}
	go s.Drain(context.Background(), window)
	// While draining, a new client is refused.
	waitFor(t, s.Draining)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := siotest.Dial(ctx, url, "/", nil); err == nil {
		c.Close()
		t.Error("a new client connected while draining")
	}
	wg.Wait()
	first, last := closedAt[0], closedAt[0]
	for i, d := range closedAt {
		if d < 0 {
			t.Fatalf("client %d was not closed", i)
		}
		first, last = min(first, d), max(last, d)
	}
	if last-first < window/3 {
		t.Errorf("disconnects spread over %v, want at least %v of the %v window", last-first, window/3, window)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countingAdapters wraps the memory adapter and checks that a namespace name never has two live
// adapters at once (with Redis, the new one's subscriptions would be undone by the old one's
// unsubscribe).
type countingAdapters struct {
	mu              sync.Mutex
	live            map[string]bool
	created, closed int
	overlap         []string
}

type countedAdapter struct {
	adapter.Adapter
	f    *countingAdapters
	name string
}

func (a *countedAdapter) Close() error {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	delete(a.f.live, a.name)
	a.f.closed++
	return a.Adapter.Close()
}

func (f *countingAdapters) factory(nsp adapter.Namespace) adapter.Adapter {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live[nsp.Name()] {
		f.overlap = append(f.overlap, nsp.Name())
	}
	f.live[nsp.Name()] = true
	f.created++
	return &countedAdapter{Adapter: adapter.NewMemory(nsp), f: f, name: nsp.Name()}
}

// Dynamic namespaces exist only while something holds them: a refused connect creates none (no
// adapter), an admitted one creates it, and it is removed with its adapter when the last socket
// leaves; sockets coming and going at once on the same names never make two adapters live for one
// name, and every adapter made is closed.
func TestDynamicNamespaceLifecycle(t *testing.T) {
	t.Parallel()
	f := &countingAdapters{live: make(map[string]bool)}
	s := sio.NewServer(sio.Options{Adapter: f.factory})
	s.NamespaceFunc(func(name string) bool { return len(name) > 5 && name[:5] == "/dyn-" }, func(n *sio.Namespace) {
		n.Use(func(_ context.Context, _ *sio.Handshake, auth json.RawMessage) error {
			if string(auth) == `{"deny":true}` {
				return sio.Errorf("denied", "no")
			}
			return nil
		})
		sio.Handle(n, "echo", func(ctx context.Context, c *sio.Conn, req echoReq) (echoReq, error) { return req, nil })
	})
	ts := httptest.NewServer(s)
	defer func() {
		s.Close()
		ts.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := siotest.Dial(ctx, ts.URL, "/dyn-refused", map[string]bool{"deny": true}); err == nil {
		t.Fatal("the middleware's refusal was ignored")
	}
	if _, ok := s.Lookup("/dyn-refused"); ok || f.created != 1 { // "/" only
		t.Fatalf("a refused connect made a namespace (created %d adapters)", f.created)
	}

	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			for round := range 5 {
				nsp := []string{"/dyn-a", "/dyn-b"}[(i+round)%2]
				c, err := siotest.Dial(ctx, ts.URL, nsp, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := c.EmitWithAck(ctx, "echo", echoReq{N: i}); err != nil {
					t.Error(err)
				}
				c.Close()
				<-c.Done()
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, a := s.Lookup("/dyn-a")
		_, b := s.Lookup("/dyn-b")
		if !a && !b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dynamic namespaces still there after their last socket left")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.overlap) > 0 {
		t.Errorf("two live adapters at once for %q", f.overlap)
	}
	if f.created-1 != f.closed { // "/" stays
		t.Errorf("%d dynamic adapters created, %d closed", f.created-1, f.closed)
	}
	t.Logf("%d dynamic adapters made and closed", f.closed)
}

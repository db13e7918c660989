package engine

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// closeSlack is how late past its deadline a close may come on a busy machine.
const closeSlack = 2 * time.Second

// LIBRARY-DEFECTS #3: the library wrote PING before arming the timeout, so a pong that came back
// fast enough was lost and the client was closed with "ping timeout" although it answered every
// ping at once (17 in about 15 200 pings). Clients that answer at once must never be closed: 16
// WebSocket and 4 polling sessions, side by side, answer 20 pings each with no close at all.
//
// The timeout is shorter than the interval on purpose: a lost pong then always ends in a timeout
// (with a longer timeout the next ping re-arms the stale timer and the next pong hides the loss;
// checked by delaying the arming 20 µs in ping(), which this test then fails at once). It is not
// smaller because on a loaded 2-core machine under -race the ping round trip itself reaches 100 ms
// (measured p99 72 ms, max 123 ms with three busy loops beside the test; 30 ms failed every run),
// and with other test suites running beside it (load average 12) 150 ms still failed now and then.
func TestNoSpuriousPingTimeout(t *testing.T) {
	const (
		interval = 400 * time.Millisecond
		timeout  = 300 * time.Millisecond
		pings    = 20 // at least 19 × 400 ms ≈ 8 s
	)
	// Each client runs on its own goroutine and reports the pings it answered; it stops at the
	// first problem, which it returns.
	tests := []struct {
		name    string
		clients int
		run     func(ts *testServer, r chan<- *recorder) (int, error)
	}{
		{name: "websocket", clients: 16, run: func(ts *testServer, rc chan<- *recorder) (int, error) {
			c, err := ts.dialWS("EIO=4&transport=websocket", nil)
			if err != nil {
				return 0, err
			}
			data, _, err := c.read()
			if err != nil || !strings.HasPrefix(string(data), "0{") {
				return 0, fmt.Errorf("open packet: %q, %v", data, err)
			}
			var h handshakeInfo
			json.Unmarshal(data[1:], &h)
			rc <- ts.rec(h.SID)
			n := 0
			for n < pings {
				data, op, err := c.read()
				if err != nil {
					return n, err
				}
				if op != ws.OpText || string(data) != "2" {
					return n, fmt.Errorf("unexpected frame %v %q", op, data)
				}
				n++
				if err := c.write(ws.OpText, []byte("3")); err != nil {
					return n, err
				}
			}
			return n, nil
		}},
		{name: "polling", clients: 4, run: func(ts *testServer, rc chan<- *recorder) (int, error) {
			res, err := ts.do(http.MethodGet, ts.url("EIO=4&transport=polling"), nil, nil)
			if err != nil || res.status != http.StatusOK || !strings.HasPrefix(res.body, "0{") {
				return 0, fmt.Errorf("handshake: %+v, %v", res, err)
			}
			var h handshakeInfo
			json.Unmarshal([]byte(res.body[1:]), &h)
			r := ts.rec(h.SID)
			rc <- r
			pc := &pollClient{ts: ts, sid: h.SID, rec: r}
			n := 0
			for n < pings {
				res, err := pc.get()
				if err != nil || res.status != http.StatusOK {
					return n, fmt.Errorf("GET: %d %q, %v", res.status, res.body, err)
				}
				for _, p := range splitPayload(res.body) {
					if p != "2" {
						return n, fmt.Errorf("unexpected packet %q", p)
					}
					n++
					if res, err := pc.post("3"); err != nil || res.status != http.StatusOK {
						return n, fmt.Errorf("pong POST: %d %q, %v", res.status, res.body, err)
					}
				}
			}
			return n, nil
		}},
	}
	// All clients run at once against one server, so the test takes the time of one of them.
	ts := newTestServer(t, Options{PingInterval: interval, PingTimeout: timeout})
	total := 0
	for _, tt := range tests {
		total += tt.clients
	}
	recs := make(chan *recorder, total)
	start := time.Now()
	var wg sync.WaitGroup
	for _, tt := range tests {
		for i := range tt.clients {
			wg.Go(func() {
				n, err := tt.run(ts, recs)
				if err != nil || n < pings {
					t.Errorf("%s client %d: %d pings answered, then %v", tt.name, i, n, err)
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(recs)
	for r := range recs {
		if got := r.closeReasons(); len(got) != 0 {
			t.Errorf("%s session %s answering every ping at once was closed: %q", r.conn.Transport(), r.conn.ID(), got)
		}
	}
	// The server waits PingInterval after each pong: n pings cannot take less than n-1 intervals.
	if min := (pings - 1) * interval; elapsed < min {
		t.Errorf("%d pings in %v: the server pings faster than every %v", pings, elapsed, interval)
	}
	if ts.Len() != total {
		t.Errorf("Len() = %d, want all %d sessions still open", ts.Len(), total)
	}
}

// A client that does not answer pings is closed with "ping timeout" once PingInterval+PingTimeout
// have passed (and not before). A polling client that stops polling cannot receive the ping, so it
// is closed the same way, with the same reason (as Node's engine.io does).
func TestPingTimeout(t *testing.T) {
	const interval, timeout = 100 * time.Millisecond, 150 * time.Millisecond
	tests := []struct {
		name string
		// run behaves as the silent client; it returns once the client has seen the session end.
		run func(t *testing.T, ts *testServer) *recorder
	}{
		{name: "websocket, never answers", run: func(t *testing.T, ts *testServer) *recorder {
			c, _, r := ts.wsHandshake()
			pings := 0
			for {
				data, _, err := c.read()
				if err != nil {
					break // closed (with a close frame or without)
				}
				if string(data) != "2" {
					t.Fatalf("unexpected frame %q", data)
				}
				pings++
			}
			if pings != 1 {
				t.Errorf("the server sent %d pings before timing out, want 1", pings)
			}
			return r
		}},
		{name: "polling, polls but never answers", run: func(t *testing.T, ts *testServer) *recorder {
			pc := ts.pollHandshake()
			var got []string
			for {
				res := pc.mustGet()
				if res.status != http.StatusOK {
					checkError(t, res, http.StatusBadRequest, codeUnknownSID)
					break
				}
				got = append(got, splitPayload(res.body)...)
				if slices.Contains(got, "1") {
					break
				}
			}
			if len(got) > 0 && !slices.Equal(got, []string{"2", "1"}) {
				t.Errorf("the silent polling client got %q, want a ping then a close packet", got)
			}
			return pc.rec
		}},
		{name: "polling, stops polling", run: func(t *testing.T, ts *testServer) *recorder {
			pc := ts.pollHandshake()
			pc.rec.waitClosed(t, interval+timeout+closeSlack)
			checkError(t, pc.mustGet(), http.StatusBadRequest, codeUnknownSID)
			return pc.rec
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, Options{PingInterval: interval, PingTimeout: timeout})
			r := tt.run(t, ts)
			if reason := r.waitClosed(t, interval+timeout+closeSlack); reason != "ping timeout" {
				t.Errorf("closed with reason %q, want \"ping timeout\"", reason)
			}
			r.mu.Lock()
			after := r.closedAt.Sub(r.opened)
			r.mu.Unlock()
			if after < interval+timeout || after > interval+timeout+closeSlack {
				t.Errorf("closed %v after opening, want between %v and %v", after, interval+timeout, interval+timeout+closeSlack)
			}
			eventually(t, waitTimeout, func() bool { return ts.Len() == 0 }, "the session to be removed")
		})
	}
}

// Conn.Close writes what was queued before it, then the close: a close packet over polling (with the
// next poll when packets were waiting: as Node does, and so that the stock client, which handles a
// payload's packets a tick after a close packet in the same payload, does not drop them), a close
// frame over WebSocket. Nothing is lost, nothing comes after.
func TestServerClose(t *testing.T) {
	queue := func(c *Conn, n int) []string {
		var want []string
		for i := range n {
			c.Send(Packet{Data: []byte(fmt.Sprintf("q%d", i))})
			want = append(want, fmt.Sprintf("4q%d", i))
		}
		return want
	}
	// pollUntilClose polls until the close packet and returns everything received.
	pollUntilClose := func(t *testing.T, pc *pollClient, first <-chan getResult) []string {
		t.Helper()
		var got []string
		for i := 0; !slices.Contains(got, "1"); i++ {
			var res response
			if i == 0 && first != nil {
				res = awaitGet(t, first)
			} else {
				res = pc.mustGet()
			}
			if res.status != http.StatusOK {
				t.Fatalf("GET %d before the close packet: status %d %q (have %q)", i, res.status, res.body, got)
			}
			got = append(got, splitPayload(res.body)...)
		}
		return got
	}
	tests := []struct {
		name string
		run  func(t *testing.T, ts *testServer) *recorder
	}{
		{name: "polling, GET waiting, queue sent with the close", run: func(t *testing.T, ts *testServer) *recorder {
			pc := ts.pollHandshake()
			get := pc.startGet()
			eventually(t, waitTimeout, pc.pollWaiting, "the GET to wait")
			want := append(queue(pc.rec.conn, 10), "1")
			pc.rec.conn.Close("bye")
			if got := pollUntilClose(t, pc, get); !slices.Equal(got, want) {
				t.Errorf("got %q, want %q", got, want)
			}
			return pc.rec
		}},
		{name: "polling, GET waiting, nothing queued", run: func(t *testing.T, ts *testServer) *recorder {
			pc := ts.pollHandshake()
			get := pc.startGet()
			eventually(t, waitTimeout, pc.pollWaiting, "the GET to wait")
			pc.rec.conn.Close("bye")
			if res := awaitGet(t, get); res.status != http.StatusOK || res.body != "1" {
				t.Errorf("waiting GET got %d %q, want 200 \"1\"", res.status, res.body)
			}
			return pc.rec
		}},
		{name: "polling, no GET waiting", run: func(t *testing.T, ts *testServer) *recorder {
			pc := ts.pollHandshake()
			want := append(queue(pc.rec.conn, 10), "1")
			pc.rec.conn.Close("bye")
			if pc.rec.conn.Send(Packet{Data: []byte("too late")}) {
				t.Error("Send after Close reported success")
			}
			if got := pollUntilClose(t, pc, nil); !slices.Equal(got, want) {
				t.Errorf("the next GETs got %q, want %q", got, want)
			}
			return pc.rec
		}},
		{name: "websocket", run: func(t *testing.T, ts *testServer) *recorder {
			c, _, r := ts.wsHandshake()
			want := queue(r.conn, 200)
			r.conn.Close("bye")
			for i, w := range want {
				data, _, err := c.read()
				if err != nil {
					t.Fatalf("frame %d: %v; want %q before the close", i, err, w)
				}
				if string(data) != w {
					t.Fatalf("frame %d = %q, want %q", i, data, w)
				}
			}
			code, err := c.readClose()
			if err != nil || code != ws.StatusNormalClosure {
				t.Errorf("after the queue: close code %d err %v, want a normal closure", code, err)
			}
			return r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, Options{})
			r := tt.run(t, ts)
			if reason := r.waitClosed(t, waitTimeout); reason != "bye" {
				t.Errorf("OnClose(%q), want the reason given to Close", reason)
			}
			eventually(t, waitTimeout, func() bool { return ts.Len() == 0 }, "the session to be removed")
			if r.conn.Transport() == Polling {
				checkError(t, ts.mustDo(http.MethodGet, ts.url("EIO=4&transport=polling&sid="+r.conn.ID()), nil, nil), http.StatusBadRequest, codeUnknownSID)
			}
		})
	}
}

// Server.Close closes every session, whatever its transport, with "server shutting down".
func TestServerCloseAll(t *testing.T) {
	ts := newTestServer(t, Options{})
	pc := ts.pollHandshake()
	get := pc.startGet()
	idle := ts.pollHandshake()
	wc, _, wr := ts.wsHandshake()
	eventually(t, waitTimeout, pc.pollWaiting, "the GET to wait")

	ts.Server.Close()
	if res := awaitGet(t, get); res.status != http.StatusOK || res.body != "1" {
		t.Errorf("waiting GET got %d %q, want 200 \"1\"", res.status, res.body)
	}
	if got := idle.mustGetOK(); !slices.Equal(got, []string{"1"}) {
		t.Errorf("idle polling session's next GET got %q, want the close packet", got)
	}
	if code, err := wc.readClose(); err != nil || code != ws.StatusNormalClosure {
		t.Errorf("WebSocket: close code %d err %v", code, err)
	}
	for _, r := range []*recorder{pc.rec, idle.rec, wr} {
		if reason := r.waitClosed(t, waitTimeout); reason != "server shutting down" {
			t.Errorf("session %s closed with %q", r.conn.ID(), reason)
		}
	}
	eventually(t, waitTimeout, func() bool { return ts.Len() == 0 }, "all sessions to be removed")
}

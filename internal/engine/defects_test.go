package engine

// Tests for the defects measured in the socket.io library (docs LIBRARY-DEFECTS.md) and for the
// misbehaving clients the engine must survive.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// getBound is how long any poll GET may stay unanswered once its session is closing.
const getBound = 2 * time.Second

// LIBRARY-DEFECTS #2 and #6: a poll GET racing the close of its session was left waiting for ever
// (or answered 400 although it was registered first). Here a GET and a close start together, 200
// times per kind of close: every GET is answered within getBound (with what the session ends with,
// or with an Engine.IO error when it comes after the end), and the session is closed exactly once.
func TestPollGetNeverHangs(t *testing.T) {
	const rounds = 200
	tests := []struct {
		name       string
		close      func(t *testing.T, pc *pollClient)
		wantReason string
		// wantBody is the answer of a GET that the close finds waiting or that finds the session
		// closing: a close packet when the server ends the session, a noop when the client did (it
		// knows, and Node answers so).
		wantBody string
	}{
		{name: "client close packet", wantReason: "transport close", wantBody: "6", close: func(t *testing.T, pc *pollClient) {
			res, err := pc.post("1")
			if err != nil {
				t.Errorf("close POST: %v", err)
			} else if res.status != http.StatusOK {
				t.Errorf("close POST: status %d %q", res.status, res.body)
			}
		}},
		{name: "malformed POST", wantReason: "parse error", wantBody: "1", close: func(t *testing.T, pc *pollClient) {
			res, err := pc.post("garbage")
			if err != nil {
				t.Errorf("malformed POST: %v", err)
			} else if res.status != http.StatusBadRequest {
				t.Errorf("malformed POST: status %d %q", res.status, res.body)
			}
		}},
		{name: "server close", wantReason: "bye", wantBody: "1", close: func(t *testing.T, pc *pollClient) {
			pc.rec.conn.Close("bye")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, Options{})
			counts := map[string]int{}
			for i := range rounds {
				pc := ts.pollHandshake()
				start := make(chan struct{})
				var wg sync.WaitGroup
				var res response
				var err error
				var took time.Duration
				wg.Go(func() {
					<-start
					t0 := time.Now()
					res, err = pc.get()
					took = time.Since(t0)
				})
				wg.Go(func() {
					<-start
					tt.close(t, pc)
				})
				close(start)
				wg.Wait()
				if err != nil {
					t.Fatalf("round %d: GET not answered: %v", i, err)
				}
				if took > getBound {
					t.Errorf("round %d: GET answered after %v", i, took)
				}
				switch {
				case res.status == http.StatusOK && res.body == tt.wantBody:
					counts[fmt.Sprintf("200 %q", res.body)]++
				case res.status == http.StatusBadRequest:
					var e engineError
					if json.Unmarshal([]byte(res.body), &e) != nil || (e.Code != codeUnknownSID && e.Code != codeBadRequest) {
						t.Fatalf("round %d: GET got 400 %q", i, res.body)
					}
					counts[fmt.Sprintf("400 code %d", e.Code)]++
				default:
					t.Fatalf("round %d: GET got %d %q, want 200 %q or 400", i, res.status, res.body, tt.wantBody)
				}
				if reason := pc.rec.waitClosed(t, waitTimeout); reason != tt.wantReason {
					t.Fatalf("round %d: closed with %q, want %q", i, reason, tt.wantReason)
				}
				// The session is gone once its close packet is out: a later GET is refused at once.
				eventually(t, waitTimeout, func() bool { return ts.Len() == 0 }, "round %d: the session to be removed", i)
				checkError(t, pc.mustGet(), http.StatusBadRequest, codeUnknownSID)
			}
			t.Logf("GET outcomes over %d rounds: %v", rounds, counts)
		})
	}
}

// payloadOfSize returns a polling payload of exactly n bytes (n >= 2) made of message packets, and
// the messages it carries.
func payloadOfSize(n int) (string, []message) {
	var b strings.Builder
	var msgs []message
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(0x1e)
		}
		rest := n - b.Len()
		m := fmt.Sprintf("m%d-", i)
		if rest-1-len(m) < 32 { // the last packet fills the payload up to n
			m = strings.Repeat("z", max(rest-1, 0))
		} else {
			m += strings.Repeat("x", 20)
		}
		b.WriteString("4" + m)
		msgs = append(msgs, message{m, false})
	}
	return b.String(), msgs
}

// LIBRARY-DEFECTS #4: a chunked POST over the limit was cut at the limit and the packets before the
// cut were handled. A POST over MaxPayload, chunked or not, gets 413, none of its packets is handled
// and the session is closed (issue 6: oversize input closes that connection; other sessions go on);
// a POST of exactly MaxPayload is accepted whole.
func TestPostOverMaxPayload(t *testing.T) {
	tests := []struct {
		name    string
		max     int64
		size    int
		chunked bool
		chunk   int
		want413 bool
	}{
		{name: "chunked, far over", max: 1000, size: 10_000, chunked: true, chunk: 100, want413: true},
		{name: "chunked, one byte over", max: 1000, size: 1001, chunked: true, chunk: 100, want413: true},
		{name: "chunked, one chunk over", max: 1000, size: 1500, chunked: true, chunk: 1500, want413: true},
		{name: "chunked, large", max: 64 << 10, size: 256 << 10, chunked: true, chunk: 4096, want413: true},
		{name: "chunked, exactly the limit", max: 1000, size: 1000, chunked: true, chunk: 100},
		{name: "content-length, one byte over", max: 1000, size: 1001, want413: true},
		{name: "content-length, far over", max: 1000, size: 50_000, want413: true},
		{name: "content-length, exactly the limit", max: 1000, size: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, Options{MaxPayload: tt.max})
			pc := ts.pollHandshake()
			body, msgs := payloadOfSize(tt.size)
			if len(body) != tt.size {
				t.Fatalf("payloadOfSize(%d) made %d bytes", tt.size, len(body))
			}
			head := fmt.Sprintf("POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain;charset=UTF-8\r\n",
				pc.sid, ts.http.Listener.Addr())
			raw := []byte(body)
			if tt.chunked {
				head += "Transfer-Encoding: chunked\r\n\r\n"
				raw = chunked(raw, tt.chunk)
			} else {
				head += fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
			}
			res, err := ts.rawRequest(head, raw, 512)
			if err != nil {
				t.Fatalf("POST of %d bytes was not answered: %v", tt.size, err)
			}
			// Packets of a POST are handled before it is answered, so this is the final count.
			got := pc.rec.messages()
			if tt.want413 {
				if res.status != http.StatusRequestEntityTooLarge {
					t.Fatalf("POST of %d bytes (max %d): status %d %q, want 413", tt.size, tt.max, res.status, res.body)
				}
				if len(got) != 0 {
					t.Fatalf("refused POST: %d of its %d packets were handled", len(got), len(msgs))
				}
			} else {
				if res.status != http.StatusOK || res.body != "ok" {
					t.Fatalf("POST of %d bytes (max %d): status %d %q, want 200 ok", tt.size, tt.max, res.status, res.body)
				}
				if !slices.Equal(got, msgs) {
					t.Fatalf("handler got %d messages, want the %d sent", len(got), len(msgs))
				}
			}
			if tt.want413 {
				// The session is closed, nothing of the refused body turns up later, and another
				// session is unaffected.
				if reason := pc.rec.waitClosed(t, waitTimeout); reason != "transport error" {
					t.Errorf("closed with %q, want \"transport error\"", reason)
				}
				if res := pc.mustGet(); res.status != http.StatusBadRequest {
					t.Errorf("GET after the refused POST: %d %q, want 400 (unknown session)", res.status, res.body)
				}
				if got := pc.rec.messages(); len(got) != 0 {
					t.Errorf("the handler got %d messages of the refused POST", len(got))
				}
				other := ts.pollHandshake()
				other.mustPostOK("4marker")
				if got := other.rec.messages(); len(got) != 1 || got[0] != (message{"marker", false}) {
					t.Fatalf("another session's handler has %v", got)
				}
				return
			}
			// The session is still usable.
			pc.mustPostOK("4marker")
			if got := pc.rec.messages(); len(got) == 0 || got[len(got)-1] != (message{"marker", false}) {
				t.Fatalf("after the marker the handler has %d messages", len(got))
			}
		})
	}
}

// LIBRARY-DEFECTS #5: a malformed POST was accepted and the session kept. It must get 400 with none of
// its packets handled, and close the session.
func TestMalformedPost(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{name: "garbage", body: "garbage"},
		{name: "empty body", body: ""},
		{name: "empty packet between", body: "4a\x1e\x1e4b"},
		{name: "trailing separator", body: "4a\x1e"},
		{name: "leading separator", body: "\x1e4a"},
		{name: "unknown type", body: "7x"},
		{name: "bad base64", body: "b!!!not-base64"},
		{name: "bad base64 padding", body: "bAQ"},
		{name: "bad packet after good ones", body: "4first\x1e4second\x1e9bad"},
		{name: "bad base64 after good ones", body: "4first\x1eb@@@"},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := ts.pollHandshake()
			get := pc.startGet()
			eventually(t, waitTimeout, pc.pollWaiting, "the GET to wait")
			checkError(t, pc.mustPost(tt.body), http.StatusBadRequest, codeBadRequest)
			if got := pc.rec.messages(); len(got) != 0 {
				t.Errorf("malformed POST: the handler got %v", got)
			}
			if reason := pc.rec.waitClosed(t, waitTimeout); reason != "parse error" {
				t.Errorf("closed with %q, want \"parse error\"", reason)
			}
			if res := awaitGet(t, get); res.status != http.StatusOK || res.body != "1" {
				t.Errorf("the waiting GET got %d %q, want 200 \"1\"", res.status, res.body)
			}
			checkError(t, pc.mustGet(), http.StatusBadRequest, codeUnknownSID)
			checkError(t, pc.mustPost("4x"), http.StatusBadRequest, codeUnknownSID)
		})
	}
}

// A malformed text frame closes a WebSocket session.
func TestMalformedWebSocket(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{name: "empty", data: ""},
		{name: "unknown type", data: "x"},
		{name: "bad base64", data: "b!!"},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, r := ts.wsHandshake()
			c.mustWriteText(tt.data)
			if _, err := c.readClose(); err != nil {
				t.Fatalf("the WebSocket was not closed: %v", err)
			}
			if reason := r.waitClosed(t, waitTimeout); reason != "parse error" {
				t.Errorf("closed with %q, want \"parse error\"", reason)
			}
		})
	}
}

// Two GETs at once on one session are a client error: the second gets 400, the session closes, and the
// first is answered too.
func TestOverlappingGets(t *testing.T) {
	ts := newTestServer(t, Options{})
	pc := ts.pollHandshake()
	first := pc.startGet()
	eventually(t, waitTimeout, pc.pollWaiting, "the first GET to wait")
	checkError(t, pc.mustGet(), http.StatusBadRequest, codeBadRequest)
	res := awaitGet(t, first)
	if res.status != http.StatusOK || res.body != "1" {
		t.Errorf("first GET got %d %q, want 200 \"1\"", res.status, res.body)
	}
	if reason := pc.rec.waitClosed(t, waitTimeout); reason != "transport error" {
		t.Errorf("closed with %q, want \"transport error\"", reason)
	}
	checkError(t, pc.mustGet(), http.StatusBadRequest, codeUnknownSID)
}

// Two POSTs at once on one session: the second gets 400 and the session closes; the first, still being
// read, is answered and none of its packets reaches the closed session's handler.
func TestOverlappingPosts(t *testing.T) {
	ts := newTestServer(t, Options{})
	pc := ts.pollHandshake()

	conn, err := net.DialTimeout("tcp", ts.http.Listener.Addr().String(), requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	fmt.Fprintf(conn, "POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n4first\r\n", pc.sid)
	eventually(t, waitTimeout, func() bool {
		pc.rec.conn.mu.Lock()
		defer pc.rec.conn.mu.Unlock()
		return pc.rec.conn.posting
	}, "the first POST to be read")

	checkError(t, pc.mustPost("4second"), http.StatusBadRequest, codeBadRequest)
	if reason := pc.rec.waitClosed(t, waitTimeout); reason != "transport error" {
		t.Errorf("closed with %q, want \"transport error\"", reason)
	}
	fmt.Fprintf(conn, "0\r\n\r\n")
	buf := make([]byte, 512)
	if n, err := conn.Read(buf); n == 0 {
		t.Errorf("first POST not answered: %v", err)
	}
	if got := pc.rec.messages(); len(got) != 0 {
		t.Errorf("handler got %v", got)
	}
}

// A WebSocket message over MaxPayload, whole or across fragments, closes that connection with 1009
// and is not delivered; other sessions go on.
func TestWebSocketMessageTooBig(t *testing.T) {
	const max = 1000
	type frag struct {
		op  ws.OpCode
		fin bool
		n   int
	}
	tests := []struct {
		name   string
		frames []frag
		// hugeTail sends, after frames, the header of a continuation claiming 2^63-1 bytes.
		hugeTail bool
		wantOK   bool
	}{
		{name: "text one byte over", frames: []frag{{ws.OpText, true, max + 1}}},
		{name: "binary one byte over", frames: []frag{{ws.OpBinary, true, max + 1}}},
		{name: "text far over", frames: []frag{{ws.OpText, true, 100 * max}}},
		{name: "fragmented text over", frames: []frag{{ws.OpText, false, 400}, {ws.OpContinuation, false, 400}, {ws.OpContinuation, true, 400}}},
		{name: "fragmented binary over", frames: []frag{{ws.OpBinary, false, 600}, {ws.OpContinuation, true, 600}}},
		{name: "fragment claiming 2^63-1 bytes", frames: []frag{{ws.OpText, false, 10}}, hugeTail: true},
		{name: "text exactly the limit", frames: []frag{{ws.OpText, true, max}}, wantOK: true},
		{name: "fragmented binary exactly the limit", frames: []frag{{ws.OpBinary, false, 500}, {ws.OpContinuation, true, 500}}, wantOK: true},
	}
	ts := newTestServer(t, Options{MaxPayload: max}, withEcho)
	other, _, otherRec := ts.wsHandshake()
	otherPoll := ts.pollHandshake()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, r := ts.wsHandshake()
			total := 0
			for _, f := range tt.frames {
				p := []byte(strings.Repeat("x", f.n))
				if f.op == ws.OpText {
					p[0] = '4'
				}
				total += f.n
				if err := c.writeFrame(f.op, f.fin, p); err != nil && tt.wantOK {
					t.Fatal(err)
				}
			}
			if tt.hugeTail {
				h := ws.Header{Fin: true, OpCode: ws.OpContinuation, Masked: true, Mask: ws.NewMask(), Length: 1<<63 - 1}
				c.wmu.Lock()
				ws.WriteHeader(c.conn, h)
				c.wmu.Unlock()
			}
			if tt.wantOK {
				want := total
				if tt.frames[0].op == ws.OpText {
					want-- // the packet type
				}
				got := r.waitMessages(t, 1)
				if len(got) != 1 || len(got[0].data) != want {
					t.Fatalf("message of exactly MaxPayload: handler got %d messages, want one of %d bytes", len(got), want)
				}
				c.mustRead() // the echo
				return
			}
			code, err := c.readClose()
			if err != nil || code != ws.StatusMessageTooBig {
				t.Fatalf("close code %d (err %v), want %d", code, err, ws.StatusMessageTooBig)
			}
			if reason := r.waitClosed(t, waitTimeout); reason != "transport error" {
				t.Errorf("closed with %q, want \"transport error\"", reason)
			}
			if got := r.messages(); len(got) != 0 {
				t.Errorf("the oversized message was delivered (%d messages)", len(got))
			}
			// The other sessions are unaffected.
			other.mustWriteText("4still-here")
			if got := other.mustReadText(); got != "4still-here" {
				t.Errorf("other WebSocket session echoed %q", got)
			}
			otherPoll.mustPostOK("4still-here")
			if got := otherPoll.mustGetOK(); !slices.Equal(got, []string{"4still-here"}) {
				t.Errorf("other polling session echoed %q", got)
			}
		})
	}
	if len(otherRec.closeReasons()) != 0 || len(otherPoll.rec.closeReasons()) != 0 {
		t.Errorf("other sessions closed: %q %q", otherRec.closeReasons(), otherPoll.rec.closeReasons())
	}
}

// Packets sent from inside OnOpen go out after the open packet.
func TestSendFromOnOpen(t *testing.T) {
	ts := newTestServer(t, Options{}, withOnOpen(func(c *Conn) {
		c.Send(Packet{Data: []byte("welcome")})
	}))
	t.Run("polling", func(t *testing.T) {
		res := ts.mustDo(http.MethodGet, ts.url("EIO=4&transport=polling"), nil, nil)
		pkts := splitPayload(res.body)
		if res.status != http.StatusOK || len(pkts) == 0 {
			t.Fatalf("handshake: %d %q", res.status, res.body)
		}
		h := parseOpen(t, pkts[0])
		rest := pkts[1:]
		if len(rest) == 0 {
			pc := &pollClient{ts: ts, sid: h.SID}
			rest = pc.mustGetOK()
		}
		if !slices.Equal(rest, []string{"4welcome"}) {
			t.Errorf("after the open packet: %q, want the welcome message", rest)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		c := ts.mustDialWS("EIO=4&transport=websocket")
		parseOpen(t, c.mustReadText())
		if got := c.mustReadText(); got != "4welcome" {
			t.Errorf("after the open packet: %q", got)
		}
	})
}

// Server.Close racing handshakes: every session is closed once, with a handler, and no request hangs.
func TestServerCloseDuringHandshakes(t *testing.T) {
	ts := newTestServer(t, Options{})
	for round := range 100 {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if _, err := ts.do(http.MethodGet, ts.url("EIO=4&transport=polling"), nil, nil); err != nil {
					t.Errorf("round %d: handshake: %v", round, err)
				}
			})
		}
		wg.Go(func() {
			if c, err := ts.dialWS("EIO=4&transport=websocket", nil); err == nil {
				c.conn.Close()
			}
		})
		ts.Server.Close()
		wg.Go(ts.Server.Close)
		wg.Wait()
	}
}

// A session is visible to Server.Close (and so to a drain) as soon as it exists, even while OnOpen is
// still running. Closing it then must wait for its Handler: OnClose is called on the Handler OnOpen
// returns, once, and the client gets the open packet and then the close.
func TestCloseDuringOnOpen(t *testing.T) {
	tests := []struct {
		name      string
		handshake func(ts *testServer) []string // the packets the client receives
	}{
		{name: "polling", handshake: func(ts *testServer) []string {
			res := ts.mustDo(http.MethodGet, ts.url("EIO=4&transport=polling"), nil, nil)
			if res.status != http.StatusOK {
				ts.t.Fatalf("handshake: %d %q", res.status, res.body)
			}
			got := splitPayload(res.body)
			// The close packet comes with the next poll.
			next := ts.mustDo(http.MethodGet, ts.url("EIO=4&transport=polling&sid="+parseOpen(ts.t, got[0]).SID), nil, nil)
			return append(got, splitPayload(next.body)...)
		}},
		{name: "websocket", handshake: func(ts *testServer) []string {
			c := ts.mustDialWS("EIO=4&transport=websocket")
			var got []string
			for {
				data, _, err := c.read()
				if err != nil {
					return got
				}
				got = append(got, string(data))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			ts := newTestServer(t, Options{}, withOnOpen(func(*Conn) {
				close(entered)
				<-release
			}))
			got := make(chan []string, 1)
			go func() { got <- tt.handshake(ts) }()
			<-entered
			if ts.Len() != 1 {
				t.Fatalf("Len() = %d while OnOpen runs", ts.Len())
			}
			ts.Server.Close() // a drain reaching the session while OnOpen still runs
			close(release)
			var pkts []string
			select {
			case pkts = <-got:
			case <-time.After(waitTimeout + requestTimeout):
				t.Fatal("handshake not answered")
			}
			if len(pkts) == 0 || !strings.HasPrefix(pkts[0], "0{") {
				t.Fatalf("handshake got %q, want the open packet first", pkts)
			}
			if tt.name == "polling" && !slices.Equal(pkts[1:], []string{"1"}) {
				t.Errorf("after the open packet: %q, want the close packet", pkts[1:])
			}
			r := ts.rec(parseOpen(t, pkts[0]).SID)
			if reason := r.waitClosed(t, waitTimeout); reason != "server shutting down" {
				t.Errorf("OnClose(%q)", reason)
			}
		})
	}
}

// A server-side Close of a WebSocket session whose client keeps sending still delivers what was
// queued before it and the close frame: closing the socket with input still arriving made the
// kernel answer with a reset, which destroyed both before the client read them (a client
// disconnected for flooding never learnt why).
func TestWebSocketCloseWhileClientSends(t *testing.T) {
	ts := newTestServer(t, Options{})
	for i := range 3 {
		c, _, r := ts.wsHandshake()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // the flood, without reading anything
			defer close(done)
			msg := []byte("4" + strings.Repeat("x", 512))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.write(ws.OpText, msg) != nil {
					return
				}
			}
		}()
		eventually(t, waitTimeout, func() bool { return len(r.messages()) > 100 }, "the flood to arrive")
		r.conn.Send(Packet{Data: []byte("the reason")})
		r.conn.Close("kicked")
		// Let the server close while the client goes on sending, then read.
		eventually(t, waitTimeout, func() bool { return ts.Len() == 0 }, "the session to be removed")
		close(stop)
		<-done
		var got []string
		for {
			data, _, err := c.read()
			if err != nil {
				var closed wsutil.ClosedError
				if !errors.As(err, &closed) {
					t.Fatalf("round %d: the connection ended with %v after %q, want the reason and a close frame", i, err, got)
				}
				break
			}
			got = append(got, string(data))
		}
		if len(got) == 0 || got[len(got)-1] != "4the reason" {
			t.Fatalf("round %d: got %q, want the reason last", i, got)
		}
	}
}

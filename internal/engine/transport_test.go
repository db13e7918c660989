package engine

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

func TestPollingRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		post     string  // the POST body
		want     message // what the handler receives
		wantEcho string  // the packet the echo comes back as
	}{
		{name: "text", post: "4hello", want: message{"hello", false}, wantEcho: "4hello"},
		{name: "utf-8 text", post: "4héllo ✓ 😀", want: message{"héllo ✓ 😀", false}, wantEcho: "4héllo ✓ 😀"},
		{name: "empty text", post: "4", want: message{"", false}, wantEcho: "4"},
		{name: "json text", post: `42["ev",{"a":1}]`, want: message{`2["ev",{"a":1}]`, false}, wantEcho: `42["ev",{"a":1}]`},
		{name: "binary", post: "b" + b64("\x00\x01\x02\xff"), want: message{"\x00\x01\x02\xff", true}, wantEcho: "bAAEC/w=="},
		{name: "empty binary", post: "b", want: message{"", true}, wantEcho: "b"},
	}
	ts := newTestServer(t, Options{}, withEcho)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := ts.pollHandshake()
			pc.mustPostOK(tt.post)
			if got := pc.rec.waitMessages(t, 1); !slices.Equal(got, []message{tt.want}) {
				t.Errorf("handler got %v, want %v", got, tt.want)
			}
			if got := pc.mustGetOK(); !slices.Equal(got, []string{tt.wantEcho}) {
				t.Errorf("echo came back as %q, want %q", got, tt.wantEcho)
			}
		})
	}
}

// The packets of one POST reach the handler one by one, in order, before the POST is answered.
func TestPollingPostOrder(t *testing.T) {
	ts := newTestServer(t, Options{})
	pc := ts.pollHandshake()
	var body []string
	var want []message
	for i := range 50 {
		if i%7 == 3 {
			body = append(body, "b"+b64(fmt.Sprintf("bin-%d", i)))
			want = append(want, message{fmt.Sprintf("bin-%d", i), true})
			continue
		}
		body = append(body, fmt.Sprintf("4msg-%d", i))
		want = append(want, message{fmt.Sprintf("msg-%d", i), false})
	}
	pc.mustPostOK(strings.Join(body, "\x1e"))
	// Delivery is synchronous: no waiting is needed once the POST is answered.
	if got := pc.rec.messages(); !slices.Equal(got, want) {
		t.Fatalf("handler got\n%v\nwant\n%v", got, want)
	}
	pc.mustPostOK("4last")
	if got := pc.rec.messages(); len(got) != 51 || got[50] != (message{"last", false}) {
		t.Fatalf("second POST: handler has %d messages, last %v", len(got), got[len(got)-1])
	}
}

// Packets queued while no GET waits come out in one GET, in the order they were sent.
func TestPollingQueuedBatch(t *testing.T) {
	ts := newTestServer(t, Options{})
	pc := ts.pollHandshake()
	c := pc.rec.conn
	var want []string
	for i := range 20 {
		p := Packet{Data: []byte(fmt.Sprintf("m%d", i))}
		w := fmt.Sprintf("4m%d", i)
		if i%5 == 4 {
			p = Packet{Data: []byte{byte(i), 0, 0xff}, Binary: true}
			w = "b" + b64(string(p.Data))
		}
		if !c.Send(p) {
			t.Fatalf("Send %d reported a closed session", i)
		}
		want = append(want, w)
	}
	if !c.Send(Packet{Data: []byte("x")}, Packet{Data: []byte("y")}) {
		t.Fatal("Send of two packets reported a closed session")
	}
	want = append(want, "4x", "4y")
	if got := pc.mustGetOK(); !slices.Equal(got, want) {
		t.Fatalf("GET payload\n%q\nwant\n%q", got, want)
	}
}

// A GET waits until there is something to send, and is answered as soon as there is.
func TestPollingLongPoll(t *testing.T) {
	ts := newTestServer(t, Options{})
	pc := ts.pollHandshake()
	for i := range 5 {
		get := pc.startGet()
		eventually(t, waitTimeout, pc.pollWaiting, "GET %d to wait on the server", i)
		if !pc.rec.conn.Writable() {
			t.Fatal("Writable() = false while a GET waits")
		}
		select {
		case r := <-get:
			t.Fatalf("GET with nothing to send was answered at once: %+v", r)
		default:
		}
		pc.rec.conn.Send(Packet{Data: []byte(fmt.Sprintf("wake-%d", i))})
		res := awaitGet(t, get)
		if res.status != http.StatusOK || res.body != fmt.Sprintf("4wake-%d", i) {
			t.Fatalf("GET %d: status %d body %q", i, res.status, res.body)
		}
	}
}

func TestWebSocketRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		op       ws.OpCode
		send     []byte
		want     message
		wantOp   ws.OpCode
		wantEcho []byte
	}{
		{name: "text", op: ws.OpText, send: []byte("4hello"), want: message{"hello", false}, wantOp: ws.OpText, wantEcho: []byte("4hello")},
		{name: "utf-8 text", op: ws.OpText, send: []byte("4héllo ✓"), want: message{"héllo ✓", false}, wantOp: ws.OpText, wantEcho: []byte("4héllo ✓")},
		{name: "empty text", op: ws.OpText, send: []byte("4"), want: message{"", false}, wantOp: ws.OpText, wantEcho: []byte("4")},
		{name: "binary", op: ws.OpBinary, send: []byte{0, 1, 2, 0xff}, want: message{"\x00\x01\x02\xff", true}, wantOp: ws.OpBinary, wantEcho: []byte{0, 1, 2, 0xff}},
		{name: "binary as base64 text", op: ws.OpText, send: []byte("b" + b64("\x07\x08")), want: message{"\x07\x08", true}, wantOp: ws.OpBinary, wantEcho: []byte{7, 8}},
	}
	ts := newTestServer(t, Options{}, withEcho)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, r := ts.wsHandshake()
			if err := c.write(tt.op, tt.send); err != nil {
				t.Fatal(err)
			}
			if got := r.waitMessages(t, 1); !slices.Equal(got, []message{tt.want}) {
				t.Errorf("handler got %v, want %v", got, tt.want)
			}
			data, op := c.mustRead()
			if op != tt.wantOp || !bytes.Equal(data, tt.wantEcho) {
				t.Errorf("echo came back as %v %q, want %v %q", op, data, tt.wantOp, tt.wantEcho)
			}
		})
	}
}

// Messages in both directions keep their order over WebSocket, also when sent from many goroutines'
// points of view in one burst.
func TestWebSocketOrder(t *testing.T) {
	ts := newTestServer(t, Options{})
	c, _, r := ts.wsHandshake()
	const n = 500
	for i := range n {
		if i%10 == 9 {
			if err := c.write(ws.OpBinary, []byte(fmt.Sprintf("b%d", i))); err != nil {
				t.Fatal(err)
			}
			continue
		}
		c.mustWriteText(fmt.Sprintf("4c%d", i))
	}
	got := r.waitMessages(t, n)
	for i, m := range got {
		want := message{fmt.Sprintf("c%d", i), false}
		if i%10 == 9 {
			want = message{fmt.Sprintf("b%d", i), true}
		}
		if m != want {
			t.Fatalf("message %d = %v, want %v", i, m, want)
		}
	}

	for i := range n {
		if i%10 == 9 {
			r.conn.Send(Packet{Data: []byte(fmt.Sprintf("b%d", i)), Binary: true})
			continue
		}
		r.conn.Send(Packet{Data: []byte(fmt.Sprintf("s%d", i))})
	}
	for i := range n {
		data, op := c.mustRead()
		want, wantOp := fmt.Sprintf("4s%d", i), ws.OpText
		if i%10 == 9 {
			want, wantOp = fmt.Sprintf("b%d", i), ws.OpBinary
		}
		if string(data) != want || op != wantOp {
			t.Fatalf("frame %d = %v %q, want %v %q", i, op, data, wantOp, want)
		}
	}
}

// A message split across fragments is delivered whole.
func TestWebSocketFragmented(t *testing.T) {
	ts := newTestServer(t, Options{MaxPayload: 1000})
	c, _, r := ts.wsHandshake()
	msg := "4" + strings.Repeat("abc", 333) // 1000 bytes: exactly MaxPayload
	parts := []string{msg[:300], msg[300:600], msg[600:]}
	if err := c.writeFrame(ws.OpText, false, []byte(parts[0])); err != nil {
		t.Fatal(err)
	}
	// A control frame may come between fragments.
	if err := c.writeFrame(ws.OpPing, true, []byte("p")); err != nil {
		t.Fatal(err)
	}
	if err := c.writeFrame(ws.OpContinuation, false, []byte(parts[1])); err != nil {
		t.Fatal(err)
	}
	if err := c.writeFrame(ws.OpContinuation, true, []byte(parts[2])); err != nil {
		t.Fatal(err)
	}
	got := r.waitMessages(t, 1)
	if len(got) != 1 || got[0] != (message{msg[1:], false}) {
		t.Fatalf("handler got %d messages, want the 999-byte message whole", len(got))
	}
}

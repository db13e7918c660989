package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		msg     string
		want    Packet
		wantN   int
		wantErr bool
	}{
		{name: "connect main", msg: "0", want: Packet{Type: Connect, Nsp: "/"}},
		{name: "connect with auth", msg: `0{"token":"1"}`, want: Packet{Type: Connect, Nsp: "/", Data: json.RawMessage(`{"token":"1"}`)}},
		{name: "connect custom", msg: "0/admin,", want: Packet{Type: Connect, Nsp: "/admin"}},
		{name: "connect custom no comma", msg: "0/admin", want: Packet{Type: Connect, Nsp: "/admin"}},
		{name: "event", msg: `2["hello",1]`, want: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`["hello",1]`)}},
		{name: "event with ack", msg: `2/chat,12["m"]`, want: Packet{Type: Event, Nsp: "/chat", ID: 12, HasID: true, Data: json.RawMessage(`["m"]`)}},
		{name: "ack", msg: `312[{"ok":true}]`, want: Packet{Type: Ack, Nsp: "/", ID: 12, HasID: true, Data: json.RawMessage(`[{"ok":true}]`)}},
		{name: "binary event", msg: `52-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, wantN: 2,
			want: Packet{Type: BinaryEvent, Nsp: "/", Data: json.RawMessage(`["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)}},
		{name: "disconnect", msg: "1/chat,", want: Packet{Type: Disconnect, Nsp: "/chat"}},
		{name: "empty", msg: "", wantErr: true},
		{name: "bad type", msg: "9", wantErr: true},
		{name: "event not an array", msg: `2{}`, wantErr: true},
		{name: "event name not a string", msg: `2[1]`, wantErr: true},
		{name: "event empty array", msg: `2[]`, wantErr: true},
		{name: "garbage after type", msg: `2abc[]`, wantErr: true},
		{name: "ack without id", msg: `3[]`, wantErr: true},
		{name: "binary without count", msg: `5["m"]`, wantErr: true},
		{name: "too many attachments", msg: `51001-["m"]`, wantErr: true},
		{name: "one attachment more than socket.io-parser takes", msg: `511-["m"]`, wantErr: true},
		{name: "as many attachments as socket.io-parser takes", msg: `510-["m"]`, wantN: 10, want: Packet{Type: BinaryEvent, Nsp: "/", Data: json.RawMessage(`["m"]`)}},
		{name: "zero attachments", msg: `50-["m"]`, wantErr: true},
		{name: "nested at the limit", msg: `2["m",` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `]`,
			want: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`["m",` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `]`)}},
		{name: "nested too deep", msg: `2["m",` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `]`, wantErr: true},
		{name: "objects nested too deep", msg: `2["m",` + strings.Repeat(`{"a":`, MaxDepth) + "1" + strings.Repeat("}", MaxDepth) + `]`, wantErr: true},
		{name: "brackets in strings do not nest", msg: `2["m","` + strings.Repeat("[", 200) + `\"` + strings.Repeat("{", 200) + `"]`,
			want: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`["m","` + strings.Repeat("[", 200) + `\"` + strings.Repeat("{", 200) + `"]`)}},
		{name: "ack nested too deep", msg: `31` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), wantErr: true},
		{name: "disconnect with data", msg: `1{}`, wantErr: true},
		{name: "huge ack id", msg: `299999999999999999999["m"]`, wantErr: true},
	}
	for _, tc := range tests {
		p, n, err := DecodeHeader([]byte(tc.msg))
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.wantErr)
			continue
		}
		if tc.wantErr {
			continue
		}
		if n != tc.wantN || p.Type != tc.want.Type || p.Nsp != tc.want.Nsp || p.ID != tc.want.ID || p.HasID != tc.want.HasID || !bytes.Equal(p.Data, tc.want.Data) {
			t.Errorf("%s: got %+v (n=%d), want %+v (n=%d)", tc.name, p, n, tc.want, tc.wantN)
		}
	}
}

func TestComplete(t *testing.T) {
	t.Parallel()
	p, n, err := DecodeHeader([]byte(`51-["m",{"_placeholder":true,"num":0}]`))
	if err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if err := p.Complete([][]byte{{1}}); err != nil {
		t.Fatalf("valid placeholder refused: %v", err)
	}
	bad, _, _ := DecodeHeader([]byte(`51-["m",{"_placeholder":true,"num":3}]`))
	if err := bad.Complete([][]byte{{1}}); err == nil {
		t.Fatal("placeholder past the attachments accepted")
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, p := range []Packet{
		{Type: Event, Nsp: "/", Data: json.RawMessage(`["a",1]`)},
		{Type: Event, Nsp: "/chat", ID: 7, HasID: true, Data: json.RawMessage(`["a"]`)},
		{Type: Event, Nsp: "/x", Data: json.RawMessage(`["a",{"_placeholder":true,"num":0}]`), Attachments: [][]byte{{9}}},
		{Type: Ack, Nsp: "/", ID: 3, HasID: true, Data: json.RawMessage(`[{"ok":true}]`)},
		{Type: ConnectError, Nsp: "/y", Data: json.RawMessage(`{"message":"no"}`)},
	} {
		msg := p.Encode()
		got, n, err := DecodeHeader(msg)
		if err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
		if n != len(p.Attachments) || got.Nsp != p.Nsp || got.ID != p.ID || got.HasID != p.HasID || !bytes.Equal(got.Data, p.Data) {
			t.Errorf("%s decoded as %+v (n=%d)", msg, got, n)
		}
	}
}

// FuzzDecodeHeader: no input panics, and whatever decodes encodes back to a packet that decodes
// the same.
func FuzzDecodeHeader(f *testing.F) {
	for _, s := range []string{"0", `0{"a":1}`, "0/admin,", `2["m",1]`, `2/chat,12["m"]`, `312[1]`, `52-["m",{"_placeholder":true,"num":0}]`, "1/x,", `4{"message":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		p, n, err := DecodeHeader(msg)
		if err != nil {
			return
		}
		if n > 0 {
			p.Attachments = make([][]byte, n)
		}
		again, n2, err := DecodeHeader(p.Encode())
		if err != nil || n2 != n || again.Nsp != p.Nsp || again.ID != p.ID || again.HasID != p.HasID || !bytes.Equal(bytes.TrimSpace(again.Data), bytes.TrimSpace(p.Data)) {
			t.Fatalf("%q → %+v → %q → %+v (%v)", msg, p, p.Encode(), again, err)
		}
	})
}

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

// placeholders returns the num of every placeholder in a JSON value, as checkPlaceholders sees them.
func placeholders(v any, out *[]any) {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			placeholders(e, out)
		}
	case map[string]any:
		if ph, ok := v["_placeholder"].(bool); ok && ph {
			*out = append(*out, v["num"])
			return
		}
		for _, e := range v {
			placeholders(e, out)
		}
	}
}

// FuzzDecodePacket runs a client's packet as the server reads it: the header, then (for a binary
// packet) Complete with the attachments that came. Nothing panics; a completed packet's
// placeholders all point at one of its attachments (whole numbers in range), so that re-encoding
// for other clients or for Redis never refers to a missing one; an event has at least its name,
// a string, and its arguments split; nesting stays within MaxDepth.
func FuzzDecodePacket(f *testing.F) {
	for _, s := range []string{
		`2["join","a"]`, `21["publish",{"room":"r","event":"e","data":1}]`, `2/chat,3["m",[1,{"a":null}]]`,
		`51-["b",{"_placeholder":true,"num":0}]`, `52-1["b",[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]]`,
		`61-5[{"_placeholder":true,"num":0}]`, `51-["b",{"_placeholder":true,"num":1}]`, `51-["b",{"_placeholder":true,"num":-1}]`,
		`51-["b",{"_placeholder":true,"num":0.5}]`, `51-["b",{"_placeholder":true,"num":"0"}]`, `51-["b",{"_placeholder":false,"num":9}]`,
		`511-["b"]`, `50-["b"]`, `5x-["b"]`, `51["b"]`, `0{"token":"x"}`, `0/nope,`, `1`, `4{"message":"x"}`, `3[1]`, `37[]`,
		`2["e",` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `]`,
	} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, msg []byte, attachments uint8) {
		p, want, err := DecodeHeader(msg)
		if err != nil {
			return
		}
		if want < 0 || want > MaxAttachments {
			t.Fatalf("%q announces %d attachments", msg, want)
		}
		if !depthWithin(p.Data, MaxDepth) {
			t.Fatalf("%q nests deeper than %d", msg, MaxDepth)
		}
		if p.Type == Event || p.Type == BinaryEvent {
			args, err := Args(p.Data)
			if err != nil || len(args) == 0 {
				t.Fatalf("event %q: arguments %v, %v", msg, args, err)
			}
			var name string
			if err := json.Unmarshal(args[0], &name); err != nil {
				t.Fatalf("event %q: name %s is not a string", msg, args[0])
			}
		}
		if p.Type != BinaryEvent && p.Type != BinaryAck {
			return
		}
		n := int(attachments) % (MaxAttachments + 1)
		atts := make([][]byte, n)
		if err := p.Complete(atts); err != nil {
			return
		}
		var v any
		if err := json.Unmarshal(p.Data, &v); err != nil {
			t.Fatalf("completed %q holds invalid JSON: %v", msg, err)
		}
		var nums []any
		placeholders(v, &nums)
		for _, num := range nums {
			f, ok := num.(float64)
			if !ok || f < 0 || f >= float64(n) || f != float64(int(f)) {
				t.Fatalf("completed %q with %d attachments has placeholder num %v", msg, n, num)
			}
		}
	})
}

// An event stamped with a recovery offset carries it as its last argument (socket.io 4.6+), without
// its Data being changed.
func TestEncodeOffset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    Packet
		want string
	}{
		{name: "event", p: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`["m",1]`), Offset: "k3.1z"}, want: `2["m",1,"k3.1z"]`},
		{name: "namespace and spaces", p: Packet{Type: Event, Nsp: "/chat", Data: json.RawMessage(`["m", {"a":[1]} ] `), Offset: "1700000000000-0"}, want: `2/chat,["m", {"a":[1]} ,"1700000000000-0"]`},
		{name: "binary", p: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`["m",{"_placeholder":true,"num":0}]`), Attachments: [][]byte{{1}}, Offset: "o"}, want: `51-["m",{"_placeholder":true,"num":0},"o"]`},
		{name: "offset to escape", p: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`["m"]`), Offset: "a\"b\\c\n"}, want: `2["m","a\"b\\c\n"]`},
		{name: "empty array", p: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`[]`), Offset: "o"}, want: `2["o"]`},
		{name: "no offset", p: Packet{Type: Event, Nsp: "/", Data: json.RawMessage(`["m"]`)}, want: `2["m"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := string(tc.p.Data)
			if got := string(tc.p.Encode()); got != tc.want {
				t.Errorf("Encode = %s, want %s", got, tc.want)
			}
			if string(tc.p.Data) != data {
				t.Errorf("Data changed to %s", tc.p.Data)
			}
		})
	}
}

package adapter

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// nodeMessage is a message a stock Node peer published, from testdata/node-messages.txt.
type nodeMessage struct {
	kind, channel string
	payload       []byte
}

func nodeMessages(t testing.TB) []nodeMessage {
	t.Helper()
	f, err := os.Open("testdata/node-messages.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []nodeMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		b, err := hex.DecodeString(parts[2])
		if err != nil || len(parts) != 3 {
			t.Fatalf("bad line %q", line)
		}
		out = append(out, nodeMessage{parts[0], parts[1], b})
	}
	if len(out) < 20 {
		t.Fatalf("only %d messages in testdata/node-messages.txt", len(out))
	}
	return out
}

// TestNodeMessages decodes every message real Node peers published, and checks some in detail.
func TestNodeMessages(t *testing.T) {
	t.Parallel()
	type broadcast struct {
		uid, data string
		atts      []string // hex
		opts      BroadcastOptions
	}
	var got []broadcast
	for _, m := range nodeMessages(t) {
		switch m.kind {
		case "broadcast":
			uid, p, opts, err := decodeBroadcast(m.payload)
			if err != nil {
				t.Fatalf("%s %x: %v", m.channel, m.payload, err)
			}
			b := broadcast{uid: uid, data: string(p.Data), opts: opts}
			for _, a := range p.Attachments {
				b.atts = append(b.atts, hex.EncodeToString(a))
			}
			got = append(got, b)
			// chorus encodes what it decoded exactly as Node did (same uid and options), byte for
			// byte, except for Dates, which JSON has as strings, and the emitter's key order.
			again, err := encodeBroadcast(uid, p.Nsp, p, opts)
			if err != nil {
				t.Fatal(err)
			}
			date := strings.Contains(string(p.Data), `"1970-01-01T`)
			if uid != "emitter" && !date && !bytes.Equal(again, m.payload) {
				t.Errorf("%s: re-encoded\n%x\nNode sent\n%x", m.channel, again, m.payload)
			}
		default:
			msg, err := decodeMessage(m.payload)
			if err != nil {
				t.Fatalf("%s %s: %v", m.kind, m.payload, err)
			}
			if msg.Type == nil && msg.RequestID == nil {
				t.Errorf("%s %s: neither type nor requestId", m.kind, m.payload)
			}
		}
	}
	want := []broadcast{
		{data: `["all",1,"two",{"three":[3.5,true,null]}]`},
		{
			data: `["room",{"_placeholder":true,"num":0},{"bin":{"_placeholder":true,"num":1},"list":[{"_placeholder":true,"num":2}]}]`,
			atts: []string{"0001ff", strings.Repeat("07", 300), "78"}, opts: BroadcastOptions{Rooms: []string{"room"}, Except: []string{}},
		},
		{data: `["except","1970-01-01T00:00:00.000Z",1099511627776,-17,1.25,"é😀"]`},
		{data: `["volatile",{}]`, opts: BroadcastOptions{Rooms: []string{"room", "other"}, Except: []string{}, Volatile: true}},
		{data: `["fromEmitter",{"_placeholder":true,"num":0},{"a":1}]`, atts: []string{hex.EncodeToString([]byte("emitter"))}},
		{data: `["emitterAll"]`},
		{data: `["nsp",1]`},
	}
	if len(got) != len(want) {
		t.Fatalf("%d broadcasts, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].data != w.data || !reflect.DeepEqual(got[i].atts, w.atts) {
			t.Errorf("broadcast %d: data %s atts %v\nwant %s %v", i, got[i].data, got[i].atts, w.data, w.atts)
		}
		if w.opts.Rooms != nil && !reflect.DeepEqual(got[i].opts, w.opts) {
			t.Errorf("broadcast %d: opts %+v, want %+v", i, got[i].opts, w.opts)
		}
	}
}

func TestJSONToMsgpackRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, out string // out "" means the same as in
		atts          [][]byte
	}{
		{name: "scalars", in: `[null,true,false,0,-1,127,128,-33,65535,4294967296,-9007199254740993,1.5,-0.25,1e300,"s"]`,
			out: `[null,true,false,0,-1,127,128,-33,65535,4294967296,-9007199254740993,1.5,-0.25,1e+300,"s"]`},
		{name: "integral floats are integers, as JavaScript numbers", in: `[1.0,1e3,-0,2.5e1]`, out: `[1,1000,0,25]`},
		{name: "beyond int64", in: `[18446744073709551615,1e19]`, out: `[18446744073709551615,10000000000000000000]`},
		{name: "keys keep their order", in: `{"z":1,"a":{"y":[],"b":{}}}`},
		{name: "a repeated key: the last value, in the first place", in: `{"a":1,"b":2,"a":3}`, out: `{"a":3,"b":2}`},
		{name: "escapes and unicode", in: `["\"\\\n\t\u0001é\u2028😀","<>&"]`, out: `["\"\\\n\t\u0001é` + "\u2028" + `😀","<>&"]`},
		{
			name: "placeholders become bin and come back in order",
			in:   `[{"_placeholder":true,"num":1},{"x":{"_placeholder":true,"num":0}}]`,
			out:  `[{"_placeholder":true,"num":0},{"x":{"_placeholder":true,"num":1}}]`,
			atts: [][]byte{{1}, {2, 2}},
		},
		{name: "without attachments a placeholder is an object", in: `[{"_placeholder":true,"num":0}]`},
		{name: "long strings", in: `["` + strings.Repeat("x", 70000) + `"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := jsonToMsgpack(msgpack.NewEncoder(&buf), []byte(tc.in), tc.atts); err != nil {
				t.Fatal(err)
			}
			js, atts, err := msgpackToJSON(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			want := tc.out
			if want == "" {
				want = tc.in
			}
			if string(js) != want {
				t.Errorf("got  %s\nwant %s", js, want)
			}
			if len(tc.atts) == 2 && (!bytes.Equal(atts[0], tc.atts[1]) || !bytes.Equal(atts[1], tc.atts[0])) {
				t.Errorf("attachments %v", atts)
			}
		})
	}
	var buf bytes.Buffer
	if err := jsonToMsgpack(msgpack.NewEncoder(&buf), []byte(`[{"_placeholder":true,"num":2}]`), [][]byte{{1}}); err == nil {
		t.Error("a placeholder pointing nowhere was accepted")
	}
}

// TestMsgpackToJSON covers what only Node (notepack) writes: ext values, timestamps, undefined,
// float32, keys that are not strings.
func TestMsgpackToJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string // in: hex
		atts           int
	}{
		{"undefined in an array", "92d40000c0", `[null,null]`, 0},
		{"undefined in a map drops the key", "82a161d40000a16201", `{"b":1}`, 0},
		{"timestamp 32", "d6ff00000001", `"1970-01-01T00:00:01.000Z"`, 0},
		{"timestamp 64", "d7ff0000000400000002", `"1970-01-01T00:00:02.000Z"`, 0},
		{"timestamp 96", "c70cff00000000ffffffffffffffff", `"1969-12-31T23:59:59.000Z"`, 0},
		{"notepack's old date", "d70000000000000003e8", `"1970-01-01T00:00:01.000Z"`, 0},
		{"ext 0 is an ArrayBuffer", "c7020000ff", `{"_placeholder":true,"num":0}`, 1},
		{"another ext is [type, bin]", "d50501ff", `[5,{"_placeholder":true,"num":0}]`, 1},
		{"float32", "ca3fc00000", `1.5`, 0},
		{"NaN is null", "cb7ff8000000000000", `null`, 0},
		{"number keys", "82010ac0cb3ff8000000000000", `{"1":10,"null":1.5}`, 0},
		{"invalid utf-8", "a2ff41", `"` + "\ufffd" + `A"`, 0},
		{"int64 min", "d38000000000000000", `-9223372036854775808`, 0},
		{"uint64 max", "cfffffffffffffffff", `18446744073709551615`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tc.in)
			js, atts, err := msgpackToJSON(b)
			if err != nil || string(js) != tc.want || len(atts) != tc.atts {
				t.Errorf("got %s (%d attachments), %v; want %s", js, len(atts), err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "c1", "92c0", "dd7fffffff", "df7fffffff", "d9ff61", "c0c0", "8192c0c0", "cb0000"} {
		b, _ := hex.DecodeString(bad)
		if js, _, err := msgpackToJSON(b); err == nil {
			t.Errorf("%s decoded as %s", bad, js)
		}
	}
	deep := bytes.Repeat([]byte{0x91}, maxDepth+5)
	if _, _, err := msgpackToJSON(append(deep, 0xc0)); err == nil {
		t.Error("nesting beyond maxDepth accepted")
	}
}

func TestDecodeBroadcastRefuses(t *testing.T) {
	t.Parallel()
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pkt := map[string]any{"type": 2, "data": []any{"ev", 1}, "nsp": "/"}
	opts := map[string]any{"rooms": []string{}, "except": []string{}}
	if _, p, _, err := decodeBroadcast(enc([]any{"u", pkt, opts})); err != nil || string(p.Data) != `["ev",1]` {
		t.Fatalf("a good message: %v", err)
	}
	for name, v := range map[string]any{
		"not an array":       pkt,
		"two elements":       []any{"u", pkt},
		"opts null":          []any{"u", pkt, nil},
		"not an event":       []any{"u", map[string]any{"type": 1, "nsp": "/"}, opts},
		"no type":            []any{"u", map[string]any{"data": []any{"ev"}}, opts},
		"event not a string": []any{"u", map[string]any{"type": 2, "data": []any{1}}, opts},
		"data not an array":  []any{"u", map[string]any{"type": 2, "data": "ev"}, opts},
		"rooms not strings":  []any{"u", pkt, map[string]any{"rooms": []int{1}}},
		"bad placeholder":    []any{"u", map[string]any{"type": 5, "data": []any{"ev", map[string]any{"_placeholder": true, "num": 3}, []byte{1}}}, opts},
	} {
		if _, _, _, err := decodeBroadcast(enc(v)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzMsgpackToJSON: any input converts or fails cleanly; what converts is valid JSON whose
// placeholders point at the attachments, and converting it back and forth is stable.
func FuzzMsgpackToJSON(f *testing.F) {
	for _, m := range nodeMessages(f) {
		if m.payload[0] != '{' {
			f.Add(m.payload)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		js, atts, err := msgpackToJSON(b)
		if err != nil {
			return
		}
		if !json.Valid(js) {
			t.Fatalf("invalid JSON %q from %x", js, b)
		}
		twice := func(js []byte, atts [][]byte) ([]byte, [][]byte) {
			var buf bytes.Buffer
			if err := jsonToMsgpack(msgpack.NewEncoder(&buf), js, atts); err != nil {
				t.Fatalf("%s does not encode back: %v", js, err)
			}
			out, outAtts, err := msgpackToJSON(buf.Bytes())
			if err != nil {
				t.Fatalf("%x (from %s) does not decode: %v", buf.Bytes(), js, err)
			}
			return out, outAtts
		}
		if len(atts) == 0 {
			atts = nil // no attachments: no placeholders to resolve
		}
		js2, atts2 := twice(js, atts)
		var v1, v2 any
		json.Unmarshal(js, &v1)
		json.Unmarshal(js2, &v2)
		if !reflect.DeepEqual(v1, v2) {
			t.Fatalf("round trip changed the value: %s → %s", js, js2)
		}
		if len(atts2) == 0 {
			atts2 = nil
		}
		js3, _ := twice(js2, atts2)
		if !bytes.Equal(js2, js3) {
			t.Fatalf("not stable: %s → %s", js2, js3)
		}
	})
}

// FuzzDecodeBroadcast: a broadcast that decodes is a valid event packet chorus can send and
// publish again.
func FuzzDecodeBroadcast(f *testing.F) {
	for _, m := range nodeMessages(f) {
		if m.kind == "broadcast" {
			f.Add(m.payload)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		uid, p, opts, err := decodeBroadcast(b)
		if err != nil {
			return
		}
		if _, want, err := protocol.DecodeHeader(p.Encode()); err != nil || want != len(p.Attachments) {
			t.Fatalf("packet %q does not decode as Socket.IO: %v", p.Encode(), err)
		}
		again, err := encodeBroadcast(uid, p.Nsp, p, opts)
		if err != nil {
			t.Fatalf("does not encode again: %v", err)
		}
		if _, _, _, err := decodeBroadcast(again); err != nil {
			t.Fatalf("re-encoded %x does not decode: %v", again, err)
		}
	})
}

// FuzzDecodeMessage: requests and responses, JSON or msgpack, decode or fail cleanly.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range nodeMessages(f) {
		if m.kind != "broadcast" {
			f.Add(m.payload)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeMessage(b)
	})
}

package engine

import (
	"bytes"
	"slices"
	"testing"
)

func TestDecodePayload(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []frame
		wantErr bool
	}{
		{name: "one message", in: "4hello", want: []frame{{typ: typeMessage, data: []byte("hello")}}},
		{name: "empty message", in: "4", want: []frame{{typ: typeMessage, data: []byte{}}}},
		{name: "several", in: "4a\x1e2\x1e3probe\x1e6\x1e1", want: []frame{
			{typ: typeMessage, data: []byte("a")}, {typ: typePing, data: []byte{}}, {typ: typePong, data: []byte("probe")},
			{typ: typeNoop, data: []byte{}}, {typ: typeClose, data: []byte{}},
		}},
		{name: "binary", in: "bAAEC/w==\x1e4x", want: []frame{{typ: typeMessage, data: []byte{0, 1, 2, 0xff}, binary: true}, {typ: typeMessage, data: []byte("x")}}},
		{name: "empty binary", in: "b", want: []frame{{typ: typeMessage, data: []byte{}, binary: true}}},
		{name: "empty", in: "", wantErr: true},
		{name: "only a separator", in: "\x1e", wantErr: true},
		{name: "empty packet", in: "4a\x1e\x1e4b", wantErr: true},
		{name: "trailing separator", in: "4a\x1e", wantErr: true},
		{name: "unknown type", in: "4a\x1e7", wantErr: true},
		{name: "type below range", in: "/x", wantErr: true},
		{name: "bad base64", in: "b***", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePayload([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("decodePayload(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				if got != nil {
					t.Errorf("decodePayload(%q) returned %d frames with its error", tt.in, len(got))
				}
				return
			}
			if !framesEqual(got, tt.want) {
				t.Errorf("decodePayload(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if enc := appendPayload(nil, got); string(enc) != tt.in {
				t.Errorf("appendPayload(decodePayload(%q)) = %q", tt.in, enc)
			}
		})
	}
}

func framesEqual(a, b []frame) bool {
	return slices.EqualFunc(a, b, func(x, y frame) bool {
		return x.typ == y.typ && x.binary == y.binary && bytes.Equal(x.data, y.data)
	})
}

// FuzzDecodePayload checks the polling payload decoder on any input: it never panics, it either fails
// or returns at least one well-formed packet, each packet is what decodeText makes of its part, and
// what it decodes survives encoding and decoding again. The seed corpus (real payloads) runs in every
// go test.
func FuzzDecodePayload(f *testing.F) {
	for _, seed := range []string{
		`0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
		"40", `40{"token":"abc"}`, `42["chat","hello"]`, `42/admin,1["ev",{"a":[1,2]}]`, `451-["bin",{"_placeholder":true,"num":0}]`,
		"4hello\x1e4world", "2", "3", "3probe", "2probe", "5", "6", "1", "4", "b", "bAQID", "bAAEC/w==", "4é✓😀",
		"451-[\"up\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==", "4a\x1e2\x1e3\x1e6",
		"", "\x1e", "\x1e\x1e", "4a\x1e", "\x1e4a", "garbage", "7", "b!!", "bAQ", "bAQ\nID", "4\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		frames, err := decodePayload(in)
		if !bytes.Equal(in, orig) {
			t.Fatalf("decodePayload modified its input")
		}
		parts := bytes.Split(in, []byte{recordSeparator})
		if err != nil {
			if frames != nil {
				t.Fatalf("error %v with %d frames", err, len(frames))
			}
			// It fails only if some part is not a packet.
			for _, p := range parts {
				if _, err := decodeText(p); err != nil {
					return
				}
			}
			t.Fatalf("decodePayload(%q) failed (%v) although every part decodes", in, err)
		}
		if len(frames) != len(parts) {
			t.Fatalf("decodePayload(%q) = %d frames for %d parts", in, len(frames), len(parts))
		}
		for i, f := range frames {
			want, err := decodeText(parts[i])
			if err != nil {
				t.Fatalf("part %d %q: decodeText fails (%v) but decodePayload did not", i, parts[i], err)
			}
			if !framesEqual([]frame{f}, []frame{want}) {
				t.Fatalf("part %d: decodePayload gave %+v, decodeText %+v", i, f, want)
			}
			if f.binary {
				if f.typ != typeMessage {
					t.Fatalf("binary frame of type %q", f.typ)
				}
			} else if f.typ < typeOpen || f.typ > typeNoop {
				t.Fatalf("frame of type %q", f.typ)
			}
		}
		// Re-encoding gives a payload that decodes to the same packets, unless a text packet holds
		// a separator (which a payload cannot carry; decoding cannot produce one either).
		again, err := decodePayload(appendPayload(nil, frames))
		if err != nil || !framesEqual(again, frames) {
			t.Fatalf("re-encoded payload of %q decodes to %+v, %v", in, again, err)
		}
	})
}

package adapter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// samePlaceholders compares a value a client sent (placeholders numbered into atts) with what came
// back from msgpack (placeholders numbered into back): equal, each placeholder pointing at the same
// bytes.
func samePlaceholders(a, b any, atts, back [][]byte) error {
	switch a := a.(type) {
	case map[string]any:
		if ph, _ := a["_placeholder"].(bool); ph {
			bm, _ := b.(map[string]any)
			num, _ := a["num"].(float64)
			bnum, _ := bm["num"].(float64)
			if ph, _ := bm["_placeholder"].(bool); !ph || int(bnum) >= len(back) || !bytes.Equal(atts[int(num)], back[int(bnum)]) {
				return fmt.Errorf("placeholder %v came back as %v", a, b)
			}
			return nil
		}
		bm, ok := b.(map[string]any)
		if !ok || len(bm) != len(a) {
			return fmt.Errorf("object %v came back as %v", a, b)
		}
		for k, v := range a {
			if err := samePlaceholders(v, bm[k], atts, back); err != nil {
				return err
			}
		}
		return nil
	case []any:
		ba, ok := b.([]any)
		if !ok || len(ba) != len(a) {
			return fmt.Errorf("array %v came back as %v", a, b)
		}
		for i := range a {
			if err := samePlaceholders(a[i], ba[i], atts, back); err != nil {
				return err
			}
		}
		return nil
	}
	if af, ok := a.(float64); ok { // -0 comes back as 0, as JSON.stringify writes it
		if bf, ok := b.(float64); ok && af == bf {
			return nil
		}
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		return fmt.Errorf("%v came back as %v", a, b)
	}
	return nil
}

// FuzzClientDataToRedis takes what a client publishes (an argument of a binary event, with its
// attachments) the way it travels to the other nodes: every value the Socket.IO decoder accepts
// from a client encodes to msgpack for Redis (nothing a client can send makes the broadcast fail),
// and decodes back to the same value with each placeholder pointing at the same bytes.
func FuzzClientDataToRedis(f *testing.F) {
	for _, s := range []string{
		`{"text":"hi"}`, `{"_placeholder":true,"num":0}`, `[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]`,
		`{"_placeholder":true,"num":0,"num":1}`, `{"num":1,"_placeholder":true}`, `{"_placeholder":false,"num":7}`,
		`{"a":{"_placeholder":true,"num":0.0}}`, `1e400`, `-0`, `12345678901234567890`, `"\ud800"`, `{"a":1,"a":2}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
	} {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, js []byte, n uint8) {
		natts := int(n)%protocol.MaxAttachments + 1
		msg := fmt.Appendf(nil, "5%d-[\"e\",%s]", natts, js)
		p, want, err := protocol.DecodeHeader(msg)
		if err != nil {
			return
		}
		atts := make([][]byte, want)
		for i := range atts {
			atts[i] = []byte(strconv.Itoa(i)) // distinct, to tell them apart
		}
		if p.Complete(atts) != nil {
			return // the client's connection is closed: nothing is broadcast
		}
		args, err := protocol.Args(p.Data)
		if err != nil || len(args) != 2 {
			return // js held more than one value: not this target's concern
		}
		var buf bytes.Buffer
		if err := jsonToMsgpack(msgpack.NewEncoder(&buf), args[1], atts); err != nil {
			t.Fatalf("%s (accepted from a client with %d attachments) does not encode for Redis: %v", args[1], want, err)
		}
		out, back, err := msgpackToJSON(buf.Bytes())
		if err != nil {
			t.Fatalf("%s encoded as %x, which does not decode: %v", args[1], buf.Bytes(), err)
		}
		var a, b any
		json.Unmarshal(args[1], &a)
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("%s came back as invalid JSON %q", args[1], out)
		}
		if err := samePlaceholders(a, b, atts, back); err != nil {
			t.Fatalf("%s → %s: %v", args[1], out, err)
		}
	})
}

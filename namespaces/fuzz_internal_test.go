package namespaces

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// FuzzPublishRequest decodes any argument of publish as the typed handler does (JSON into the
// request, then Validate): nothing panics; a refusal carries a code of the protocol; a request
// Validate lets through has a valid room, an event of 1 to 128 bytes that is neither reserved nor
// the server's own (chorus:), and either no id or one of 1 to 64 bytes.
func FuzzPublishRequest(f *testing.F) {
	for _, s := range []string{
		`{"room":"r","event":"e","data":{"a":1}}`, `{"room":"r","event":"e","data":1,"id":"x"}`, `{"room":"r","event":"e","id":null}`,
		`{"room":1}`, `{"room":"r","event":7}`, `{"room":"r","event":"disconnect"}`, `{"room":"r","event":"chorus:disconnect"}`,
		`{"room":"r","event":"e","id":5}`, `{"room":"r","event":"e","id":""}`, `{"room":"r","event":"e","id":{}}`,
		`{"room":"` + strings.Repeat("r", 129) + `","event":"e"}`, `{}`, `null`, `"r"`, `[1]`, `{"room":"r","event":"\u0000"}`,
		`{"room":"r","event":"e","data":{"_placeholder":true,"num":0}}`, `{"Room":"r","EVENT":"e"}`,
	} {
		f.Add([]byte(s))
	}
	codes := []string{sio.CodeInvalidArgument, CodeInvalidRoom, sio.CodeReservedEvent, CodeInvalidID}
	f.Fuzz(func(t *testing.T, arg []byte) {
		var req publishReq
		if json.Unmarshal(arg, &req) != nil {
			return // the wrapper answers invalid_argument
		}
		err := req.Validate()
		if err != nil {
			var e *sio.Error
			if !errors.As(err, &e) || !slices.Contains(codes, e.Code) {
				t.Fatalf("%s refused with %v", arg, err)
			}
			return
		}
		switch {
		case rooms.ValidateName(req.Room) != nil:
			t.Fatalf("%s: room %q accepted", arg, req.Room)
		case req.Event == nil || *req.Event == "" || len(*req.Event) > MaxEventLen:
			t.Fatalf("%s: event accepted", arg)
		case sio.IsReserved(*req.Event) || strings.HasPrefix(*req.Event, "chorus:"):
			t.Fatalf("%s: reserved event %q accepted", arg, *req.Event)
		case len(req.id) > adapter.MaxDedupIDLen || (req.id == "" && len(req.ID) > 0 && string(req.ID) != "null"):
			t.Fatalf("%s: id %q (raw %s) accepted", arg, req.id, req.ID)
		}
	})
}

package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/engine"
	"github.com/chorus-rt/chorus/internal/sio"
)

// FuzzAPI sends any body (and query) to every route of the HTTP API with the right key: nothing
// panics, every answer is one of the documented statuses, never a 500, and every error is the API's
// JSON error with a code.
func FuzzAPI(f *testing.F) {
	for _, s := range []string{
		`{"rooms":["a"],"event":"e","data":{"x":1}}`, `{"users":["42"],"event":"e"}`, `{"event":"e","ack_timeout":"10ms"}`,
		`{"event":"e","ack_timeout":5}`, `{"event":"e","ack_timeout":"-1s"}`, `{"event":"connect"}`, `{"event":""}`,
		`{"namespace":"/nope","event":"e"}`, `{"rooms":["` + strings.Repeat("r", 200) + `"],"event":"e"}`, `{"users":[""],"event":"e"}`,
		`{"rooms":["a"],"close":true}`, `{"sockets":["x"]}`, `{}`, `[]`, `null`, `{"rooms":"a"}`, `{"event":"e","data":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	} {
		for route := range uint8(3) {
			f.Add(route, []byte(s), "room=a")
		}
	}
	srv := sio.NewServer(sio.Options{Engine: engine.Options{MaxPayload: 4096}})
	srv.Namespace("/")
	defer srv.Close()
	h := Handler(Options{Key: "k", ReadKey: "r", MaxPayload: 4096, Server: srv})
	allowed := []int{http.StatusOK, http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusMethodNotAllowed}
	f.Fuzz(func(t *testing.T, route uint8, body []byte, query string) {
		var req *http.Request
		switch route % 3 {
		case 0:
			req = httptest.NewRequest(http.MethodPost, "/api/v1/emit", bytes.NewReader(body))
		case 1:
			req = httptest.NewRequest(http.MethodPost, "/api/v1/disconnect", bytes.NewReader(body))
		default:
			req = httptest.NewRequest(http.MethodGet, "/api/v1/sockets", nil)
			req.URL.RawQuery = query
		}
		req.Header.Set("Authorization", "Bearer k")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !slices.Contains(allowed, rec.Code) {
			t.Fatalf("%s %s answered %d %s", req.Method, req.URL, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var e struct {
				Error struct{ Code, Message string }
			}
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code == "" {
				t.Fatalf("error without a code: %d %q", rec.Code, rec.Body)
			}
		} else if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("answer is not JSON: %q", rec.Body)
		}
	})
}

// FuzzAckJSON feeds any ack a client may send (JSON the Socket.IO decoder accepted, with up to 10
// attachments) to what the API answers with: always valid JSON, binary parts as base64 strings.
func FuzzAckJSON(f *testing.F) {
	for _, s := range []string{`{"seen":true}`, `{"_placeholder":true,"num":0}`, `[{"_placeholder":true,"num":1},12345678901234567890]`,
		`{"_placeholder":true,"num":9}`, `{"_placeholder":true,"num":-1}`, `{"_placeholder":true,"num":1e3}`, `"x"`, `null`} {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, js []byte, n uint8) {
		if !json.Valid(js) {
			return // the Socket.IO decoder refuses it
		}
		atts := make([][]byte, int(n)%11)
		for i := range atts {
			atts[i] = []byte{byte(i), 0xff}
		}
		out := ackJSON(adapter.Value{JSON: js, Attachments: atts})
		if !json.Valid(out) {
			t.Fatalf("%s with %d attachments gave invalid JSON %q", js, len(atts), out)
		}
	})
}

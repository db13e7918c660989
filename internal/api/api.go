// Package api is the backend HTTP API: JSON requests that push events to rooms (docs/protocol.md).
package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/middleware"
	"github.com/chorus-rt/chorus/rooms"
)

// Options configures the API handler.
type Options struct {
	Key        string // bearer key; empty disables the API
	MaxPayload int64  // largest request body, in bytes
	Server     *sio.Server
	Logger     *slog.Logger
	// ReadKey is a second key that admits GET requests only; empty: none.
	ReadKey string
	// AuthFailures is how many requests with a wrong key one address may make per minute before
	// it gets 429; 0: no limit.
	AuthFailures float64
	// ClientIP finds a request's address (for AuthFailures).
	ClientIP middleware.ClientIP
	// Metrics counts each request by route and status; nil means none.
	Metrics interface {
		APIRequest(route string, status int, d time.Duration)
	}
}

// Routes are the API's routes: the values of the route label in the metrics and the access log
// (any other path under /api/ is "other").
var Routes = []string{"/api/v1/emit", "/api/v1/sockets", "/api/v1/disconnect"}

// Handler returns the handler for /api/. Every request is logged once (the access log: method,
// route, status, duration, remote address) and counted.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/emit", func(w http.ResponseWriter, r *http.Request) { emit(o, w, r) })
	mux.HandleFunc("/api/v1/sockets", func(w http.ResponseWriter, r *http.Request) { sockets(o, w, r) })
	mux.HandleFunc("/api/v1/disconnect", func(w http.ResponseWriter, r *http.Request) { disconnect(o, w, r) })
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "not_found", "no such API route")
	})
	// The access log is outermost, so that refusals by the key check (401, 403 for the read-only
	// key, 429 after too many failures) are logged and counted too.
	return accessLog(o, middleware.APIKey(middleware.APIKeyOptions{Key: o.Key, ReadKey: o.ReadKey, FailuresPerMinute: o.AuthFailures, ClientIP: o.ClientIP}, WriteError, mux))
}

// accessLog logs and counts each request once it is answered.
func accessLog(o Options, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		d := time.Since(start)
		route := "other"
		if slices.Contains(Routes, r.URL.Path) {
			route = r.URL.Path
		}
		if o.Metrics != nil {
			o.Metrics.APIRequest(route, sw.status, d)
		}
		o.Logger.Info("http request", "method", r.Method, "route", route, "status", sw.status,
			"duration", d.Round(time.Microsecond), "bytes", sw.bytes, "remote", r.RemoteAddr)
	})
}

// statusWriter records the status and the size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
	wrote  bool
}

func (w *statusWriter) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteError writes the API's error format: {"error":{"code","message"}}.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

type emitRequest struct {
	Namespace string          `json:"namespace"`
	Rooms     []string        `json:"rooms"`
	Users     []string        `json:"users"`
	Except    []string        `json:"except"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Volatile  bool            `json:"volatile"`
	// AckTimeout is a Go duration string; raw so that any wrong value is answered with
	// invalid_ack_timeout rather than bad_json.
	AckTimeout json.RawMessage `json:"ack_timeout"`
}

// MaxAckTimeout bounds an emit's ack_timeout: the HTTP request stays open that long at most.
const MaxAckTimeout = time.Minute

// ackTimeout reads an emit's ack_timeout: 0 when it is absent or null.
func ackTimeout(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return 0, errors.New("ack_timeout must be a string holding a Go duration, e.g. \"5s\"")
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > MaxAckTimeout {
		return 0, fmt.Errorf("ack_timeout must be a Go duration more than 0 and at most %s, e.g. \"5s\"", MaxAckTimeout)
	}
	return d, nil
}

// decodePost reads a POST's JSON body (at most o.MaxPayload bytes) into v; on any problem it answers
// the request itself (405, 413, 400) and returns false.
func decodePost(o Options, w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, o.MaxPayload))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			WriteError(w, http.StatusRequestEntityTooLarge, "payload_too_large", "the body is larger than CHORUS_MAX_PAYLOAD")
			return false
		}
		WriteError(w, http.StatusBadRequest, "bad_json", "could not read the body")
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		WriteError(w, http.StatusBadRequest, "bad_json", "the body must be a JSON object: "+err.Error())
		return false
	}
	return true
}

// resolve checks the room names of a request and finds its namespace; on a problem it answers the
// request itself (400 invalid_room or unknown_namespace) and returns false. A dynamic namespace is
// held (and created if need be: its sockets may be on other nodes) until release is called.
func resolve(o Options, w http.ResponseWriter, namespace string, roomLists ...[]string) (n *sio.Namespace, release func(), ok bool) {
	for _, list := range roomLists {
		for _, room := range list {
			if rooms.ValidateName(room) != nil {
				WriteError(w, http.StatusBadRequest, "invalid_room", rooms.ErrInvalidName.Error())
				return nil, nil, false
			}
		}
	}
	n, release, ok = o.Server.Acquire(namespace)
	if !ok {
		WriteError(w, http.StatusBadRequest, "unknown_namespace", "no namespace "+namespace)
		return nil, nil, false
	}
	return n, release, true
}

// withUsers adds the personal rooms of users to rooms; on a bad user id it answers the request
// itself (400 invalid_user) and returns false.
func withUsers(w http.ResponseWriter, rs, users []string) ([]string, bool) {
	for _, u := range users {
		if u == "" || len(u) > rooms.MaxUserLen {
			WriteError(w, http.StatusBadRequest, "invalid_user", "a user id must be a non-empty string of at most 123 bytes")
			return nil, false
		}
		rs = append(rs, rooms.UserRoom(u))
	}
	return rs, true
}

func emit(o Options, w http.ResponseWriter, r *http.Request) {
	req := emitRequest{Namespace: "/"}
	if !decodePost(o, w, r, &req) {
		return
	}
	if req.Event == "" || sio.IsReserved(req.Event) {
		WriteError(w, http.StatusBadRequest, "invalid_event", "event must be a non-empty, non-reserved event name")
		return
	}
	targets, ok := withUsers(w, req.Rooms, req.Users)
	if !ok {
		return
	}
	n, release, ok := resolve(o, w, req.Namespace, targets, req.Except)
	if !ok {
		return
	}
	defer release()
	timeout, err := ackTimeout(req.AckTimeout)
	if err != nil {
		WriteError(w, http.StatusBadRequest, "invalid_ack_timeout", err.Error())
		return
	}
	data := req.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	opts := adapter.BroadcastOptions{Rooms: targets, Except: req.Except, Volatile: req.Volatile}
	if timeout > 0 {
		emitWithAck(o, w, r, n, opts, req.Event, data, timeout)
		return
	}
	if err := n.Emit(opts, req.Event, data); err != nil {
		WriteError(w, http.StatusInternalServerError, "internal", "could not emit")
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]bool{"ok": true})
}

// emitAckResponse is the answer of an emit with ack_timeout.
type emitAckResponse struct {
	// Clients is the number of sockets the event was sent to, on the nodes that reported.
	Clients int `json:"clients"`
	// Acks holds the first argument of each ack that arrived in time, in arrival order.
	Acks []json.RawMessage `json:"acks"`
	// TimedOut is the number of those sockets whose ack did not arrive in time.
	TimedOut int `json:"timed_out"`
	// Complete is false when some node did not report its recipients in time or the cluster
	// could not be reached: its sockets are then in none of the counts.
	Complete bool `json:"complete"`
}

// emitWithAck sends the event to every selected socket on every node, each asked for an ack, and
// answers once all have acked or timeout has passed (or the caller has gone).
func emitWithAck(o Options, w http.ResponseWriter, r *http.Request, n *sio.Namespace, opts adapter.BroadcastOptions, event string, data json.RawMessage, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res, err := n.EmitWithAck(ctx, opts, event, data)
	if err != nil && !errors.Is(err, adapter.ErrTimeout) && !errors.Is(err, adapter.ErrUnavailable) {
		if o.Logger != nil {
			o.Logger.Error("emit with ack failed", "nsp", n.Name(), "event", event, "err", err)
		}
		WriteError(w, http.StatusInternalServerError, "internal", "could not emit")
		return
	}
	out := emitAckResponse{
		Clients:  res.Clients,
		Acks:     make([]json.RawMessage, 0, len(res.Acks)),
		TimedOut: max(0, res.Clients-len(res.Acks)),
		Complete: !errors.Is(err, adapter.ErrUnavailable) && res.Reported >= res.Servers,
	}
	for _, v := range res.Acks {
		out.Acks = append(out.Acks, ackJSON(v))
	}
	writeJSON(w, http.StatusOK, out)
}

// ackJSON is an ack's value as JSON: its binary parts (Socket.IO placeholders pointing into its
// attachments) become base64 strings.
func ackJSON(v adapter.Value) json.RawMessage {
	js := v.JSON
	if len(js) == 0 {
		return json.RawMessage("null")
	}
	if len(v.Attachments) == 0 {
		return js
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var val any
	if dec.Decode(&val) != nil {
		return js
	}
	var walk func(any) any
	walk = func(x any) any {
		switch x := x.(type) {
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		case map[string]any:
			if ph, _ := x["_placeholder"].(bool); ph {
				if num, ok := x["num"].(json.Number); ok {
					if i, err := num.Int64(); err == nil && i >= 0 && i < int64(len(v.Attachments)) {
						return base64.StdEncoding.EncodeToString(v.Attachments[i])
					}
				}
				return x
			}
			for k, e := range x {
				x[k] = walk(e)
			}
		}
		return x
	}
	out, err := json.Marshal(walk(val))
	if err != nil {
		return js
	}
	return out
}

// Package api is the backend HTTP API: JSON requests that push events to rooms (docs/protocol.md).
package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

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
}

// Handler returns the handler for /api/.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/emit", func(w http.ResponseWriter, r *http.Request) { emit(o, w, r) })
	mux.HandleFunc("/api/v1/sockets", func(w http.ResponseWriter, r *http.Request) { sockets(o, w, r) })
	mux.HandleFunc("/api/v1/disconnect", func(w http.ResponseWriter, r *http.Request) { disconnect(o, w, r) })
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "not_found", "no such API route")
	})
	return middleware.APIKey(middleware.APIKeyOptions{Key: o.Key, ReadKey: o.ReadKey, FailuresPerMinute: o.AuthFailures, ClientIP: o.ClientIP}, WriteError, mux)
}

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
// request itself (400 invalid_room or unknown_namespace) and returns false.
func resolve(o Options, w http.ResponseWriter, namespace string, roomLists ...[]string) (*sio.Namespace, bool) {
	for _, list := range roomLists {
		for _, room := range list {
			if rooms.ValidateName(room) != nil {
				WriteError(w, http.StatusBadRequest, "invalid_room", rooms.ErrInvalidName.Error())
				return nil, false
			}
		}
	}
	n, ok := o.Server.Lookup(namespace)
	if !ok {
		WriteError(w, http.StatusBadRequest, "unknown_namespace", "no namespace "+namespace)
		return nil, false
	}
	return n, true
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
	n, ok := resolve(o, w, req.Namespace, targets, req.Except)
	if !ok {
		return
	}
	data := req.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	if err := n.Emit(adapter.BroadcastOptions{Rooms: targets, Except: req.Except, Volatile: req.Volatile}, req.Event, data); err != nil {
		WriteError(w, http.StatusInternalServerError, "internal", "could not emit")
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]bool{"ok": true})
}

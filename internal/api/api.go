// Package api is the backend HTTP API: JSON requests that push events to rooms (docs/protocol.md).
package api

import (
	"encoding/json"
	"errors"
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
	return accessLog(o, middleware.APIKey(o.Key, WriteError, mux))
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

func emit(o Options, w http.ResponseWriter, r *http.Request) {
	req := emitRequest{Namespace: "/"}
	if !decodePost(o, w, r, &req) {
		return
	}
	if req.Event == "" || sio.IsReserved(req.Event) {
		WriteError(w, http.StatusBadRequest, "invalid_event", "event must be a non-empty, non-reserved event name")
		return
	}
	n, ok := resolve(o, w, req.Namespace, req.Rooms, req.Except)
	if !ok {
		return
	}
	data := req.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	if err := n.Emit(adapter.BroadcastOptions{Rooms: req.Rooms, Except: req.Except, Volatile: req.Volatile}, req.Event, data); err != nil {
		WriteError(w, http.StatusInternalServerError, "internal", "could not emit")
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]bool{"ok": true})
}

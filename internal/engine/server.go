// Package engine is chorus's Engine.IO v4 server: HTTP long-polling, WebSocket, the upgrade from one to
// the other, and heartbeats. It owns the transport layer that the socket.io library got wrong (see
// docs/ARCHITECTURE.md): every session has one lock, packets leave in the order they were queued, and
// incoming packets reach the Handler one at a time.
package engine

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Transport names, as in the `transport` query parameter.
const (
	Polling   = "polling"
	WebSocket = "websocket"
)

// Options configures a Server. The zero value of each field is documented.
type Options struct {
	// PingInterval is how often the server pings each client; 0 means 25s.
	PingInterval time.Duration
	// PingTimeout is how long a client has to answer a ping before it is closed; 0 means 20s.
	PingTimeout time.Duration
	// MaxPayload is the largest WebSocket message and polling POST body, in bytes; 0 means 1e6.
	MaxPayload int64
	// MaxBuffered caps the output waiting to be written to one session, in bytes as they go on the
	// wire; a session over it is closed at once with ReasonSlowConsumer and its queue dropped. 0
	// means 1 MiB.
	MaxBuffered int
	// Transports lists the enabled transports; nil means both.
	Transports []string
	// CORSOrigins lists the origins that may connect from a browser besides the server's own; "*" allows
	// any. A request whose Origin is not allowed is refused with 403 on every transport.
	CORSOrigins []string
	// AllowRequest, when set, is asked before a new session is created; an error refuses the handshake
	// with 403 (or the status of an error with an HTTPStatus() int method) and the error's text. It
	// runs on the request's goroutine. If the error (or one it wraps) has a method Reason() string,
	// that short constant is the refusal's reason in logs and metrics; otherwise the reason is
	// "forbidden".
	AllowRequest func(r *http.Request) error
	// Admit, when set, is asked after AllowRequest agreed to a new session, on the request's
	// goroutine, and may reserve what the session will hold (e.g. a place under a connection limit).
	// An error refuses the handshake like AllowRequest's. On success the returned release function
	// (nil for none) is called exactly once: when the session has ended, or at once if it could not
	// be created after all.
	Admit func(r *http.Request) (release func(), err error)
	// OnRefuse, when set, is told of every handshake (a request without a session id) the server
	// refuses, with its reason: "origin", "transport", "version", "method", "bad_request", or
	// AllowRequest's or Admit's (see above). It runs on the request's goroutine and must not block.
	OnRefuse func(reason string)
	// OnOpen is called once per new session, before its open packet is sent; the Handler it returns
	// receives the session's packets. Required.
	OnOpen func(c *Conn) Handler
	// Logger receives transport-level events; nil discards them.
	Logger *slog.Logger
}

// Handler receives one session's incoming messages. OnMessage is never called concurrently for one
// session, and never after OnClose. OnClose is called exactly once, on its own goroutine, after any
// OnMessage in progress has returned. OnUpgrade is called when the session moves to WebSocket.
type Handler interface {
	OnMessage(data []byte, binary bool)
	OnUpgrade(transport string)
	OnClose(reason string)
}

// HeartbeatHandler is implemented by Handlers that want to know what the client has received.
// BeforePing runs just before each ping is queued, on the heartbeat timer's goroutine; OnPong runs
// when the client answers that ping, on the reader. Output leaves in queue order, so a pong tells
// that the client received everything queued before BeforePing returned.
type HeartbeatHandler interface {
	BeforePing()
	OnPong()
}

// Server is an http.Handler for the Engine.IO endpoint (mount it at /socket.io/).
type Server struct {
	opts     Options
	log      *slog.Logger
	upgrades []string
	writers  *writers

	mu    sync.RWMutex
	conns map[string]*Conn

	lastLoadWarn atomic.Int64 // unix nanoseconds of the last load refusal (429, 503) logged at warn
}

// NewServer returns a Server with opts' zero values replaced by their defaults.
func NewServer(opts Options) *Server {
	if opts.PingInterval <= 0 {
		opts.PingInterval = 25 * time.Second
	}
	if opts.PingTimeout <= 0 {
		opts.PingTimeout = 20 * time.Second
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = 1e6
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = 1 << 20
	}
	if opts.Transports == nil {
		opts.Transports = []string{Polling, WebSocket}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger, writers: newWriters(), conns: make(map[string]*Conn)}
	if s.enabled(Polling) && s.enabled(WebSocket) {
		s.upgrades = []string{WebSocket}
	} else {
		s.upgrades = []string{}
	}
	return s
}

// Engine.IO error codes, answered as JSON {"code","message"} with status 400 (403 for codeForbidden).
const (
	codeUnknownTransport = 0
	codeUnknownSID       = 1
	codeBadHandshake     = 2
	codeBadRequest       = 3
	codeForbidden        = 4
	codeBadVersion       = 5
)

var codeMessages = [...]string{"Transport unknown", "Session ID unknown", "Bad handshake method", "Bad request", "Forbidden", "Unsupported protocol version"}

func writeError(w http.ResponseWriter, code int, message string) {
	status := http.StatusBadRequest
	if code == codeForbidden {
		status = http.StatusForbidden
	}
	writeErrorStatus(w, status, code, message)
}

func writeErrorStatus(w http.ResponseWriter, status, code int, message string) {
	if message == "" {
		message = codeMessages[code]
	}
	body, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, message})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

func (s *Server) enabled(transport string) bool { return slices.Contains(s.opts.Transports, transport) }

// originAllowed reports whether a request may be served: non-browser clients send no Origin; browsers
// may come from the server's own origin or from a configured one.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.opts.CORSOrigins {
		if o == "*" || o == origin {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		s.refuse(w, r, codeForbidden, "origin not allowed: list it in CHORUS_CORS_ORIGINS (or run with CHORUS_MODE=development)", "origin")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	q := r.URL.Query()
	transport := q.Get("transport")
	if !s.enabled(transport) {
		s.refuse(w, r, codeUnknownTransport, "", "transport")
		return
	}
	if q.Get("EIO") != "4" {
		s.refuse(w, r, codeBadVersion, "", "version")
		return
	}
	sid := q.Get("sid")
	if transport == WebSocket {
		s.serveWebSocket(w, r, sid)
		return
	}
	if sid == "" {
		if r.Method != http.MethodGet {
			s.refuse(w, r, codeBadHandshake, "", "method")
			return
		}
		c := s.open(w, r, Polling)
		if c == nil {
			return
		}
		s.servePoll(w, r, c)
		return
	}
	c := s.lookup(sid)
	if c == nil {
		writeError(w, codeUnknownSID, "")
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.servePoll(w, r, c)
	case http.MethodPost:
		s.servePost(w, r, c)
	default:
		writeError(w, codeBadRequest, "")
	}
}

func (s *Server) lookup(sid string) *Conn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.conns[sid]
}

// admit runs the AllowRequest and Admit checks of a new session; it answers the request itself and
// returns false when the handshake is refused.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	if s.opts.AllowRequest != nil {
		if err := s.opts.AllowRequest(r); err != nil {
			s.refuseErr(w, r, err)
			return nil, false
		}
	}
	if s.opts.Admit != nil {
		release, err := s.opts.Admit(r)
		if err != nil {
			s.refuseErr(w, r, err)
			return nil, false
		}
		return release, true
	}
	return nil, true
}

// open creates a session after the admission checks; it answers the request itself and returns nil
// when the handshake is refused.
func (s *Server) open(w http.ResponseWriter, r *http.Request, transport string) *Conn {
	release, ok := s.admit(w, r)
	if !ok {
		return nil
	}
	c := newConn(s, newSID(), r, transport)
	c.release = release
	// The open packet is queued first, before OnOpen can Send: appended after OnOpen, it came after
	// any message OnOpen sent, and the client's first packet was not the handshake.
	c.out = append(c.out, frame{typ: typeOpen, data: openPacket(c.id, s.upgradesFor(transport), s.opts)})
	s.register(c)

	c.mu.Lock()
	c.schedulePingLocked()
	c.mu.Unlock()
	s.log.Debug("engine open", "conn", c.id, "transport", transport, "remote", r.RemoteAddr)
	return c
}

// register makes c visible to lookups and to Close, and sets its Handler. Close runs OnClose under
// inMu, so inMu is taken before c is visible and held until the Handler is set: a drain reaching a
// session whose OnOpen is still running then waits for it instead of calling OnClose on a nil
// Handler (which crashed the process).
func (s *Server) register(c *Conn) {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	s.mu.Lock()
	s.conns[c.id] = c
	s.mu.Unlock()
	c.handler = s.opts.OnOpen(c)
}

// refuseErr answers a handshake that AllowRequest or Admit refused with err: 403, or the status of
// an error with an HTTPStatus() int method. The reason is the error's Reason() string, or
// "forbidden".
func (s *Server) refuseErr(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusForbidden
	var hs interface{ HTTPStatus() int }
	if errors.As(err, &hs) {
		status = hs.HTTPStatus()
	}
	reason := "forbidden"
	var rr interface{ Reason() string }
	if errors.As(err, &rr) {
		reason = rr.Reason()
	}
	s.refuseStatus(w, r, status, codeForbidden, err.Error(), reason)
}

// refuse answers a request with an Engine.IO error. When it is a handshake (no sid), the refusal is
// logged, once, and reported to OnRefuse.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, message, reason string) {
	status := http.StatusBadRequest
	if code == codeForbidden {
		status = http.StatusForbidden
	}
	s.refuseStatus(w, r, status, code, message, reason)
}

// refuseStatus is refuse with an HTTP status. A refusal for load (429 or 503: a limit on
// connections) is logged at warn at most every 10 s and at debug otherwise, so that a flood does
// not flood the log too; it is counted all the same.
func (s *Server) refuseStatus(w http.ResponseWriter, r *http.Request, status, code int, message, reason string) {
	writeErrorStatus(w, status, code, message)
	q := r.URL.Query()
	if q.Get("sid") != "" {
		return
	}
	attrs := []any{"reason", reason, "transport", q.Get("transport"), "remote", r.RemoteAddr}
	if reason == "origin" {
		attrs = append(attrs, "origin", r.Header.Get("Origin"))
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		attrs = append(attrs, "status", status, "err", message)
		now := time.Now().UnixNano()
		last := s.lastLoadWarn.Load()
		if now-last >= int64(10*time.Second) && s.lastLoadWarn.CompareAndSwap(last, now) {
			s.log.Warn("handshake refused (further refusals for load in the next 10s are logged at debug)", attrs...)
		} else {
			s.log.Debug("handshake refused", attrs...)
		}
	} else {
		s.log.Info("handshake refused", attrs...)
	}
	if s.opts.OnRefuse != nil {
		s.opts.OnRefuse(reason)
	}
}

func (s *Server) upgradesFor(transport string) []string {
	if transport == Polling {
		return s.upgrades
	}
	return []string{}
}

func (s *Server) remove(c *Conn) {
	s.mu.Lock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	s.mu.Unlock()
}

// Len returns the number of open sessions.
func (s *Server) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.conns)
}

// Close closes every session with reason "server shutting down". Graceful draining happens above this
// layer; Close is its last step.
func (s *Server) Close() {
	for _, c := range s.Conns() {
		c.Close("server shutting down")
	}
}

func newSID() string {
	var b [15]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

var errOverlap = errors.New("overlapping request from client")

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// openPacket encodes the handshake that opens a session.
func openPacket(sid string, upgrades []string, o Options) []byte {
	b, _ := json.Marshal(struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int64    `json:"maxPayload"`
	}{sid, upgrades, o.PingInterval.Milliseconds(), o.PingTimeout.Milliseconds(), o.MaxPayload})
	return b
}

// Conns returns the open sessions (not those already closing).
func (s *Server) Conns() []*Conn {
	s.mu.RLock()
	all := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		all = append(all, c)
	}
	s.mu.RUnlock()
	out := all[:0]
	for _, c := range all {
		c.mu.Lock()
		open := c.state == stateOpen
		c.mu.Unlock()
		if open {
			out = append(out, c)
		}
	}
	return out
}

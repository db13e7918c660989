// Package sio is chorus's Socket.IO v5 layer and the only place that knows the wire protocol: it
// turns Engine.IO sessions into namespaced sockets, decodes requests into typed handlers that run one at
// a time per socket in arrival order, recovers their panics, acks with coded errors, and encodes each
// broadcast once for all its recipients. Everything above it (namespaces/, rooms/, middleware/) sees
// typed handlers and never `...any`.
package sio

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/engine"
)

// Options configures a Server.
type Options struct {
	// Engine holds the transport settings; its OnOpen and AllowRequest are set by the Server
	// (AllowRequest is wrapped: draining refuses new sessions before it is asked).
	Engine engine.Options
	// Adapter creates each namespace's adapter; nil means adapter.NewMemory.
	Adapter adapter.Factory
	// ConnectTimeout closes a session that joins no namespace in time; 0 means 45s (as in Node).
	ConnectTimeout time.Duration
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
	// Metrics receives counts and timings (see Metrics); nil means none.
	Metrics Metrics
}

// Server is a Socket.IO server; it is an http.Handler for the /socket.io/ path.
type Server struct {
	opts    Options
	log     *slog.Logger
	engine  *engine.Server
	metrics Metrics
	monitor Monitor // nil unless SetMonitor

	draining   atomic.Bool
	maxPayload int64 // the engine's: also the most a packet and its attachments may add up to

	mu       sync.RWMutex
	static   map[string]*Namespace
	patterns []pattern
}

type pattern struct {
	match func(name string) bool
	setup func(*Namespace)
}

// NewServer creates a Server with the namespace "/" already in place.
func NewServer(opts Options) *Server {
	if opts.Adapter == nil {
		opts.Adapter = adapter.NewMemory
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 45 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = noMetrics{}
	}
	s := &Server{opts: opts, log: opts.Logger, metrics: opts.Metrics, static: make(map[string]*Namespace), maxPayload: opts.Engine.MaxPayload}
	if s.maxPayload <= 0 {
		s.maxPayload = 1e6 // the engine's default
	}
	eo := opts.Engine
	allow := eo.AllowRequest
	eo.AllowRequest = func(r *http.Request) error {
		if s.draining.Load() {
			return errDraining
		}
		if allow != nil {
			return allow(r)
		}
		return nil
	}
	onRefuse := eo.OnRefuse
	eo.OnRefuse = func(reason string) {
		s.metrics.HandshakeRefused(reason)
		if onRefuse != nil {
			onRefuse(reason)
		}
	}
	eo.OnOpen = func(c *engine.Conn) engine.Handler { return newClient(s, c) }
	if eo.Logger == nil {
		eo.Logger = opts.Logger
	}
	s.engine = engine.NewServer(eo)
	s.Namespace("/")
	return s
}

type drainingError struct{}

func (drainingError) Error() string { return "server is shutting down" }

// Reason is the refusal's reason in logs and metrics (engine.Options.AllowRequest).
func (drainingError) Reason() string { return "draining" }

// HTTPStatus is 503: the node is going away, another may serve the client. A load balancer that
// passes a 503 on to the next node (nginx: proxy_next_upstream http_503) moves the reconnections
// of the clients a drain closes to the other nodes at once, spread as the drain closes them;
// with a 403 they retried this node, with their backoff, until it exited, and then came all at
// once.
func (drainingError) HTTPStatus() int { return http.StatusServiceUnavailable }

var errDraining error = drainingError{}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

// Namespace returns the namespace called name, creating it if needed.
func (s *Server) Namespace(name string) *Namespace {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.static[name]; ok {
		return n
	}
	n := newNamespace(s, name)
	s.static[name] = n
	return n
}

// NamespaceFunc declares dynamic namespaces: the first time a client or the server asks for a name
// that match accepts, the namespace is created and setup configures it before anyone can use it.
// Patterns are tried in the order they were declared, after the exact names.
func (s *Server) NamespaceFunc(match func(name string) bool, setup func(*Namespace)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patterns = append(s.patterns, pattern{match, setup})
}

// Lookup returns the namespace called name, creating a dynamic one if a pattern accepts the name.
func (s *Server) Lookup(name string) (*Namespace, bool) {
	s.mu.RLock()
	n, ok := s.static[name]
	s.mu.RUnlock()
	if ok {
		return n, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.static[name]; ok {
		return n, true
	}
	for _, p := range s.patterns {
		if p.match(name) {
			n := newNamespace(s, name)
			p.setup(n)
			s.static[name] = n
			return n, true
		}
	}
	return nil, false
}

// Namespaces returns every namespace created so far.
func (s *Server) Namespaces() []*Namespace {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Namespace, 0, len(s.static))
	for _, n := range s.static {
		out = append(out, n)
	}
	return out
}

// Sessions returns the number of open Engine.IO sessions.
func (s *Server) Sessions() int { return s.engine.Len() }

// Drain refuses new sessions, then closes the open ones in batches spread evenly over window, so that
// their clients reconnect elsewhere without a storm; it returns when every session is closed or ctx
// is done, and then closes whatever is left at once.
func (s *Server) Drain(ctx context.Context, window time.Duration) {
	s.draining.Store(true)
	conns := s.engine.Conns()
	const batches = 20
	per := (len(conns) + batches - 1) / batches
	if per == 0 {
		per = 1
	}
	n := (len(conns) + per - 1) / per
	tick := time.Duration(0)
	if n > 1 {
		tick = window / time.Duration(n)
	}
	s.log.Info("draining", "sessions", len(conns), "window", window)
	for i := 0; i < len(conns); i += per {
		if i > 0 && tick > 0 {
			select {
			case <-ctx.Done():
				s.engine.Close()
				return
			case <-time.After(tick):
			}
		}
		for _, c := range conns[i:min(i+per, len(conns))] {
			c.Close("server shutting down")
		}
	}
	s.engine.Close()
}

// Draining reports whether Drain has started.
func (s *Server) Draining() bool { return s.draining.Load() }

// Close closes every session at once and every namespace's adapter.
func (s *Server) Close() error {
	s.draining.Store(true)
	s.engine.Close()
	var first error
	for _, n := range s.Namespaces() {
		if err := n.adapter.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func newSocketID() string {
	var b [15]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

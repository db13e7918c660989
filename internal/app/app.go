// Package app wires chorus together in one readable function: config → logger → metrics → adapter →
// server → namespaces → admin → HTTP mux → serve, and the ordered shutdown.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/admin"
	"github.com/chorus-rt/chorus/internal/api"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/engine"
	"github.com/chorus-rt/chorus/internal/metrics"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/middleware"
	"github.com/chorus-rt/chorus/namespaces"
	"github.com/chorus-rt/chorus/rooms"
	"github.com/chorus-rt/chorus/web"
)

// Version is set at build time with -ldflags "-X github.com/chorus-rt/chorus/internal/app.Version=…".
var Version = "dev"

// shutdownGrace is how long the HTTP server gets, after the drain window, to finish requests.
const shutdownGrace = 3 * time.Second

// Run runs chorus until ctx is done, then drains and returns. args exclude the program name.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if cfg.CheckOnly {
		fmt.Fprintln(stderr, "configuration ok")
		return nil
	}
	log := newLogger(cfg, stderr)

	// No TCP keepalive: Engine.IO heartbeats find dead peers, and the keepalive options cost four
	// setsockopt calls per accepted connection.
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	n := build(cfg, log)
	srv := n.srv
	hs := HTTPServer(n.handler, log)
	serveErr := make(chan error, 2)
	var ms *http.Server
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			srv.Close()
			return fmt.Errorf("listen for metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", n.metrics)
		ms = HTTPServer(mux, log)
		log.Info("metrics listening", "addr", mln.Addr().String(), "path", "/metrics")
		go func() { serveErr <- ms.Serve(mln) }()
	}
	start := time.Now()
	nodeID := NodeID(cfg)
	log.Info("listening", "addr", ln.Addr().String(), "version", Version, "go", runtime.Version(), "pid", os.Getpid(),
		"transports", cfg.Transports, "node", nodeID, "redis", cfg.RedisURL != "", "admin_ui", cfg.AdminEnabled())
	if cfg.APIKey == "" {
		log.Warn("HTTP API disabled: set CHORUS_API_KEY to enable /api/v1/emit")
	}
	switch {
	case cfg.Mode == "development" && len(cfg.CORSOrigins) == 0:
		log.Warn("development mode: browsers from any origin may connect (set CHORUS_CORS_ORIGINS, or CHORUS_MODE=production)")
	case len(cfg.CORSOrigins) == 1 && cfg.CORSOrigins[0] == "*":
		log.Warn("CHORUS_CORS_ORIGINS=*: browsers from any origin may connect")
	}
	if cfg.JWT() {
		log.Info("client tokens verified", "hs256", cfg.JWTSecret != "", "keys", cfg.JWTKeys, "issuer", cfg.JWTIssuer, "audience", cfg.JWTAudience)
	}

	go func() { serveErr <- hs.Serve(ln) }()
	// The chorus:stats room's ticker; it stops before the drain.
	statsCtx, stopStats := context.WithCancel(ctx)
	statsDone := make(chan struct{})
	go func() {
		defer close(statsDone)
		namespaces.RunStats(statsCtx, srv, namespaces.StatsOptions{Node: nodeID, Logger: log})
	}()
	defer func() {
		stopStats()
		<-statsDone
	}()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Drain: readiness goes false and new sessions are refused at once; open ones are closed in
	// batches over the drain window; then the HTTP server stops.
	log.Info("shutting down", "drain_timeout", cfg.DrainTimeout)
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout+time.Second)
	srv.Drain(drainCtx, cfg.DrainTimeout)
	cancel()
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		hs.Close()
	}
	if ms != nil {
		ms.Close()
	}
	err = srv.Close()
	log.Info("stopped", "version", Version, "uptime", time.Since(start).Round(time.Second))
	return err
}

// Timeouts of the HTTP server's connections (not of its requests: a long-polling GET waits up to a
// ping interval, and a WebSocket lives on after its handshake).
var (
	// readHeaderTimeout bounds how long a connection may take to send a request's headers, so
	// that connections which never send a whole request (slowloris) are closed.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout bounds how long a keep-alive connection may wait for its next request. Without
	// it, a connection that made one request and then stayed silent held a goroutine and its
	// buffers forever, outside every per-address limit (those count sessions, not connections).
	idleTimeout = time.Minute
)

// HTTPServer returns the HTTP server chorus serves handler with (its timeouts above; net/http's
// errors logged at debug).
func HTTPServer(handler http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// New builds the Socket.IO server and the HTTP handler of a configuration; tests use it to run chorus
// in-process. With CHORUS_REDIS_URL set, the namespaces get the Redis adapter; its connection closes
// with the server (Server.Close closes the adapters, the last one closes the connection). The
// handler serves /metrics unless CHORUS_METRICS_ADDR moves it (Run serves it there).
func New(cfg config.Config, log *slog.Logger) (*sio.Server, http.Handler) {
	n := build(cfg, log)
	return n.srv, n.handler
}

// node is one chorus server: the Socket.IO server, the main HTTP handler and the metrics handler.
type node struct {
	srv     *sio.Server
	handler http.Handler
	metrics http.Handler
}

func build(cfg config.Config, log *slog.Logger) node {
	// Metrics go to a registry of this server's own (tests run several in one process).
	reg := metrics.NewRegistry(Version)
	names := make([]string, 0, len(cfg.Namespaces))
	for _, nc := range cfg.Namespaces {
		names = append(names, nc.Name)
	}
	// A fresh registry holds nothing New's metrics could clash with, so this cannot fail.
	m, err := metrics.New(reg, metrics.Options{Namespaces: names})
	if err != nil {
		log.Error("metrics disabled", "err", err)
		m = nil
	}

	var cluster *adapter.Redis
	if cfg.RedisURL != "" {
		var err error
		cluster, err = adapter.NewRedis(adapter.RedisOptions{
			URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, RequestTimeout: cfg.RedisRequestTimeout, Logger: log,
			Streams: cfg.RedisMode == "streams", StreamMaxLen: int64(cfg.RedisStreamMaxLen), DedupWindow: cfg.DedupWindow,
		})
		if err != nil { // Run validates the configuration first, so only an unvalidated one gets here
			log.Error("redis adapter disabled: this node serves its own clients only", "err", err)
		}
	}
	var factory adapter.Factory
	// Publishes with an id are deduplicated in memory on a single node; in a cluster the Redis
	// adapter claims the id in Redis with the broadcast itself (adapter.Committer), so that a
	// retry reaching another node is recognised.
	var dedup adapter.Deduper = adapter.NewMemoryDedup(adapter.MemoryDedupOptions{Window: cfg.DedupWindow, MaxIDs: cfg.DedupMaxIDs, Logger: log})
	if cluster != nil {
		factory = cluster.Factory
	}
	clientIP, err := middleware.NewClientIP(cfg.TrustedProxies)
	if err != nil { // validated in Run
		log.Error("trusted proxies ignored", "err", err)
	}
	guard := middleware.NewConnGuard(middleware.ConnLimits{
		HandshakeRate: cfg.HandshakeRate, HandshakeBurst: cfg.HandshakeBurst,
		MaxPerAddr: cfg.MaxConnsPerIP, MaxTotal: cfg.MaxConns,
	}, clientIP)
	origins := cfg.CORSOrigins
	if cfg.Mode == "development" && len(origins) == 0 {
		origins = []string{"*"}
	}
	srv := sio.NewServer(sio.Options{
		Engine: engine.Options{
			PingInterval: cfg.PingInterval,
			PingTimeout:  cfg.PingTimeout,
			MaxPayload:   cfg.MaxPayload,
			MaxBuffered:  int(cfg.MaxBuffered),
			Transports:   cfg.Transports,
			CORSOrigins:  origins,
			Admit:        guard.Admit,
		},
		Adapter: factory,
		Logger:  log,
		Metrics: sioMetrics(m),
	})
	setupNamespaces(srv, cfg, authenticator(cfg, log), dedup, log)
	if cluster != nil && m != nil {
		if err := m.WatchCluster(cluster); err != nil {
			log.Error("redis adapter metrics disabled", "err", err)
		}
	}
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: promLogger{log}})

	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	apiOpts := api.Options{
		Key: cfg.APIKey, ReadKey: cfg.APIReadKey, AuthFailures: cfg.APIAuthFailures, ClientIP: clientIP,
		MaxPayload: cfg.MaxPayload, Server: srv, Logger: log,
	}
	if m != nil {
		apiOpts.Metrics = m
	}
	mux.Handle("/api/", api.Handler(apiOpts))
	if cfg.MetricsAddr == "" {
		mux.Handle("GET /metrics", metricsHandler)
	}
	if cfg.AdminEnabled() {
		ao := admin.Options{Username: cfg.AdminUsername, Password: cfg.AdminPassword, Events: cfg.AdminEvents, Logger: log}
		if m != nil {
			ao.Totals = m.Totals
		}
		admin.Register(srv, ao)
		ui := admin.UIHandler(cfg.AdminUIDir)
		mux.Handle("/admin/", ui)
		mux.Handle("/admin", ui)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if srv.Draining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		if cluster != nil {
			readyRedis(w, cluster.Status())
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("/", web.Handler(cfg.ClientDir))
	return node{srv: srv, handler: mux, metrics: metricsHandler}
}

// NodeID is the node's name in its stats: cfg.NodeID, or "<hostname>-<pid>" when that is empty.
func NodeID(cfg config.Config) string {
	if cfg.NodeID != "" {
		return cfg.NodeID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "chorus"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// sioMetrics is m as the server's metrics; nil (none) if m is.
func sioMetrics(m *metrics.Metrics) sio.Metrics {
	if m == nil {
		return nil
	}
	return m
}

// promLogger sends promhttp's errors (a collector that failed during a scrape) to the log.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error("metrics: " + fmt.Sprint(v...)) }

// readyRedis answers /readyz for a node in a Redis cluster. Redis being down is reported but stays
// 200: every node shares the one Redis, so a 503 would take all of them out of the load balancer at
// once, while each can still serve its own clients (cross-node delivery resumes when Redis returns).
// The body and the X-Chorus-Redis header say "degraded" / "down" so that monitoring sees it.
func readyRedis(w http.ResponseWriter, st adapter.RedisStatus) {
	since := st.Since.UTC().Format(time.RFC3339)
	if st.Up {
		w.Header().Set("X-Chorus-Redis", "up")
		fmt.Fprintf(w, "ok\nredis: up since %s\n", since)
		return
	}
	w.Header().Set("X-Chorus-Redis", st.State)
	fmt.Fprintf(w, "degraded\nredis: %s since %s; serving local clients only (dropped %d messages so far)\n", st.State, since, st.Dropped)
}

// setupNamespaces installs, on "/" and on every configured namespace, connection-state recovery
// where it is on, token authentication (per the namespace's auth mode), the per-socket event limit
// and the client protocol; names with '*' become dynamic namespaces set up on first use.
func setupNamespaces(srv *sio.Server, cfg config.Config, authn middleware.Authenticator, dedup adapter.Deduper, log *slog.Logger) {
	setup := func(nc config.Namespace) func(*sio.Namespace) {
		policy := rooms.Policy{Join: nc.Join, Publish: nc.Publish, MaxRooms: cfg.MaxRooms}
		mode := middleware.AuthMode(cfg.AuthMode(nc))
		if mode != middleware.AuthNone && authn == nil { // only without validation: stay closed
			authn = refuseAll{}
		}
		return func(n *sio.Namespace) {
			if o, ok := recoveryOptions(cfg, nc); ok {
				n.EnableRecovery(o)
			}
			middleware.InstallAuth(n, middleware.AuthOptions{Authenticator: authn, Mode: mode, Leeway: cfg.JWTLeeway, Logger: log})
			middleware.EventLimit(n, cfg.RateEvents, cfg.RateBurst, log)
			namespaces.Register(n, policy, dedup, log)
		}
	}
	root := false
	for _, nc := range cfg.Namespaces {
		if rooms.IsPattern(nc.Name) {
			pattern := nc.Name
			srv.NamespaceFunc(func(name string) bool { return rooms.Match(pattern, name) }, setup(nc))
			continue
		}
		root = root || nc.Name == "/"
		setup(nc)(srv.Namespace(nc.Name))
	}
	if !root {
		setup(config.Namespace{Name: "/"})(srv.Namespace("/"))
	}
}

// recoveryOptions returns the connection-state recovery of namespace nc, if it is on: "/" takes it
// from the recovery settings, others from their recovery key.
func recoveryOptions(cfg config.Config, nc config.Namespace) (adapter.RecoveryOptions, bool) {
	if nc.Name == "/" {
		return adapter.RecoveryOptions{MaxDisconnection: cfg.RecoveryMaxDisconnection, MaxPackets: int(cfg.RecoveryMaxPackets)}, cfg.Recovery
	}
	if r := nc.Recovery; r != nil && r.Enabled {
		return adapter.RecoveryOptions{MaxDisconnection: r.MaxDisconnection, MaxPackets: int(r.MaxPackets)}, true
	}
	return adapter.RecoveryOptions{}, false
}

// authenticator returns the verifier of client tokens, nil without a JWT secret or key. A key file
// that cannot be read (only an unvalidated configuration gets here: Run validates it) leaves one that
// refuses every token, so that a namespace requiring tokens stays closed.
func authenticator(cfg config.Config, log *slog.Logger) middleware.Authenticator {
	if !cfg.JWT() {
		return nil
	}
	o := middleware.JWTOptions{Secret: []byte(cfg.JWTSecret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, Leeway: cfg.JWTLeeway}
	var err error
	if cfg.JWTKeys != "" {
		o.Keys, err = middleware.LoadKeys(cfg.JWTKeys)
	}
	var a *middleware.JWT
	if err == nil {
		a, err = middleware.NewJWT(o)
	}
	if err != nil {
		log.Error("client tokens cannot be verified: every token is refused", "err", err)
		return refuseAll{}
	}
	return a
}

type refuseAll struct{}

func (refuseAll) Verify(string) (middleware.Identity, error) {
	return middleware.Identity{}, sio.Errorf(middleware.CodeInvalidToken, "the server cannot verify tokens")
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

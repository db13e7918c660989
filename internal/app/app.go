// Package app wires chorus together in one readable function: config → logger → server → namespaces
// → HTTP mux → serve, and the ordered shutdown.
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
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/api"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/engine"
	"github.com/chorus-rt/chorus/internal/sio"
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
	srv, handler := New(cfg, log)
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	start := time.Now()
	node := NodeID(cfg)
	log.Info("listening", "addr", ln.Addr().String(), "version", Version, "transports", cfg.Transports, "node", node)
	if cfg.APIKey == "" {
		log.Warn("HTTP API disabled: set CHORUS_API_KEY to enable /api/v1/emit")
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	// The chorus:stats room's ticker; it stops before the drain.
	statsCtx, stopStats := context.WithCancel(ctx)
	statsDone := make(chan struct{})
	go func() {
		defer close(statsDone)
		namespaces.RunStats(statsCtx, srv, namespaces.StatsOptions{Node: node, Logger: log})
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
	err = srv.Close()
	log.Info("stopped", "version", Version, "uptime", time.Since(start).Round(time.Second))
	return err
}

// New builds the Socket.IO server and the HTTP handler of a configuration; tests use it to run chorus
// in-process. With CHORUS_REDIS_URL set, the namespaces get the Redis adapter; its connection closes
// with the server (Server.Close closes the adapters, the last one closes the connection).
func New(cfg config.Config, log *slog.Logger) (*sio.Server, http.Handler) {
	var cluster *adapter.Redis
	if cfg.RedisURL != "" {
		var err error
		cluster, err = adapter.NewRedis(adapter.RedisOptions{
			URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, RequestTimeout: cfg.RedisRequestTimeout, Logger: log,
		})
		if err != nil { // Run validates the configuration first, so only an unvalidated one gets here
			log.Error("redis adapter disabled: this node serves its own clients only", "err", err)
		}
	}
	var factory adapter.Factory
	// Publishes with an id are deduplicated in Redis when the node is in a cluster (a retry may
	// reach another node), in memory otherwise.
	var dedup adapter.Deduper = adapter.NewMemoryDedup(adapter.MemoryDedupOptions{Window: cfg.DedupWindow, MaxIDs: cfg.DedupMaxIDs, Logger: log})
	if cluster != nil {
		factory = cluster.Factory
		dedup = cluster.Deduper(cfg.DedupWindow)
	}
	srv := sio.NewServer(sio.Options{
		Engine: engine.Options{
			PingInterval: cfg.PingInterval,
			PingTimeout:  cfg.PingTimeout,
			MaxPayload:   cfg.MaxPayload,
			MaxBuffered:  int(cfg.MaxBuffered),
			Transports:   cfg.Transports,
			CORSOrigins:  cfg.CORSOrigins,
		},
		Adapter: factory,
		Logger:  log,
	})
	setupNamespaces(srv, cfg.Namespaces, dedup, log)

	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	mux.Handle("/api/", api.Handler(api.Options{Key: cfg.APIKey, MaxPayload: cfg.MaxPayload, Server: srv, Logger: log}))
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
	return srv, mux
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

// setupNamespaces installs the client protocol on "/" and on every configured namespace; names with
// '*' become dynamic namespaces created on first use.
func setupNamespaces(srv *sio.Server, cfgs []config.Namespace, dedup adapter.Deduper, log *slog.Logger) {
	root := false
	for _, nc := range cfgs {
		policy := rooms.Policy{Join: nc.Join, Publish: nc.Publish}
		if rooms.IsPattern(nc.Name) {
			pattern := nc.Name
			srv.NamespaceFunc(func(name string) bool { return rooms.Match(pattern, name) },
				func(n *sio.Namespace) { namespaces.Register(n, policy, dedup, log) })
			continue
		}
		root = root || nc.Name == "/"
		namespaces.Register(srv.Namespace(nc.Name), policy, dedup, log)
	}
	if !root {
		namespaces.Register(srv.Namespace("/"), rooms.Policy{}, dedup, log)
	}
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

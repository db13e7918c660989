// Command conformance serves what the official protocol suites (socketio/engine.io-protocol and
// socketio/socket.io-protocol, folder test-suite/) expect, on chorus's own engine and Socket.IO
// wrapper with the product's settings: `make conformance` runs it through run.sh.
//
// CONFORMANCE_SUITE=engine.io mounts a bare Engine.IO server on /engine.io/ that echoes every
// message; CONFORMANCE_SUITE=socket.io mounts Socket.IO on /socket.io/ with "/" (emits "auth" with the
// handshake's auth on connect, "message" → "message-back", "message-with-ack" → ack with the same
// arguments) and "/custom" (emits "auth" on connect). Settings come from CHORUS_ADDR,
// CHORUS_PING_INTERVAL, CHORUS_PING_TIMEOUT, CHORUS_MAX_PAYLOAD and CHORUS_CONNECT_TIMEOUT.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/chorus-rt/chorus/internal/engine"
	"github.com/chorus-rt/chorus/internal/sio"
)

// suiteReadPause is the pause described in setup.
const suiteReadPause = 10 * time.Millisecond

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run() error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := engine.Options{
		PingInterval: duration("CHORUS_PING_INTERVAL", 300*time.Millisecond),
		PingTimeout:  duration("CHORUS_PING_TIMEOUT", 200*time.Millisecond),
		MaxPayload:   int64(number("CHORUS_MAX_PAYLOAD", 1e6)),
		CORSOrigins:  []string{"*"},
		Logger:       log,
	}
	mux := http.NewServeMux()
	switch suite := os.Getenv("CONFORMANCE_SUITE"); suite {
	case "engine.io":
		opts.OnOpen = func(c *engine.Conn) engine.Handler { return echo{c} }
		mux.Handle("/engine.io/", engine.NewServer(opts))
	case "socket.io":
		srv := sio.NewServer(sio.Options{Engine: opts, Logger: log, ConnectTimeout: duration("CHORUS_CONNECT_TIMEOUT", 45*time.Second)})
		setup(srv)
		mux.Handle("/socket.io/", srv)
	default:
		return fmt.Errorf("CONFORMANCE_SUITE must be engine.io or socket.io, not %q", suite)
	}
	addr := os.Getenv("CHORUS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:3000"
	}
	log.Info("listening", "addr", addr)
	return http.ListenAndServe(addr, mux)
}

// setup mounts the handlers of the socket.io suite.
func setup(srv *sio.Server) {
	// The suite's WebSocket client adds its "auth" listener only after it has processed the CONNECT
	// reply, and its ws library dispatches every frame of one TCP read at once, so an "auth" frame that
	// arrives in the same read as the reply is lost (it fails against Node's server now and then too).
	// chorus writes whatever is queued in one write, so here "auth" is sent once the reply has been
	// written, plus a pause for the suite's event loop to read it: a harness accommodation for the
	// suite's client; the product never delays a packet.
	sendAuth := func(c *sio.Conn) {
		go func() {
			for i := 0; i < 1000 && c.Buffered() > 0; i++ {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(suiteReadPause)
			c.Emit("auth", json.RawMessage(c.Handshake().Auth))
		}()
	}
	root := srv.Namespace("/")
	root.OnConnect(sendAuth)
	root.HandleMessage("message", func(ctx context.Context, c *sio.Conn, m *sio.Message) (any, error) {
		return nil, c.Emit("message-back", m)
	})
	root.HandleMessage("message-with-ack", func(ctx context.Context, c *sio.Conn, m *sio.Message) (any, error) {
		return m, nil
	})
	srv.Namespace("/custom").OnConnect(sendAuth)
}

// echo sends every message back on the same session.
type echo struct{ c *engine.Conn }

func (e echo) OnMessage(data []byte, binary bool) {
	e.c.Send(engine.Packet{Data: data, Binary: binary})
}
func (e echo) OnUpgrade(string) {}
func (e echo) OnClose(string)   {}

func duration(env string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(env)); err == nil {
		return d
	}
	return def
}

func number(env string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(env)); err == nil {
		return n
	}
	return def
}

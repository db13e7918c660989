// Package loadgen is a load generator speaking Socket.IO v5 over Engine.IO v4, for chorus's
// benchmarks. It holds thousands of WebSocket connections cheaply: one goroutine per connection (its
// reader), a small read buffer, a write buffer only while writing, no channels. It connects to the
// main namespace, answers heartbeats, sends chorus's join / publish requests with ack ids, and
// counts acks and received events with their send → receive delay (Stats).
//
// A polling mode (PollHandshake) opens and closes Engine.IO long-polling sessions, for
// connection-rate figures.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Config says where the generator connects and from where.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// Others are more nodes of the same cluster (host:port): connections are spread round robin over
	// Addr and these, so a room's members sit on every node.
	Others []string
	// Sources are local addresses connections are spread over (round robin), so that many
	// connections do not run short of ephemeral ports; empty lets the kernel choose.
	Sources []net.IP
	// HandshakeTimeout bounds a connection's TCP connect, WebSocket upgrade and Socket.IO connect;
	// zero means 10s.
	HandshakeTimeout time.Duration
	// ReadBuffer is each connection's read buffer size in bytes; zero means 4096.
	ReadBuffer int
}

// Generator opens connections to one server and keeps their counters.
type Generator struct {
	cfg  Config
	url  *url.URL
	base time.Time

	stats       atomic.Pointer[Stats]
	nextSrc     atomic.Uint32
	nextAddr    atomic.Uint32
	disconnects atomic.Uint64

	// loopRoom, when set, makes every ack to a join request trigger the next join to that room
	// (closed-loop mode, see StartLoop).
	loopRoom atomic.Pointer[string]

	mu     sync.Mutex
	conns  map[*Conn]struct{} // open connections; a reader removes its own when it ends
	closed bool
}

// New returns a generator for cfg. It opens nothing yet.
func New(cfg Config) (*Generator, error) {
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = 4096
	}
	u, err := url.Parse("ws://" + cfg.Addr + "/socket.io/?EIO=4&transport=websocket")
	if err != nil {
		return nil, fmt.Errorf("server address: %w", err)
	}
	g := &Generator{cfg: cfg, url: u, base: time.Now(), conns: make(map[*Conn]struct{})}
	g.ResetStats()
	return g, nil
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT: bind the source address now, choose the
// port at connect time, so the port need only be unique per destination.
const ipBindAddressNoPort = 24

func bindNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	return errors.Join(err, serr)
}

func (g *Generator) dialTCP(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{KeepAlive: -1}
	if n := len(g.cfg.Sources); n > 0 {
		d.LocalAddr = &net.TCPAddr{IP: g.cfg.Sources[int(g.nextSrc.Add(1))%n]}
		d.Control = bindNoPort
	}
	addr := g.cfg.Addr
	if n := len(g.cfg.Others); n > 0 {
		if i := int(g.nextAddr.Add(1)) % (n + 1); i > 0 {
			addr = g.cfg.Others[i-1]
		}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// Dial opens one connection: WebSocket upgrade, Engine.IO open packet, Socket.IO connect to "/".
// The connection's reader runs until Close or CloseAll.
func (g *Generator) Dial(ctx context.Context) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.HandshakeTimeout)
	defer cancel()
	nc, err := g.dialTCP(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c, err := g.handshake(ctx, nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		nc.Close()
		return nil, errors.New("generator closed")
	}
	g.conns[c] = struct{}{}
	g.mu.Unlock()
	go c.readLoop()
	return c, nil
}

// DialMany opens n connections with at most concurrency handshakes in flight, and returns those
// that opened; err reports how many failed and the first failure.
func (g *Generator) DialMany(ctx context.Context, n, concurrency int) ([]*Conn, error) {
	var (
		mu       sync.Mutex
		conns    = make([]*Conn, 0, n)
		failed   int
		firstErr error
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for range min(concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				c, err := g.Dial(ctx)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed > 0 || len(conns) < n {
		return conns, fmt.Errorf("%d of %d connections failed: %w", n-len(conns), n, errors.Join(firstErr, ctx.Err()))
	}
	return conns, nil
}

// Close closes conns and waits, at most until ctx is done, for their readers to end.
func (g *Generator) Close(ctx context.Context, conns []*Conn) error {
	for _, c := range conns {
		c.Close()
	}
	for i, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("%d connection readers still running: %w", len(conns)-i, ctx.Err())
		}
	}
	return nil
}

// CloseAll closes every connection and waits, at most until ctx is done, for their readers to end.
// The generator accepts no more connections afterwards.
func (g *Generator) CloseAll(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	conns := make([]*Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	return g.Close(ctx, conns)
}

// Open is how many connections are open.
func (g *Generator) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

func (g *Generator) forget(c *Conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

// StartLoop switches to closed-loop requests: every connection in conns sends window join requests
// to room, and each ack to a join is answered with the next join, until StopLoop.
func (g *Generator) StartLoop(conns []*Conn, room string, window int) error {
	g.loopRoom.Store(&room)
	var errs []error
	for _, c := range conns {
		if err := c.joinN(room, window, g.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StopLoop ends closed-loop requests; the ones in flight are still answered and counted.
func (g *Generator) StopLoop() { g.loopRoom.Store(nil) }

// Outstanding is the number of requests sent on conns and not acked yet.
func Outstanding(conns []*Conn) int {
	n := 0
	for _, c := range conns {
		n += int(c.inflight.Load())
	}
	return n
}

// WaitAcked waits until every request sent on conns is acked, polling until ctx is done, and
// returns how many are still outstanding.
func WaitAcked(ctx context.Context, conns []*Conn) int {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		n := Outstanding(conns)
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}

// wsDialer performs the WebSocket upgrade on a connection the generator dialled itself.
var wsDialer = ws.Dialer{}

// Command bare is the ceiling of chorus's benchmarks: the least WebSocket server that speaks
// enough Engine.IO v4 / Socket.IO v5 for the load generator (tests/bench/loadgen). It has one
// goroutine per connection (net/http's, kept after the upgrade), answers the Socket.IO connect,
// pings every ping interval and drops clients that did not answer the previous ping, acks `join`,
// `leave` and `publish`, and fans a publish out to the room by encoding the WebSocket frame once and
// writing it to each member from the publisher's goroutine. No polling, no namespaces but "/", no
// binary, no per-connection queues: whatever chorus does beyond this is what its features cost.
//
//	bare -addr 127.0.0.1:3000
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:3000", "listen address, host:port")
	pingInterval := fs.Duration("ping-interval", 25*time.Second, "how often each client is pinged")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: newServer(*pingInterval).handler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "{\"msg\":\"listening\",\"addr\":%q}\n", ln.Addr().String())
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		return hs.Close()
	}
}

type server struct {
	pingInterval time.Duration
	open         []byte // the Engine.IO open packet without the sid: `","upgrades":[],…}`

	nextSID atomic.Uint64
	mu      sync.RWMutex
	rooms   map[string]map[*conn]struct{}
}

func newServer(pingInterval time.Duration) *server {
	ms := pingInterval.Milliseconds()
	open := fmt.Sprintf(`","upgrades":[],"pingInterval":%d,"pingTimeout":%d,"maxPayload":1000000}`, ms, ms)
	return &server{pingInterval: pingInterval, open: []byte(open), rooms: make(map[string]map[*conn]struct{})}
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /socket.io/", s.serveWebSocket)
	return mux
}

// conn is one client. Its reader is the request's goroutine; frames are written under wmu, by the
// reader, the ping timer or a publisher's goroutine.
type conn struct {
	srv   *server
	nc    net.Conn
	sid   string
	rooms map[string]struct{} // reader only

	wmu      sync.Mutex
	wbuf     []byte
	ping     *time.Timer
	awaiting atomic.Bool // a ping was sent and its pong has not come
}

func (s *server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("transport") != "websocket" {
		http.Error(w, "websocket only", http.StatusBadRequest)
		return
	}
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	c := &conn{srv: s, nc: nc, sid: strconv.FormatUint(s.nextSID.Add(1), 36), rooms: make(map[string]struct{})}
	c.writeText(func(b []byte) []byte {
		b = append(b, `0{"sid":"`...)
		b = append(b, c.sid...)
		return append(b, s.open...)
	})
	c.ping = time.AfterFunc(s.pingInterval, c.heartbeat)
	c.read(rw.Reader)
	c.ping.Stop()
	s.leaveAll(c)
	nc.Close()
}

func (c *conn) heartbeat() {
	if c.awaiting.Swap(true) {
		c.nc.Close() // the previous ping was not answered
		return
	}
	c.writeText(func(b []byte) []byte { return append(b, '2') })
	c.ping.Reset(c.srv.pingInterval)
}

func (c *conn) read(br *bufio.Reader) {
	var msg []byte
	for {
		h, err := ws.ReadHeader(br)
		if err != nil || h.Length > 1<<20 {
			return
		}
		if cap(msg) < int(h.Length) {
			msg = make([]byte, h.Length)
		}
		msg = msg[:h.Length]
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		ws.Cipher(msg, h.Mask, 0)
		switch h.OpCode {
		case ws.OpClose:
			return
		case ws.OpPing:
			c.writeFrame(ws.OpPong, msg)
		case ws.OpText:
			if !h.Fin || !c.onPacket(msg) {
				return
			}
		}
	}
}

// onPacket handles an Engine.IO packet; false closes the connection.
func (c *conn) onPacket(p []byte) bool {
	switch {
	case bytes.Equal(p, []byte("3")):
		c.awaiting.Store(false)
	case bytes.HasPrefix(p, []byte("40")):
		c.writeText(func(b []byte) []byte {
			b = append(b, `40{"sid":"`...)
			b = append(b, c.sid...)
			return append(b, `"}`...)
		})
	case bytes.HasPrefix(p, []byte("42")):
		c.onEvent(p[2:])
	case bytes.HasPrefix(p, []byte("41")), bytes.Equal(p, []byte("1")):
		return false
	}
	return true
}

var (
	replyOK  = []byte(`[{"ok":true}]`)
	replyBad = []byte(`[{"ok":false,"error":{"code":"invalid_argument","message":"bad request"}}]`)
)

// onEvent handles `<id>["name",args...]` for join, leave and publish.
func (c *conn) onEvent(p []byte) {
	i := 0
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		i++
	}
	id, args := p[:i], p[i:]
	var ev []json.RawMessage
	var name string
	if json.Unmarshal(args, &ev) != nil || len(ev) < 2 || json.Unmarshal(ev[0], &name) != nil {
		c.ack(id, replyBad)
		return
	}
	ok := false
	switch name {
	case "join", "leave":
		var room string
		if json.Unmarshal(ev[1], &room) == nil && room != "" {
			c.srv.setMember(c, room, name == "join")
			ok = true
		}
	case "publish":
		var req struct {
			Room  string          `json:"room"`
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if json.Unmarshal(ev[1], &req) == nil && req.Room != "" && req.Event != "" {
			c.srv.publish(c, req.Room, req.Event, req.Data)
			ok = true
		}
	}
	if ok {
		c.ack(id, replyOK)
	} else {
		c.ack(id, replyBad)
	}
}

func (c *conn) ack(id, reply []byte) {
	if len(id) == 0 {
		return
	}
	c.writeText(func(b []byte) []byte {
		b = append(b, "43"...)
		b = append(b, id...)
		return append(b, reply...)
	})
}

func (s *server) setMember(c *conn, room string, in bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[room]
	if !in {
		delete(members, c)
		delete(c.rooms, room)
		if len(members) == 0 {
			delete(s.rooms, room)
		}
		return
	}
	if members == nil {
		members = make(map[*conn]struct{})
		s.rooms[room] = members
	}
	members[c] = struct{}{}
	c.rooms[room] = struct{}{}
}

func (s *server) leaveAll(c *conn) {
	for room := range c.rooms {
		s.setMember(c, room, false)
	}
}

// publish writes `42["event",data]` to every member of room but the sender, the frame encoded once.
func (s *server) publish(from *conn, room, event string, data json.RawMessage) {
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	payload := append([]byte(`42[`), strconv.Quote(event)...)
	payload = append(append(append(payload, ','), data...), ']')
	var frame bytes.Buffer
	ws.WriteHeader(&frame, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(payload))})
	frame.Write(payload)

	s.mu.RLock()
	members := make([]*conn, 0, len(s.rooms[room]))
	for m := range s.rooms[room] {
		if m != from {
			members = append(members, m)
		}
	}
	s.mu.RUnlock()
	for _, m := range members {
		m.writeRaw(frame.Bytes())
	}
}

func (c *conn) writeText(build func(b []byte) []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := build(c.wbuf[:0])
	var hdr bytes.Buffer
	ws.WriteHeader(&hdr, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(b))})
	c.wbuf = b[:0]
	c.flushLocked(hdr.Bytes(), b)
}

func (c *conn) writeFrame(op ws.OpCode, payload []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var hdr bytes.Buffer
	ws.WriteHeader(&hdr, ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))})
	c.flushLocked(hdr.Bytes(), payload)
}

// writeRaw writes an encoded frame.
func (c *conn) writeRaw(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushLocked(frame, nil)
}

// flushLocked writes a then b in one system call; a failed write closes the connection, which ends
// its reader.
func (c *conn) flushLocked(a, b []byte) {
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	bufs := net.Buffers{a, b}
	if _, err := bufs.WriteTo(c.nc); err != nil {
		c.nc.Close()
	}
}

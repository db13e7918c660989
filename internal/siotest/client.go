// Package siotest is a minimal Socket.IO v5 client over WebSocket for chorus's Go tests and load
// generator: enough of the protocol to connect to a namespace, emit with and without acks, receive
// events (binary attachments included) and answer heartbeats. It is not a general-purpose client.
package siotest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Event is a received event.
type Event struct {
	Name        string
	Args        []json.RawMessage
	Attachments [][]byte
	// AckID is set when the server asked for an ack (HasAck); answer with Client.Ack.
	AckID  uint64
	HasAck bool
	// Offset is the connection-state recovery offset the event carried as its last argument
	// (then not in Args), when the namespace has recovery on (the client has a PID).
	Offset string
}

// Client is one connection to one namespace.
type Client struct {
	ID  string
	Nsp string
	// PID is the private session id of connection-state recovery ("" when the namespace has it
	// off); Recovered says that the server restored the session the auth's pid named.
	PID       string
	Recovered bool
	conn      net.Conn
	rw        io.ReadWriter

	wmu sync.Mutex

	mu     sync.Mutex
	nextID uint64
	offset string // the last offset received
	acks   map[uint64]chan Event
	events chan Event
	done   chan struct{}
	err    error

	// NoPong stops the client answering pings, to play a zombie.
	NoPong bool
}

// ConnectError is returned by Dial when the namespace refuses the socket.
type ConnectError struct {
	Message string
	Data    json.RawMessage
}

func (e *ConnectError) Error() string { return "connect_error: " + e.Message }

// Connect is Dial for a test: it gives the connection 10 s, fails t if it cannot connect, and
// closes the client when t ends.
func Connect(t testing.TB, base, nsp string, auth any) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, base, nsp, auth)
	if err != nil {
		t.Fatalf("connect to %s%s: %v", base, nsp, err)
	}
	t.Cleanup(c.Close)
	return c
}

// Dial connects over WebSocket to base (http://host:port) and joins nsp with auth (nil for none).
// To recover a session, pass auth {"pid": <PID>, "offset": <LastOffset>} as the stock client does.
func Dial(ctx context.Context, base, nsp string, auth any) (*Client, error) {
	return DialHeader(ctx, base, nsp, auth, nil)
}

// DialHeader is Dial with extra headers on the WebSocket handshake (e.g. Authorization, Origin).
func DialHeader(ctx context.Context, base, nsp string, auth any, header http.Header) (*Client, error) {
	u := strings.Replace(base, "http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
	d := ws.Dialer{}
	if header != nil {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	conn, br, _, err := d.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	// Frames that arrived with the handshake response wait in br.
	var rw io.ReadWriter = conn
	if br != nil {
		rw = struct {
			io.Reader
			io.Writer
		}{br, conn}
	}
	c := &Client{Nsp: nsp, conn: conn, rw: rw, acks: make(map[uint64]chan Event), events: make(chan Event, 1<<16), done: make(chan struct{})}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	open, err := c.readText()
	if err != nil || len(open) == 0 || open[0] != '0' {
		conn.Close()
		return nil, fmt.Errorf("open packet: %q %v", open, err)
	}
	p := protocol.Packet{Type: protocol.Connect, Nsp: nsp}
	if auth != nil {
		p.Data, _ = json.Marshal(auth)
	}
	if err := c.writeText(append([]byte{'4'}, p.Encode()...)); err != nil {
		conn.Close()
		return nil, err
	}
	for {
		msg, err := c.readText()
		if err != nil {
			conn.Close()
			return nil, err
		}
		if string(msg) == "2" {
			c.writeText([]byte("3"))
			continue
		}
		r, _, err := protocol.DecodeHeader(msg[1:])
		if err != nil {
			conn.Close()
			return nil, err
		}
		switch r.Type {
		case protocol.Connect:
			var v struct{ SID, PID string }
			json.Unmarshal(r.Data, &v)
			c.ID, c.PID = v.SID, v.PID
			var a struct{ PID string }
			if b, err := json.Marshal(auth); err == nil {
				json.Unmarshal(b, &a)
			}
			c.Recovered = c.PID != "" && a.PID == c.PID
			conn.SetReadDeadline(time.Time{})
			go c.read()
			return c, nil
		case protocol.ConnectError:
			var e ConnectError
			json.Unmarshal(r.Data, &e)
			conn.Close()
			return nil, &e
		}
	}
}

func (c *Client) readText() ([]byte, error) {
	data, op, err := wsutil.ReadServerData(c.rw)
	if err != nil {
		return nil, err
	}
	if op != ws.OpText {
		return nil, errors.New("unexpected binary frame")
	}
	return data, nil
}

func (c *Client) writeText(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteClientText(c.conn, b)
}

// WriteRaw sends one Engine.IO text packet as it is (e.g. "42[\"x\"]").
func (c *Client) WriteRaw(s string) error { return c.writeText([]byte(s)) }

// WriteBinary sends one binary WebSocket message (an attachment) as it is.
func (c *Client) WriteBinary(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wsutil.WriteClientBinary(c.conn, b)
}

func (c *Client) read() {
	defer close(c.done)
	defer close(c.events)
	var pending *protocol.Packet
	var want int
	for {
		data, op, err := wsutil.ReadServerData(c.rw)
		if err != nil {
			c.mu.Lock()
			c.err = err
			for id, ch := range c.acks {
				close(ch)
				delete(c.acks, id)
			}
			c.mu.Unlock()
			return
		}
		if op == ws.OpBinary {
			if pending == nil {
				continue
			}
			pending.Attachments = append(pending.Attachments, data)
			if len(pending.Attachments) == want {
				c.deliver(pending)
				pending = nil
			}
			continue
		}
		switch {
		case string(data) == "2":
			if !c.NoPong {
				c.writeText([]byte("3"))
			}
			continue
		case len(data) == 0 || data[0] != '4':
			continue
		}
		p, n, err := protocol.DecodeHeader(data[1:])
		if err != nil {
			continue
		}
		if n > 0 {
			pending, want = &p, n
			continue
		}
		c.deliver(&p)
	}
}

func (c *Client) deliver(p *protocol.Packet) {
	args, _ := protocol.Args(p.Data)
	switch p.Type {
	case protocol.Event, protocol.BinaryEvent:
		var name string
		if len(args) > 0 {
			json.Unmarshal(args[0], &name)
			args = args[1:]
		}
		var offset string
		// As the stock client does (socket.io-client emitEvent): with a pid, a last string argument
		// is the offset. A volatile event whose last argument is a string loses it here.
		if c.PID != "" && !p.HasID && len(args) > 0 && json.Unmarshal(args[len(args)-1], &offset) == nil {
			args = args[:len(args)-1]
			c.mu.Lock()
			c.offset = offset
			c.mu.Unlock()
		}
		c.events <- Event{Name: name, Args: args, Attachments: p.Attachments, AckID: p.ID, HasAck: p.HasID, Offset: offset}
	case protocol.Ack, protocol.BinaryAck:
		c.mu.Lock()
		ch := c.acks[p.ID]
		delete(c.acks, p.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- Event{Args: args, Attachments: p.Attachments}
		}
	case protocol.Disconnect:
		c.conn.Close()
	}
}

func (c *Client) packet(event string, args []any, id uint64, hasID bool) ([]byte, error) {
	vals := make([]json.RawMessage, 0, 1+len(args))
	name, _ := json.Marshal(event)
	vals = append(vals, name)
	for _, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		vals = append(vals, b)
	}
	p := protocol.Packet{Type: protocol.Event, Nsp: c.Nsp, ID: id, HasID: hasID, Data: protocol.AppendArray(nil, vals...)}
	return append([]byte{'4'}, p.Encode()...), nil
}

// Ack answers an event the server sent with an ack id.
func (c *Client) Ack(id uint64, args ...any) error {
	vals := make([]json.RawMessage, 0, len(args))
	for _, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		vals = append(vals, b)
	}
	p := protocol.Packet{Type: protocol.Ack, Nsp: c.Nsp, ID: id, HasID: true, Data: protocol.AppendArray(nil, vals...)}
	return c.writeText(append([]byte{'4'}, p.Encode()...))
}

// Emit sends an event without asking for an ack.
func (c *Client) Emit(event string, args ...any) error {
	b, err := c.packet(event, args, 0, false)
	if err != nil {
		return err
	}
	return c.writeText(b)
}

// EmitWithAck sends an event and waits for its ack.
func (c *Client) EmitWithAck(ctx context.Context, event string, args ...any) (Event, error) {
	ch := make(chan Event, 1)
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.acks[id] = ch
	c.mu.Unlock()
	b, err := c.packet(event, args, id, true)
	if err != nil {
		return Event{}, err
	}
	if err := c.writeText(b); err != nil {
		return Event{}, err
	}
	select {
	case ev, ok := <-ch:
		if !ok {
			return Event{}, errors.New("connection closed before the ack")
		}
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Next returns the next received event.
func (c *Client) Next(ctx context.Context) (Event, error) {
	select {
	case ev, ok := <-c.events:
		if !ok {
			return Event{}, errors.New("connection closed")
		}
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// LastOffset returns the last recovery offset received ("" if none).
func (c *Client) LastOffset() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection and waits for the reader to stop.
func (c *Client) Close() {
	c.conn.Close()
	<-c.done
}

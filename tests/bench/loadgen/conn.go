package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// MaxOutstanding is how many requests a connection may have outstanding; their send times wait in
// a ring indexed by ack id (acks come back in request order, see docs/protocol.md "Order").
const MaxOutstanding = 64

const ackRing = MaxOutstanding

// maxKeptBuffer is the largest read or write buffer a connection keeps between messages.
const maxKeptBuffer = 16 << 10

// Conn is one Socket.IO connection to "/". Its reader goroutine answers pings and counts acks and
// events; its request methods may be called from any goroutine.
type Conn struct {
	g   *Generator
	nc  net.Conn
	br  *bufio.Reader
	sid string

	rbuf     []byte // payload of the frame being read; reader only
	lastSeq  int64  // sequence number of the last event received; reader only
	loopNext int    // closed-loop requests owed, sent once the read buffer is empty; reader only

	wmu    sync.Mutex
	wbuf   []byte // nil between writes
	mask   uint32 // xorshift state for frame masks
	nextID uint64

	inflight atomic.Int32
	sentAt   [ackRing]atomic.Int64 // generator clock at which request id%ackRing was sent
	closing  atomic.Bool
	done     chan struct{} // closed when the reader has ended
}

// SID is the Socket.IO socket id the server gave the connection.
func (c *Conn) SID() string { return c.sid }

// prefixReader serves bytes the WebSocket upgrade read past the handshake before the connection's.
type prefixReader struct {
	pre []byte
	r   io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.r.Read(b)
}

func (g *Generator) handshake(ctx context.Context, nc net.Conn) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	hbr, _, err := wsDialer.Upgrade(nc, g.url)
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	var src io.Reader = nc
	if hbr != nil {
		pre, _ := hbr.Peek(hbr.Buffered())
		src = &prefixReader{pre: bytes.Clone(pre), r: nc}
		ws.PutReader(hbr)
	}
	c := &Conn{g: g, nc: nc, br: bufio.NewReaderSize(src, g.cfg.ReadBuffer), lastSeq: -1, mask: uint32(time.Now().UnixNano()) | 1,
		done: make(chan struct{})}

	op, msg, err := c.readFrame()
	if err != nil {
		return nil, fmt.Errorf("read open packet: %w", err)
	}
	if op != ws.OpText || len(msg) == 0 || msg[0] != '0' {
		return nil, fmt.Errorf("want an Engine.IO open packet, got %q", clip(msg))
	}
	if err := c.write(func(b []byte) []byte { return append(b, "40"...) }); err != nil {
		return nil, fmt.Errorf("send connect: %w", err)
	}
	for c.sid == "" {
		op, msg, err = c.readFrame()
		if err != nil {
			return nil, fmt.Errorf("read connect reply: %w", err)
		}
		if op == ws.OpText && string(msg) == "2" {
			c.pong()
			continue
		}
		rest, ok := bytes.CutPrefix(msg, []byte(`40{"sid":"`))
		i := bytes.IndexByte(rest, '"')
		if op != ws.OpText || !ok || i <= 0 {
			return nil, fmt.Errorf("want a Socket.IO connect reply, got %q", clip(msg))
		}
		c.sid = string(rest[:i])
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// Close closes the connection; its reader ends.
func (c *Conn) Close() {
	c.closing.Store(true)
	c.nc.Close()
}

func (c *Conn) readLoop() {
	defer close(c.done)
	defer c.g.forget(c)
	defer c.nc.Close()
	for {
		op, msg, err := c.readFrame()
		if err != nil || op == ws.OpClose {
			c.lost()
			return
		}
		if op == ws.OpPing {
			c.writeControl(ws.OpPong, msg)
			continue
		}
		if op == ws.OpText {
			c.onText(msg)
		}
		if c.loopNext > 0 && c.br.Buffered() == 0 {
			// Answer every ack of this read with one write.
			if room := c.g.loopRoom.Load(); room != nil && !c.closing.Load() {
				c.joinN(*room, c.loopNext, c.g.Now())
			}
			c.loopNext = 0
		}
		if cap(c.rbuf) > maxKeptBuffer {
			c.rbuf = nil
		}
	}
}

// readFrame reads one whole message (or control frame) into c.rbuf, which it returns.
func (c *Conn) readFrame() (ws.OpCode, []byte, error) {
	c.rbuf = c.rbuf[:0]
	var op ws.OpCode
	for {
		b0, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		b1, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		if b1&0x80 != 0 {
			return 0, nil, errors.New("masked frame from the server")
		}
		n := int64(b1 & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(c.br, ext[:]); err != nil {
				return 0, nil, err
			}
			n = int64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(c.br, ext[:]); err != nil {
				return 0, nil, err
			}
			n = int64(binary.BigEndian.Uint64(ext[:]))
		}
		if n > 64<<20 {
			return 0, nil, fmt.Errorf("frame of %d bytes", n)
		}
		fop := ws.OpCode(b0 & 0x0f)
		fin := b0&0x80 != 0
		if fop.IsControl() {
			// Control frames may come between fragments; read them on their own.
			payload := make([]byte, n)
			if _, err := io.ReadFull(c.br, payload); err != nil {
				return 0, nil, err
			}
			if fop == ws.OpPing && len(c.rbuf) > 0 {
				c.writeControl(ws.OpPong, payload)
				continue
			}
			return fop, payload, nil
		}
		if fop != ws.OpContinuation {
			op = fop
		}
		start := len(c.rbuf)
		c.rbuf = append(c.rbuf, make([]byte, n)...)
		if _, err := io.ReadFull(c.br, c.rbuf[start:]); err != nil {
			return 0, nil, err
		}
		if fin {
			return op, c.rbuf, nil
		}
	}
}

// onText handles one Engine.IO packet.
func (c *Conn) onText(msg []byte) {
	if len(msg) == 0 {
		return
	}
	switch msg[0] {
	case '2': // ping
		c.pong()
	case '1': // close
		c.lost()
		c.nc.Close()
	case '4': // message: a Socket.IO packet
		if len(msg) < 2 {
			return
		}
		switch msg[1] {
		case '2':
			c.onEvent(msg[2:])
		case '3':
			c.onAck(msg[2:])
		case '1': // disconnect
			c.lost()
		}
	}
}

// lost counts the connection as disconnected by the server unless the generator closed it.
func (c *Conn) lost() {
	if c.closing.CompareAndSwap(false, true) {
		c.g.disconnects.Add(1)
	}
}

func (c *Conn) pong() {
	c.g.Stats().Pings.Add(1)
	c.write(func(b []byte) []byte { return append(b, '3') })
}

var (
	okReply  = []byte(`"ok":true`)
	keyTime  = []byte(`"t":`)
	keySeq   = []byte(`"s":`)
	joinHead = []byte(`["join",`)
)

// onAck handles `<id>[reply]`.
func (c *Conn) onAck(p []byte) {
	id, rest, ok := leadingUint(p)
	if !ok {
		return
	}
	now := c.g.Now()
	s := c.g.Stats()
	if bytes.Contains(rest, okReply) {
		s.AcksOK.Add(1)
	} else {
		s.AcksFailed.Add(1)
	}
	sent := c.sentAt[id%ackRing].Load()
	c.inflight.Add(-1)
	if sent >= s.MeasureFrom.Load() {
		s.AckLatency.Record(time.Duration(now - sent))
	}
	if c.g.loopRoom.Load() != nil {
		c.loopNext++
	}
}

// onEvent handles `["event",data]`; data carrying "t" (generator clock at send) and "s" (sequence)
// is timed and checked for order.
func (c *Conn) onEvent(p []byte) {
	now := c.g.Now()
	s := c.g.Stats()
	s.Events.Add(1)
	s.LastEvent.Store(now)
	if t, ok := intAfter(p, keyTime); ok && t >= s.MeasureFrom.Load() {
		s.EventDelay.Record(time.Duration(now - t))
	}
	if seq, ok := intAfter(p, keySeq); ok {
		if seq <= c.lastSeq {
			s.OutOfOrder.Add(1)
		}
		c.lastSeq = seq
	}
}

// leadingUint parses the decimal number p starts with.
func leadingUint(p []byte) (uint64, []byte, bool) {
	i := 0
	var v uint64
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		v = v*10 + uint64(p[i]-'0')
		i++
	}
	return v, p[i:], i > 0
}

// intAfter parses the integer following the first occurrence of key in p.
func intAfter(p, key []byte) (int64, bool) {
	i := bytes.Index(p, key)
	if i < 0 {
		return 0, false
	}
	v, _, ok := leadingUint(p[i+len(key):])
	return int64(v), ok
}

// Join sends `join` to room with an ack id.
func (c *Conn) Join(room string) error { return c.joinN(room, 1, c.g.Now()) }

// JoinAt sends `join` to room with an ack id, timing the ack from sentAt (generator clock) rather
// than from now: a paced request is timed from when it was due, so a late generator does not hide
// server delays. It reports false, sending nothing, when the connection has ackRing requests
// outstanding.
func (c *Conn) JoinAt(room string, sentAt int64) (bool, error) {
	if c.inflight.Load() >= ackRing {
		c.g.Stats().Backlogged.Add(1)
		return false, nil
	}
	return true, c.joinN(room, 1, sentAt)
}

// joinN sends n join requests to room in one write.
func (c *Conn) joinN(room string, n int, sentAt int64) error {
	return c.writeRequests(n, sentAt, func(b []byte, id uint64) []byte {
		b = append(b, "42"...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, joinHead...)
		b = strconv.AppendQuote(b, room)
		return append(b, ']')
	})
}

// Publish sends `publish` {room, event, data:{t, s}} with an ack id: t is the generator clock now
// and s is seq, so receivers time the delivery and check its order.
func (c *Conn) Publish(room, event string, seq int64) error {
	now := c.g.Now()
	return c.writeRequests(1, now, func(b []byte, id uint64) []byte {
		b = append(b, "42"...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, `["publish",{"room":`...)
		b = strconv.AppendQuote(b, room)
		b = append(b, `,"event":`...)
		b = strconv.AppendQuote(b, event)
		b = append(b, `,"data":{"t":`...)
		b = strconv.AppendInt(b, now, 10)
		b = append(b, `,"s":`...)
		b = strconv.AppendInt(b, seq, 10)
		return append(b, "}}]"...)
	})
}

// writeRequests writes n Socket.IO packets built by build, each with the next ack id, as n frames
// in one write.
func (c *Conn) writeRequests(n int, sentAt int64, build func(b []byte, id uint64) []byte) error {
	if n <= 0 {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.wbuf[:0]
	for range n {
		id := c.nextID
		c.nextID++
		c.sentAt[id%ackRing].Store(sentAt)
		c.inflight.Add(1)
		b = c.appendFrame(b, ws.OpText, func(b []byte) []byte { return build(b, id) })
	}
	c.g.Stats().AcksSent.Add(uint64(n))
	return c.flushLocked(b)
}

// write writes one text frame built by build.
func (c *Conn) write(build func(b []byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked(c.appendFrame(c.wbuf[:0], ws.OpText, build))
}

func (c *Conn) writeControl(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked(c.appendFrame(c.wbuf[:0], op, func(b []byte) []byte { return append(b, payload...) }))
}

func (c *Conn) flushLocked(b []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(b)
	if cap(b) <= maxKeptBuffer {
		c.wbuf = b[:0]
	}
	return err
}

// appendFrame appends a masked client frame whose payload build appends. Payloads stay under 64 KiB.
func (c *Conn) appendFrame(b []byte, op ws.OpCode, build func(b []byte) []byte) []byte {
	start := len(b)
	b = append(b, 0x80|byte(op), 0, 0, 0, 0, 0, 0, 0) // header with room for a 16-bit length and the mask
	b = build(b)
	n := len(b) - start - 8
	c.mask ^= c.mask << 13
	c.mask ^= c.mask >> 17
	c.mask ^= c.mask << 5
	var key [4]byte
	binary.BigEndian.PutUint32(key[:], c.mask)
	if n <= 125 {
		// Short length: the header is 6 bytes; move the payload up by 2.
		b[start+1] = 0x80 | byte(n)
		copy(b[start+2:], key[:])
		copy(b[start+6:], b[start+8:])
		b = b[:len(b)-2]
		ws.Cipher(b[start+6:], key, 0)
		return b
	}
	b[start+1] = 0x80 | 126
	binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	copy(b[start+4:], key[:])
	ws.Cipher(b[start+8:], key, 0)
	return b
}

package engine

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// writers writes the output of WebSocket sessions. A session with output waiting is put on one queue
// (once, however many packets it gets meanwhile); a few goroutines take sessions off it and write all
// that each has waiting in one write. So a broadcast to thousands of sockets starts no goroutine per
// socket, a socket that gets several packets between two turns sends them in one write, and no
// goroutine exists while nothing is waiting. Writes are non-blocking: a socket whose kernel buffer is
// full is handed to a goroutine of its own (flushSlow) so that it cannot hold up the others.
type writers struct {
	mu      sync.Mutex
	queue   []*Conn
	running int
	max     int
}

func newWriters() *writers { return &writers{max: max(2, runtime.GOMAXPROCS(0))} }

// push queues sessions whose flushing flag the caller has just set.
func (w *writers) push(cs ...*Conn) {
	if len(cs) == 0 {
		return
	}
	w.mu.Lock()
	w.queue = append(w.queue, cs...)
	start := w.running < w.max
	if start {
		w.running++
	}
	w.mu.Unlock()
	if start {
		go w.run()
	}
}

func (w *writers) pop() *Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		w.running--
		w.queue = nil
		return nil
	}
	c := w.queue[0]
	w.queue[0] = nil
	w.queue = w.queue[1:]
	return c
}

func (w *writers) run() {
	for c := w.pop(); c != nil; c = w.pop() {
		c.flushTurn(w)
	}
}

// flushTurn writes what c has waiting, once; c goes back on the queue if more arrived meanwhile.
func (c *Conn) flushTurn(w *writers) {
	wc, batch := c.nextBatch()
	if batch == nil {
		return
	}
	buf := appendFrames(getBuf(), batch)
	c.recycle(batch)
	n, err := wc.tryWrite(buf)
	if err != nil {
		putBuf(buf)
		c.writeFailed()
		return
	}
	if n < len(buf) {
		go c.flushSlow(wc, buf, n)
		return
	}
	putBuf(buf)
	c.mu.Lock()
	c.inflight, c.inflightBytes = 0, 0
	again := len(c.out) > 0 || c.state == stateClosing
	if !again {
		c.flushing = false
	}
	c.mu.Unlock()
	if again {
		w.push(c)
	}
}

// nextBatch takes what c has waiting for its WebSocket, for the one goroutine that writes it. When
// there is nothing (or no socket), it ends that goroutine's turn instead: nil batch, flushing
// cleared, and a closing session finished now that its output is out.
func (c *Conn) nextBatch() (*wsConn, []frame) {
	c.mu.Lock()
	c.inflight, c.inflightBytes = 0, 0
	wc := c.ws
	if len(c.out) == 0 || c.state == stateClosed || wc == nil {
		c.flushing = false
		closing := c.state == stateClosing
		c.mu.Unlock()
		if closing {
			c.finish()
		}
		return nil, nil
	}
	batch, n := c.takeLocked()
	c.inflight, c.inflightBytes = len(batch), n
	c.mu.Unlock()
	return wc, batch
}

// flushSlow finishes a write that would have blocked, then writes the rest of the queue, blocking
// (bounded by the write timeout), until it is empty. It runs only while the socket is slow.
func (c *Conn) flushSlow(wc *wsConn, buf []byte, written int) {
	if err := wc.writeBlocking(buf[written:]); err != nil {
		putBuf(buf)
		c.writeFailed()
		return
	}
	putBuf(buf)
	for {
		_, batch := c.nextBatch()
		if batch == nil {
			return
		}
		buf := appendFrames(getBuf(), batch)
		c.recycle(batch)
		err := wc.writeBlocking(buf)
		putBuf(buf)
		if err != nil {
			c.writeFailed()
			return
		}
	}
}

func (c *Conn) writeFailed() {
	c.mu.Lock()
	c.flushing, c.inflight, c.inflightBytes = false, 0, 0
	c.mu.Unlock()
	c.fail("transport error")
}

// appendFrames encodes a batch of Engine.IO packets as WebSocket frames, one frame each.
func appendFrames(buf []byte, frames []frame) []byte {
	for _, f := range frames {
		if f.binary {
			buf = appendFrameHeader(buf, ws.OpBinary, len(f.data))
			buf = append(buf, f.data...)
			continue
		}
		buf = appendFrameHeader(buf, ws.OpText, 1+len(f.data))
		buf = append(buf, f.typ)
		buf = append(buf, f.data...)
	}
	return buf
}

// tryWrite writes as much of buf as the kernel takes without blocking.
func (w *wsConn) tryWrite(buf []byte) (n int, err error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.rc == nil {
		w.conn.SetWriteDeadline(time.Now().Add(w.writeTimeout))
		return w.conn.Write(buf)
	}
	cerr := w.rc.Write(func(fd uintptr) bool {
		for n < len(buf) {
			m, e := syscall.Write(int(fd), buf[n:])
			if m > 0 {
				n += m
			}
			switch {
			case e == nil:
			case errors.Is(e, syscall.EINTR):
			case errors.Is(e, syscall.EAGAIN):
				return true // full: the rest goes to flushSlow
			default:
				err = e
				return true
			}
		}
		return true
	})
	if err == nil {
		err = cerr
	}
	return n, err
}

// writeBlocking writes buf, waiting for the socket at most the write timeout. The deadline is
// cleared afterwards: a stale one would make every later non-blocking write fail.
func (w *wsConn) writeBlocking(buf []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(w.writeTimeout))
	// Checked after the deadline is set: a close that began before it is seen here, one that begins
	// after it expires the deadline (close sets closing first, then the deadline).
	if w.closing.Load() {
		return net.ErrClosed
	}
	_, err := w.conn.Write(buf)
	w.conn.SetWriteDeadline(time.Time{})
	return err
}

// Broadcast queues the same packets on every session in conns, scheduling the writes of all of them
// at once. The packets' Data must not be modified afterwards.
func Broadcast(conns []*Conn, pkts []Packet) {
	if len(conns) == 0 {
		return
	}
	dirty := make([]*Conn, 0, len(conns))
	var srv *Server
	var slow []*Conn
	for _, c := range conns {
		c.mu.Lock()
		if c.state != stateOpen {
			c.mu.Unlock()
			continue
		}
		fits := true
		for _, p := range pkts {
			fits = c.enqueueLocked(frame{typ: typeMessage, data: p.Data, binary: p.Binary}) && fits
		}
		if !fits {
			c.mu.Unlock()
			slow = append(slow, c)
			continue
		}
		if c.transport == WebSocket && c.ws != nil {
			if !c.flushing {
				c.flushing = true
				dirty = append(dirty, c)
				srv = c.srv
			}
		} else {
			c.wakePollLocked()
		}
		c.mu.Unlock()
	}
	if srv != nil {
		srv.writers.push(dirty...)
	}
	for _, c := range slow {
		c.fail(ReasonSlowConsumer)
	}
}

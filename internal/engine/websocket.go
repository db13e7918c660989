package engine

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// upgradeTimeout bounds the probe/upgrade exchange of a polling session moving to WebSocket.
const upgradeTimeout = 10 * time.Second

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() []byte { return (*bufPool.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) > 64<<10 {
		return // let an outsized buffer go rather than pin it in the pool
	}
	bufPool.Put(&b)
}

// closeFrame is the close frame (1000) every server-side close sends.
var closeFrame = ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))

// wsConn is a server-side WebSocket connection. Frames are written by one goroutine at a time (wmu);
// all the frames of a batch go out in one write.
type wsConn struct {
	conn         net.Conn
	rc           syscall.RawConn // for non-blocking I/O; nil if conn has no file descriptor
	br           *bufio.Reader   // blocking reads (the upgrade probe, or without netpoll); nil after
	writeTimeout time.Duration

	// Reading through netpoll (wsread.go). The fields below are used only by the goroutine that
	// holds reading.
	poll       *pollHandle // guarded by wmu
	reading    atomic.Bool
	probeAhead atomic.Bool // the upgrade probe was followed by input already read (hasInput)
	partial    []byte      // an incomplete frame
	msgOp      ws.OpCode   // the message being assembled from fragments, if any
	msg        []byte

	wmu       sync.Mutex
	closeOnce sync.Once
	closing   atomic.Bool // close has begun: a blocking write must not start waiting
}

// close sends a close frame and closes the connection. It never waits for the client: a write
// blocked on a full socket (flushSlow) is cut short, and the close frame is written only if the
// socket takes it at once. Whoever closes a client that stopped reading (a broadcaster closing a
// slow consumer, a heartbeat timer) goes on at once.
//
// The connection is not closed at once but lingers: it is half-closed, and what the peer still
// sends is read and dropped on a goroutine of its own, until the peer closes too or for at most
// closeLinger. Closing at once made the kernel answer input that was still arriving (a client
// flooding a server that is disconnecting it for that, say) with a reset, which destroyed what had
// just been written: the close frame and the packets before it, such as the reason for the
// disconnect (chorus:disconnect).
func (w *wsConn) close() {
	w.closeOnce.Do(func() {
		w.closing.Store(true)
		w.conn.SetWriteDeadline(time.Now()) // a writeBlocking under way returns now, letting go of wmu
		w.wmu.Lock()
		if w.poll != nil {
			w.poll.remove()
		}
		if w.rc != nil {
			w.conn.SetWriteDeadline(time.Time{}) // an expired deadline would refuse even a non-blocking write
			w.rc.Write(func(fd uintptr) bool {
				syscall.Write(int(fd), closeFrame) // no retry: a full socket gets no close frame
				return true
			})
		} else {
			w.conn.SetWriteDeadline(time.Now().Add(time.Second))
			w.conn.Write(closeFrame)
		}
		w.wmu.Unlock()
		cw, ok := w.conn.(interface{ CloseWrite() error })
		if !ok || cw.CloseWrite() != nil {
			w.conn.Close()
			return
		}
		go func() {
			w.conn.SetReadDeadline(time.Now().Add(closeLinger))
			io.Copy(io.Discard, w.conn)
			w.conn.Close()
		}()
	})
}

// closeLinger bounds how long closeLingering reads what a peer still sends after the close frame.
const closeLinger = time.Second

// closeLingering sends a close frame with code and then, instead of closing the connection at once,
// half-closes it and reads and drops what the peer still sends (until it closes too, or for at most
// closeLinger) before closing it. Closing a TCP connection with unread data makes the kernel reset
// it, and the reset can destroy the close frame before the peer reads it: a client whose message was
// over MaxPayload (and so was left unread) saw the connection drop without the 1009 it was owed. It
// must run on the reader goroutine, the only one that reads the connection.
func (w *wsConn) closeLingering(code ws.StatusCode, reason string) {
	w.closeOnce.Do(func() {
		w.closing.Store(true)
		w.conn.SetWriteDeadline(time.Now()) // as in close: a blocked writeBlocking lets go of wmu
		w.wmu.Lock()
		w.conn.SetWriteDeadline(time.Now().Add(time.Second))
		ws.WriteFrame(w.conn, ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
		if cw, ok := w.conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		var rest io.Reader = w.conn
		if w.br != nil {
			rest = w.br
		}
		if w.poll != nil {
			w.poll.remove()
		}
		w.wmu.Unlock()
		w.conn.SetReadDeadline(time.Now().Add(closeLinger))
		io.Copy(io.Discard, rest)
		w.conn.Close()
	})
}

// writeFrames writes a batch of Engine.IO packets, one WebSocket frame each, in a single write.
func (w *wsConn) writeFrames(frames []frame) error {
	buf := appendFrames(getBuf(), frames)
	err := w.writeBlocking(buf)
	putBuf(buf)
	return err
}

func (w *wsConn) writeControl(op ws.OpCode, payload []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(w.writeTimeout))
	err := ws.WriteFrame(w.conn, ws.NewFrame(op, true, payload))
	w.conn.SetWriteDeadline(time.Time{}) // see writeBlocking
	return err
}

// appendFrameHeader appends an unmasked server frame header (RFC 6455 §5.2).
func appendFrameHeader(b []byte, op ws.OpCode, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 126, byte(n>>8), byte(n))
	default:
		return append(b, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

var errMessageTooBig = errors.New("message larger than the max payload")

// readMessage reads one WebSocket data message, answering pings and close frames on the way.
// Messages over max bytes, across all their fragments, are refused.
func (w *wsConn) readMessage(max int64) (data []byte, binary bool, err error) {
	var op ws.OpCode
	for {
		h, err := ws.ReadHeader(w.br)
		if err != nil {
			return nil, false, err
		}
		// CheckHeader must know whether a fragmented message is in progress: with StateServerSide
		// alone it refuses every continuation frame, which closed any session whose client
		// fragmented a message.
		state := ws.StateServerSide
		if op != 0 {
			state |= ws.StateFragmented
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return nil, false, err
		}
		if h.OpCode.IsControl() {
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(w.br, payload); err != nil {
				return nil, false, err
			}
			ws.Cipher(payload, h.Mask, 0)
			switch h.OpCode {
			case ws.OpPing:
				w.writeControl(ws.OpPong, payload)
			case ws.OpClose:
				return nil, false, io.EOF
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			if op != 0 {
				return nil, false, ws.ErrProtocolContinuationExpected
			}
			op = h.OpCode
		} else if op == 0 {
			return nil, false, ws.ErrProtocolContinuationUnexpected
		}
		// Compared without adding: a continuation frame may claim up to 2^63-1 bytes, and
		// len(data)+h.Length then overflowed to a negative number, passed the check and made the
		// allocation below panic (recovered by net/http, leaving the session open with no reader).
		if h.Length > max-int64(len(data)) {
			return nil, false, errMessageTooBig
		}
		start := len(data)
		data = append(data, make([]byte, h.Length)...)
		if _, err := io.ReadFull(w.br, data[start:]); err != nil {
			return nil, false, err
		}
		ws.Cipher(data[start:], h.Mask, 0)
		if h.Fin {
			return data, op == ws.OpBinary, nil
		}
	}
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, sid string) {
	accept, ok := acceptKey(r)
	if !ok {
		s.refuse(w, r, codeBadRequest, "", "bad_request")
		return
	}
	var c *Conn
	claimed := false
	if sid != "" {
		c = s.lookup(sid)
		if c == nil {
			writeError(w, codeUnknownSID, "")
			return
		}
		// The upgrade is claimed now, on the handshake, as Node does: a second WebSocket for the
		// same session, even one whose handshake lands first on another goroutine, is closed.
		c.mu.Lock()
		claimed = c.state == stateOpen && c.transport == Polling && !c.upgrading
		if claimed {
			c.upgrading = true
		}
		c.mu.Unlock()
	}
	var release func()
	if c == nil {
		var ok bool
		if release, ok = s.admit(w, r); !ok {
			return
		}
	}
	hj, ok := w.(http.Hijacker)
	var conn net.Conn
	var brw *bufio.ReadWriter
	var err error
	if ok {
		conn, brw, err = hj.Hijack()
	}
	if !ok || err != nil {
		if release != nil {
			release()
		}
		if claimed {
			c.mu.Lock()
			c.upgrading = false
			c.mu.Unlock()
		}
		if !ok {
			writeError(w, codeBadRequest, "")
		}
		s.log.Debug("websocket hijack failed", "err", err)
		return
	}
	wc := newWSConn(conn, brw.Reader, s.opts.PingInterval+s.opts.PingTimeout)
	resp := append(getBuf(), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = append(resp, accept...)
	resp = append(resp, "\r\n\r\n"...)

	if c != nil {
		err := wc.writeBlocking(resp)
		putBuf(resp)
		if err != nil {
			conn.Close()
			return
		}
		// The upgrade runs on a goroutine of its own too, so that net/http's goroutine, its deep
		// stack and its buffers go away now.
		go func() {
			if !claimed || !s.probe(c, wc) {
				// Not upgradable (already upgrading or upgraded, or closed), or the probe failed:
				// like Node, the WebSocket is accepted and then closed, and the session carries on.
				wc.close()
				return
			}
			s.startReading(c, wc)
		}()
		return
	}

	c = newConn(s, newSID(), r, WebSocket)
	c.release = release
	// Queued before OnOpen can Send, as in Server.open.
	c.out = append(c.out, frame{typ: typeOpen, data: openPacket(c.id, []string{}, s.opts)})
	s.register(c)
	// The 101 response, the open packet and whatever OnOpen queued leave in one write.
	c.mu.Lock()
	batch, _ := c.takeLocked()
	c.mu.Unlock()
	resp = appendFrames(resp, batch)
	err = wc.writeBlocking(resp)
	putBuf(resp)
	if err != nil {
		c.fail("transport error")
		conn.Close()
		return
	}
	c.mu.Lock()
	c.ws = wc
	c.schedulePingLocked()
	if len(c.out) > 0 {
		c.kickLocked()
	}
	c.mu.Unlock()
	s.log.Debug("engine open", "conn", c.id, "transport", WebSocket, "remote", r.RemoteAddr)
	s.startReading(c, wc)
}

// acceptKey checks a WebSocket opening handshake (RFC 6455 §4.2.1) and returns the value of its
// Sec-WebSocket-Accept. chorus answers the handshake itself so that the 101 response and the open
// packet go out in one write.
func acceptKey(r *http.Request) (string, bool) {
	if r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") ||
		!headerHasToken(r.Header, "Connection", "upgrade") || r.Header.Get("Sec-WebSocket-Version") != "13" {
		return "", false
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		return "", false
	}
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), true
}

// headerHasToken reports whether a comma-separated header (e.g. Connection: keep-alive, Upgrade)
// has token, case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// readBufSize is the read buffer of a WebSocket connection: most messages and frame headers fit, and
// larger payloads are read straight into their own buffer.
const readBufSize = 1024

// newWSConn takes over a hijacked connection. net/http's 4 KB reader is let go (it would otherwise
// stay with the connection for its whole life); what the client already sent is kept in partial,
// which both readers consume first.
func newWSConn(conn net.Conn, br *bufio.Reader, writeTimeout time.Duration) *wsConn {
	wc := &wsConn{conn: conn, writeTimeout: writeTimeout}
	if n := br.Buffered(); n > 0 {
		early, _ := br.Peek(n)
		wc.partial = bytes.Clone(early)
	}
	wc.br = bufio.NewReaderSize(earlyFirst{wc}, readBufSize)
	if sc, ok := conn.(syscall.Conn); ok {
		wc.rc, _ = sc.SyscallConn()
	}
	return wc
}

// earlyFirst reads a connection's partial bytes, then the connection.
type earlyFirst struct{ w *wsConn }

func (e earlyFirst) Read(p []byte) (int, error) {
	if len(e.w.partial) > 0 {
		n := copy(p, e.w.partial)
		e.w.partial = e.w.partial[n:]
		if len(e.w.partial) == 0 {
			e.w.partial = nil
		}
		return n, nil
	}
	return e.w.conn.Read(p)
}

// probe runs the upgrade of a polling session: "2probe" → "3probe", the waiting GET is answered with
// a noop so the client can pause polling, then "5" switches the session to WebSocket.
// The caller has claimed the upgrade (c.upgrading).
func (s *Server) probe(c *Conn, wc *wsConn) bool {
	ok := false
	c.mu.Lock()
	c.probing = wc
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.probing = nil
		if !ok {
			c.upgrading, c.probed = false, false
		}
		c.mu.Unlock()
	}()

	wc.conn.SetReadDeadline(time.Now().Add(upgradeTimeout))
	data, binary, err := wc.readMessage(s.opts.MaxPayload)
	if err != nil || binary || string(data) != "2probe" {
		return false
	}
	if err := wc.writeFrames([]frame{{typ: typePong, data: []byte("probe")}}); err != nil {
		return false
	}
	ahead := wc.br.Buffered() > 0 // "5" came with the probe
	wc.probeAhead.Store(ahead)
	c.mu.Lock()
	c.probed = true
	if !ahead {
		// Answer the waiting poll so that the client can pause polling and send "5". If "5" came
		// with the probe, the upgrade finishes first, as it does in Node, which handles both
		// frames in one go: a poll then sees the session on WebSocket.
		c.wakePollLocked()
	}
	c.mu.Unlock()

	data, binary, err = wc.readMessage(s.opts.MaxPayload)
	if err != nil || binary || string(data) != "5" {
		return false
	}
	wc.conn.SetReadDeadline(time.Time{})
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	c.transport = WebSocket
	c.ws = wc
	c.upgrading, c.probed = false, false
	c.wakePollLocked()
	if len(c.out) > 0 {
		c.kickLocked()
	}
	c.mu.Unlock()
	ok = true
	s.log.Debug("engine upgrade", "conn", c.id, "transport", WebSocket)
	c.inMu.Lock()
	c.handler.OnUpgrade(WebSocket)
	c.inMu.Unlock()
	return true
}

// hasInput reports whether the client has sent something the server has not read yet (bytes in the
// kernel's receive queue), or true if that cannot be told.
func (w *wsConn) hasInput() bool {
	if w == nil || w.rc == nil || w.probeAhead.Load() {
		return true
	}
	n := -1
	w.rc.Control(func(fd uintptr) { n = pendingInput(fd) })
	return n != 0
}

// readWebSocket is the session's reader; it runs on the request's goroutine until the socket closes.
func (s *Server) readWebSocket(c *Conn, wc *wsConn) {
	for {
		data, binary, err := wc.readMessage(s.opts.MaxPayload)
		if err != nil {
			reason := "transport close"
			if errors.Is(err, errMessageTooBig) {
				reason = "transport error"
				s.logTooLarge(c, WebSocket)
				// The one close frame of this connection, and not lost to a reset (see closeLingering).
				wc.closeLingering(ws.StatusMessageTooBig, "message too big")
			}
			c.fail(reason)
			wc.close()
			return
		}
		var f frame
		if binary {
			f = frame{typ: typeMessage, data: data, binary: true}
		} else if f, err = decodeText(data); err != nil {
			c.fail("parse error")
			wc.close()
			return
		}
		c.inMu.Lock()
		if !c.deliver(f, nil) {
			return // handed over to a new reader (ReleaseReader), which holds inMu now
		}
		c.inMu.Unlock()
	}
}

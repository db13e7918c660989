package engine

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"time"

	"github.com/gobwas/ws"
)

var (
	errEOF           = io.EOF
	errFrame         = errors.New("malformed WebSocket frame")
	errPacket        = errors.New("malformed Engine.IO packet")
	errContinuation  = errors.New("unexpected continuation frame")
	errFragmentOrder = errors.New("data frame inside a fragmented message")
)

// startReading hands a WebSocket session's input to netpoll (no goroutine while idle), or to a
// reader goroutine where netpoll is not available.
func (s *Server) startReading(c *Conn, wc *wsConn) {
	if p := getPoller(); p != nil && wc.rc != nil {
		// Input read ahead by the blocking reader (during the probe) comes first, then what it has
		// not consumed of the bytes sent with the handshake.
		if n := wc.br.Buffered(); n > 0 {
			ahead, _ := wc.br.Peek(n)
			wc.partial = append(bytes.Clone(ahead), wc.partial...)
		}
		early := len(wc.partial) > 0 // read before add: from then on partial is the reader's
		h := newPollHandle(p, wc.rc, func() { s.onReadable(c, wc) })
		wc.wmu.Lock()
		wc.poll = h
		wc.br = nil
		wc.wmu.Unlock()
		// restart is in place before the first delivery can hand the reader over.
		c.mu.Lock()
		c.restart = func() {
			wc.reading.Store(false)
			if h.rearm() != nil {
				c.fail("transport close")
			}
		}
		c.mu.Unlock()
		if err := p.add(h); err == nil {
			if early {
				go s.onReadable(c, wc)
			}
			return
		}
		wc.wmu.Lock()
		wc.poll = nil
		wc.br = bufio.NewReaderSize(earlyFirst{wc}, readBufSize)
		wc.wmu.Unlock()
	}
	c.mu.Lock()
	c.restart = func() { s.readWebSocket(c, wc) }
	c.mu.Unlock()
	go s.readWebSocket(c, wc)
}

// lingerIdle is how long the goroutine of a connection that was just active waits on Go's own
// poller for more input before handing the connection back to netpoll and ending. A busy
// connection (a client sending requests back to back) so costs no epoll re-arm and no new goroutine
// per request, while an idle one still has no goroutine once it has been quiet this long.
const lingerIdle = 200 * time.Millisecond

// onReadable runs on a goroutine of its own when netpoll sees input: it reads what is there, delivers
// the complete packets in order, waits up to lingerIdle for more, and then re-arms the connection.
// At most one runs per connection.
func (s *Server) onReadable(c *Conn, wc *wsConn) {
	if !wc.reading.CompareAndSwap(false, true) {
		return
	}
	for {
		frames, err := wc.readAvailable(s.opts.MaxPayload)
		if len(frames) > 0 {
			c.inMu.Lock()
			for i, f := range frames {
				if !c.deliver(f, frames[i+1:]) {
					return // handed over (ReleaseReader): the rest was delivered, the connection re-armed
				}
			}
			c.inMu.Unlock()
		}
		if err != nil {
			s.readFailed(c, wc, err)
			return
		}
		if !wc.waitReadable(lingerIdle) {
			break
		}
	}
	wc.reading.Store(false)
	if err := wc.pollHandle().rearm(); err != nil {
		c.fail("transport close")
		wc.close()
	}
}

// waitReadable parks on Go's poller until the connection has input (true) or d has passed (false).
// A readiness left over from input already read may wake it early; the caller then reads nothing
// and waits again.
func (w *wsConn) waitReadable(d time.Duration) bool {
	w.conn.SetReadDeadline(time.Now().Add(d))
	waited := false
	err := w.rc.Read(func(uintptr) bool {
		if !waited {
			waited = true
			return false // wait for readiness
		}
		return true
	})
	w.conn.SetReadDeadline(time.Time{})
	return err == nil
}

// readFailed ends a session whose WebSocket input failed.
func (s *Server) readFailed(c *Conn, wc *wsConn, err error) {
	reason := "transport close"
	switch {
	case errors.Is(err, errMessageTooBig):
		reason = "transport error"
		s.logTooLarge(c, WebSocket)
		// The one close frame of this connection, and not lost to a reset (see closeLingering).
		wc.closeLingering(ws.StatusMessageTooBig, "message too big")
	case errors.Is(err, errPacket):
		reason = "parse error"
	case errors.Is(err, errFrame), errors.Is(err, errContinuation), errors.Is(err, errFragmentOrder):
		reason = "transport error"
	}
	c.fail(reason)
	wc.close()
}

func (w *wsConn) pollHandle() *pollHandle {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.poll
}

// readAvailable reads what the socket has without waiting and returns the complete packets in it;
// an incomplete frame is kept for the next call.
func (w *wsConn) readAvailable(max int64) ([]frame, error) {
	buf := append(getBuf(), w.partial...)
	w.partial = nil
	var rerr error
	for {
		if cap(buf)-len(buf) < 1024 {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := readNonBlocking(w.rc, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			rerr = err
			break
		}
		// A short read means the socket is empty for now; stop early on a large backlog too, so a
		// flood is parsed (and pushed back on) in bounded pieces.
		if len(buf) < cap(buf) || int64(len(buf)) > max+16 {
			break
		}
	}
	frames, err := w.parse(buf, max)
	putBuf(buf)
	if err == nil {
		err = rerr
	}
	return frames, err
}

// parse consumes the complete frames of b: control frames are answered here, data frames are
// assembled into Engine.IO packets. What is left of b (an incomplete frame) is kept in w.partial.
func (w *wsConn) parse(b []byte, max int64) (out []frame, err error) {
	for len(b) > 0 {
		h, hl, ok, herr := parseFrameHeader(b)
		if herr != nil {
			return out, herr
		}
		if !ok {
			break
		}
		// A frame out of place is refused on its header, as the blocking reader does: its payload
		// (up to MaxPayload) is not waited for.
		switch {
		case h.OpCode == ws.OpContinuation && w.msgOp == 0:
			return out, errContinuation
		case (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary) && w.msgOp != 0:
			return out, errFragmentOrder
		}
		if h.OpCode.IsData() || h.OpCode == ws.OpContinuation {
			// Checked before waiting for the payload, and without adding (a frame may claim 2^63-1).
			if h.Length > max-int64(len(w.msg)) {
				return out, errMessageTooBig
			}
		}
		if int64(len(b)-hl) < h.Length {
			break
		}
		payload := b[hl : hl+int(h.Length)]
		ws.Cipher(payload, h.Mask, 0)
		b = b[hl+int(h.Length):]

		switch h.OpCode {
		case ws.OpPing:
			w.writeControl(ws.OpPong, bytes.Clone(payload))
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			return out, errEOF
		case ws.OpContinuation:
			w.msg = append(w.msg, payload...)
		default:
			w.msgOp = h.OpCode
			w.msg = append(w.msg[:0:0], payload...)
		}
		if !h.Fin {
			continue
		}
		data, op := w.msg, w.msgOp
		w.msg, w.msgOp = nil, 0
		if op == ws.OpBinary {
			out = append(out, frame{typ: typeMessage, data: data, binary: true})
			continue
		}
		f, derr := decodeText(data)
		if derr != nil {
			return out, errPacket
		}
		out = append(out, f)
	}
	if len(b) > 0 {
		w.partial = bytes.Clone(b)
	}
	return out, nil
}

// parseFrameHeader parses a client frame header (RFC 6455 §5.2). ok is false while b holds only part
// of it.
func parseFrameHeader(b []byte) (h ws.Header, n int, ok bool, err error) {
	if len(b) < 2 {
		return h, 0, false, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 0x07
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, false, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, false, errFrame
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	// Client frames are masked; chorus negotiates no extension; control frames are short and whole.
	if !h.Masked || h.Rsv != 0 || h.OpCode.IsReserved() || (h.OpCode.IsControl() && (!h.Fin || h.Length > 125)) {
		return h, 0, false, errFrame
	}
	if len(b) < n+4 {
		return h, 0, false, nil
	}
	copy(h.Mask[:], b[n:n+4])
	return h, n + 4, true, nil
}

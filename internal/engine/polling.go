package engine

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// upgradePollWait bounds how long a poll that arrives after the upgrade probe, while the client's
// "5" is already on the WebSocket, waits for the upgrade to finish (Node's check runs every 100 ms).
const upgradePollWait = 100 * time.Millisecond

// servePoll answers a long-polling GET with the queued packets, waiting for some if there are none.
func (s *Server) servePoll(w http.ResponseWriter, r *http.Request, c *Conn) {
	c.mu.Lock()
	// The transport check and the registration of this GET happen under one lock, so a session that
	// closes or upgrades concurrently either refuses this GET or wakes it: it can never wait forever.
	if c.transport != Polling || c.state == stateClosed {
		c.mu.Unlock()
		writeError(w, codeBadRequest, "")
		return
	}
	if c.polling {
		c.mu.Unlock()
		writeError(w, codeBadRequest, errOverlap.Error())
		c.fail("transport error")
		return
	}
	c.polling = true
	if len(c.out) == 0 && c.state == stateOpen && c.upgrading && c.probed && c.probing.hasInput() {
		// The client is finishing an upgrade and its "5" is already on the WebSocket: wait for it
		// (at most upgradePollWait) and answer 400 once the session has moved there, as Node does
		// (it handles "2probe" and "5" in one go). When nothing is on the WebSocket yet, the client
		// is waiting for this very poll before it sends "5": it gets a noop at once below.
		wake := make(chan struct{})
		c.pollWake = wake
		c.mu.Unlock()
		t := time.NewTimer(upgradePollWait)
		select {
		case <-wake:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		c.mu.Lock()
		if c.pollWake == wake {
			c.pollWake = nil
		}
		if c.transport != Polling {
			c.polling = false
			c.mu.Unlock()
			writeError(w, codeBadRequest, "")
			return
		}
	} else if len(c.out) == 0 && c.state == stateOpen && !c.upgrading {
		wake := make(chan struct{})
		c.pollWake = wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-r.Context().Done():
			// The client went away mid-poll: the session has lost its downstream.
			c.mu.Lock()
			c.polling = false
			if c.pollWake == wake {
				c.pollWake = nil
			}
			c.mu.Unlock()
			c.fail("transport close")
			return
		}
		c.mu.Lock()
	}
	if c.transport != Polling {
		// The session moved to WebSocket while this poll waited: its packets go there.
		c.polling = false
		c.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		w.Write([]byte{typeNoop})
		return
	}
	batch, _ := c.takeLocked()
	closing := c.state != stateOpen
	if c.noopOnClose {
		batch = append(batch[:0], frame{typ: typeNoop})
	} else if closing && len(batch) > 0 {
		// The packets queued before the close go out first and the close packet with the next poll,
		// as Node does: the stock client handles a payload's packets on a later tick than a close
		// packet in the same payload, which dropped them (e.g. the reason for a disconnect).
		closing = false
		if c.closeTimer == nil {
			c.closeTimer = time.AfterFunc(c.srv.opts.PingTimeout, c.finish)
		}
	} else if closing {
		batch = append(batch, frame{typ: typeClose})
	} else if len(batch) == 0 {
		// Woken for an upgrade: answer so that the client can pause polling.
		batch = append(batch, frame{typ: typeNoop})
	}
	c.polling = false
	c.mu.Unlock()

	buf := appendPayload(getBuf(), batch)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Content-Length", itoa(int64(len(buf))))
	h.Set("Cache-Control", "no-store")
	_, err := w.Write(buf)
	putBuf(buf)
	c.recycle(batch)
	if closing {
		c.finish()
	} else if err != nil {
		c.fail("transport error")
	}
}

// servePost handles a long-polling POST. The whole body is read and decoded before any packet is
// handled: a body over MaxPayload (with or without Content-Length) gets 413 and a malformed one gets
// 400; either closes the session, and in both cases no packet of it is handled.
func (s *Server) servePost(w http.ResponseWriter, r *http.Request, c *Conn) {
	c.mu.Lock()
	if c.state != stateOpen || (c.transport != Polling && !c.upgrading) {
		c.mu.Unlock()
		writeError(w, codeBadRequest, "")
		return
	}
	if c.posting {
		c.mu.Unlock()
		writeError(w, codeBadRequest, errOverlap.Error())
		c.fail("transport error")
		return
	}
	c.posting = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.posting = false
		c.mu.Unlock()
	}()

	max := s.opts.MaxPayload
	if r.ContentLength > max {
		w.Header().Set("Connection", "close")
		http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
		s.logTooLarge(c, Polling)
		c.fail("transport error")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
			s.logTooLarge(c, Polling)
			c.fail("transport error")
			return
		}
		c.fail("transport error")
		return
	}
	frames, err := decodePayload(body)
	if err != nil {
		s.log.Debug("engine bad payload", "conn", c.id, "err", err)
		writeError(w, codeBadRequest, "")
		c.fail("parse error")
		return
	}
	// Answer before delivering: the client sends its next POST only once this one is answered, and a
	// handler that waits for the client's ack needs that next POST to arrive. The next POST's packets
	// still wait for these (inMu), so the order holds.
	w.Header().Set("Content-Type", "text/html")
	w.Write([]byte("ok"))
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	c.inMu.Lock()
	for i, f := range frames {
		if !c.deliver(f, frames[i+1:]) {
			return // handed over: the new reader delivered the rest and holds inMu
		}
	}
	c.inMu.Unlock()
}

// logTooLarge logs, once per connection (it is closed next), input over MaxPayload.
func (s *Server) logTooLarge(c *Conn, transport string) {
	s.log.Info("closing connection: input larger than the max payload", "conn", c.id, "transport", transport,
		"remote", c.req.RemoteAddr, "max_payload", s.opts.MaxPayload)
}

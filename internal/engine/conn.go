package engine

import (
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Request is what a session keeps of its opening HTTP request.
type Request struct {
	Query      url.Values
	Header     http.Header
	RemoteAddr string
	Host       string
	Secure     bool
	Time       time.Time
}

type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // closed by the server: the queued packets are still being flushed
	stateClosed
)

// Conn is one Engine.IO session. Its methods are safe for concurrent use.
type Conn struct {
	srv     *Server
	id      string
	req     Request
	handler Handler
	release func() // Options.Admit's, called once when the session is closed

	// inMu serialises the delivery of incoming packets, whichever transport they arrive on. It is
	// held by the reader (the WebSocket reader goroutine or a polling POST) while it delivers; a
	// Handler that must wait for the client can hand it on with ReleaseReader.
	inMu sync.Mutex

	mu        sync.Mutex
	state     connState
	reason    string
	transport string
	out       []frame
	queued    int     // bytes in out, as they go on the wire
	spare     []frame // the previous batch's backing array, reused for the next one
	// long-polling
	polling  bool          // a GET is being answered
	pollWake chan struct{} // closed to wake the waiting GET
	posting  bool          // a POST is being handled
	// noopOnClose: the client closed the session; its poll, pending or just arriving, gets a noop.
	noopOnClose bool
	// websocket
	ws            *wsConn
	flushing      bool // a goroutine is writing out to ws
	inflight      int  // packets of the batch being written
	inflightBytes int  // and their bytes: they count against MaxBuffered until written
	// reader hand-over (ReleaseReader)
	inFrame   bool    // the reader is delivering a packet, holding inMu
	readerGen uint64  // incremented by each hand-over
	rest      []frame // the frames of the current POST not yet delivered
	restart   func()  // starts a new WebSocket reader
	upgrading bool
	probed    bool    // the upgrade's probe has been answered
	probing   *wsConn // the WebSocket of the upgrade under way
	// heartbeat
	pingTimer    *time.Timer
	pinged       bool // a ping is waiting for its pong
	timeoutTimer *time.Timer
	closeTimer   *time.Timer
}

func newConn(s *Server, id string, r *http.Request, transport string) *Conn {
	return &Conn{
		srv:       s,
		id:        id,
		transport: transport,
		req: Request{
			Query:      r.URL.Query(),
			Header:     r.Header, // not cloned: net/http never reuses a request's header map
			RemoteAddr: r.RemoteAddr,
			Host:       r.Host,
			Secure:     r.TLS != nil,
			Time:       time.Now(),
		},
	}
}

// ID returns the session id (the `sid` of the Engine.IO handshake).
func (c *Conn) ID() string { return c.id }

// Request returns the session's opening request.
func (c *Conn) Request() *Request { return &c.req }

// Transport returns the current transport name.
func (c *Conn) Transport() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.transport
}

// Send queues message packets; they leave in the order of the Send calls. It reports false if the
// session is closed. The packets' Data must not be modified afterwards.
func (c *Conn) Send(pkts ...Packet) bool {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	fits := true
	for _, p := range pkts {
		fits = c.enqueueLocked(frame{typ: typeMessage, data: p.Data, binary: p.Binary}) && fits
	}
	// Written by the writer pool, not here: acks answering a batch of requests read together then
	// leave in one write (writing each at once on the reader measured 30 % more CPU per ack).
	c.kickLocked()
	c.mu.Unlock()
	if !fits {
		c.fail(ReasonSlowConsumer)
		return false
	}
	return true
}

// ReasonSlowConsumer is the close reason of a session whose output waiting to be written grew
// past Options.MaxBuffered: its client does not read fast enough (or at all).
const ReasonSlowConsumer = "slow_consumer"

// enqueueLocked queues f. It reports false when the output waiting for the client, f included, is
// over MaxBuffered: the caller must then fail the session with ReasonSlowConsumer once it has let
// go of c.mu. Without the cap a client that stops reading holds an ever longer queue in memory.
func (c *Conn) enqueueLocked(f frame) bool {
	c.out = append(c.out, f)
	c.queued += len(f.data) + 1
	return c.queued+c.inflightBytes <= c.srv.opts.MaxBuffered
}

// Writable reports whether the session can take a packet right now without buffering it behind
// others; volatile packets are dropped when it cannot.
func (c *Conn) Writable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen || c.upgrading {
		return false
	}
	if c.transport == Polling {
		return c.pollWake != nil
	}
	return !c.flushing
}

// kickLocked makes the current transport write out the queue.
func (c *Conn) kickLocked() {
	if c.transport == WebSocket && c.ws != nil {
		if !c.flushing {
			c.flushing = true
			c.srv.writers.push(c)
		}
		return
	}
	c.wakePollLocked()
}

func (c *Conn) wakePollLocked() {
	if c.pollWake != nil {
		close(c.pollWake)
		c.pollWake = nil
	}
}

// takeLocked returns the queued frames and their bytes, and leaves the queue empty.
func (c *Conn) takeLocked() ([]frame, int) {
	batch, n := c.out, c.queued
	c.out = c.spare[:0]
	c.spare = nil
	c.queued = 0
	return batch, n
}

// recycle gives a written batch's array back for the next batch.
func (c *Conn) recycle(batch []frame) {
	clear(batch)
	c.mu.Lock()
	if c.spare == nil && cap(batch) <= 1024 {
		c.spare = batch[:0]
	}
	c.mu.Unlock()
}

// Close closes the session after the packets queued so far are written. reason is what the handler's
// OnClose receives.
func (c *Conn) Close(reason string) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	c.state = stateClosing
	c.reason = reason
	c.stopTimersLocked()
	switch {
	case c.transport == WebSocket && c.ws != nil:
		c.kickLocked() // the flusher closes the socket once the queue is written
	case c.pollWake != nil:
		c.wakePollLocked() // the waiting GET takes the queue and a close packet
	default:
		// No GET is waiting: keep the queue for the next one, but not for ever.
		c.closeTimer = time.AfterFunc(c.srv.opts.PingTimeout, c.finish)
	}
	c.mu.Unlock()
	c.notifyClose(reason)
}

// fail closes the session at once, dropping what is queued: the transport is gone or the peer
// misbehaved. OnClose runs, with reason, only if the session was still open.
func (c *Conn) fail(reason string) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	wasOpen := c.state == stateOpen
	c.state = stateClosed
	if wasOpen {
		c.reason = reason
	}
	c.stopTimersLocked()
	c.out, c.queued = nil, 0
	c.wakePollLocked()
	ws := c.ws
	release := c.release
	c.release = nil
	c.mu.Unlock()
	if ws != nil {
		ws.close()
	}
	c.srv.remove(c)
	if release != nil {
		release()
	}
	if wasOpen {
		c.notifyClose(reason)
	}
}

// clientCloseLinger is how long a session the client closed waits for a poll that was on its way.
// It only has to cover a GET sent together with the close; longer kept closed sessions in the table
// (and made a drain wait for them).
const clientCloseLinger = time.Second

// closeByClient handles a close packet from the client. Over long-polling its poll GET may reach
// the server just before or just after the POST that carries the close: either way it is answered
// with a noop (as Node does), not left hanging nor refused.
func (c *Conn) closeByClient() {
	c.mu.Lock()
	if c.state != stateOpen || c.transport != Polling {
		c.mu.Unlock()
		c.fail("transport close")
		return
	}
	c.state = stateClosing
	c.reason = "transport close"
	c.noopOnClose = true
	c.out, c.queued = nil, 0
	c.stopTimersLocked()
	if c.pollWake != nil {
		c.wakePollLocked()
	} else {
		c.closeTimer = time.AfterFunc(clientCloseLinger, c.finish)
	}
	c.mu.Unlock()
	c.notifyClose("transport close")
}

// Buffered returns the number of packets queued or being written.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out) + c.inflight
}

// finish ends a closing session once its queue is written (or abandoned). It never runs OnClose:
// that ran when the session started closing.
func (c *Conn) finish() { c.fail("") }

func (c *Conn) notifyClose(reason string) {
	c.srv.log.Debug("engine close", "conn", c.id, "reason", reason)
	go func() {
		c.inMu.Lock()
		defer c.inMu.Unlock()
		c.handler.OnClose(reason)
	}()
}

func (c *Conn) stopTimersLocked() {
	for _, t := range []*time.Timer{c.pingTimer, c.timeoutTimer, c.closeTimer} {
		if t != nil {
			t.Stop()
		}
	}
}

// schedulePingLocked arms the next heartbeat.
func (c *Conn) schedulePingLocked() {
	if c.pingTimer == nil {
		c.pingTimer = time.AfterFunc(c.srv.opts.PingInterval, c.ping)
		return
	}
	c.pingTimer.Reset(c.srv.opts.PingInterval)
}

// ping sends a heartbeat. The timeout is armed before the ping is queued, so a pong that comes back
// at once always finds it (the library wrote first and armed later, losing fast pongs).
func (c *Conn) ping() {
	if h, ok := c.handler.(HeartbeatHandler); ok {
		h.BeforePing() // outside mu: it may read state whose writers queue packets on c
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return
	}
	c.pinged = true
	if c.timeoutTimer == nil {
		c.timeoutTimer = time.AfterFunc(c.srv.opts.PingTimeout, c.pingTimedOut)
	} else {
		c.timeoutTimer.Reset(c.srv.opts.PingTimeout)
	}
	// A ping is a byte: it never tips a session over MaxBuffered on its own, and the next message
	// finds the queue over the cap if it is.
	c.enqueueLocked(frame{typ: typePing})
	c.kickLocked()
}

func (c *Conn) pingTimedOut() {
	c.mu.Lock()
	open := c.state == stateOpen
	c.mu.Unlock()
	if open {
		c.fail("ping timeout")
	}
}

func (c *Conn) pong() {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	if c.timeoutTimer != nil {
		c.timeoutTimer.Stop()
	}
	c.schedulePingLocked()
	answered := c.pinged
	c.pinged = false
	c.mu.Unlock()
	if h, ok := c.handler.(HeartbeatHandler); ok && answered {
		h.OnPong()
	}
}

// deliver hands f to onFrame on behalf of the reader holding inMu, and reports whether that reader
// still is the reader afterwards: false means the Handler called ReleaseReader while handling f,
// inMu has passed to a new reader, and the caller must stop reading and not unlock inMu.
func (c *Conn) deliver(f frame, rest []frame) bool {
	c.mu.Lock()
	c.inFrame = true
	c.rest = rest
	gen := c.readerGen
	c.mu.Unlock()
	c.onFrame(f)
	c.mu.Lock()
	still := c.readerGen == gen
	if still {
		c.inFrame = false
		c.rest = nil
	}
	c.mu.Unlock()
	return still
}

// ReleaseReader lets a Handler that is handling a packet on the reader wait for the client (e.g.
// for an ack) without stalling the session: the packets that follow are read and delivered by a new
// reader while the Handler's goroutine goes on; when it returns, that goroutine stops reading. The
// Handler must then run what it is given after the current packet in order itself (sio queues it).
// It does nothing if no packet is being delivered.
func (c *Conn) ReleaseReader() {
	c.mu.Lock()
	if !c.inFrame {
		c.mu.Unlock()
		return
	}
	c.inFrame = false
	c.readerGen++
	rest := c.rest
	c.rest = nil
	restart := c.restart
	c.mu.Unlock()
	// The rest of a polling POST came before anything a later request brings: deliver it now,
	// still holding inMu (the Handler queues what it cannot run yet).
	for _, f := range rest {
		c.onFrame(f)
	}
	c.inMu.Unlock()
	if restart != nil {
		go restart()
	}
}

// onFrame handles one incoming packet. It is called with inMu held.
func (c *Conn) onFrame(f frame) {
	switch f.typ {
	case typeMessage:
		c.mu.Lock()
		open := c.state == stateOpen
		c.mu.Unlock()
		if open {
			c.handler.OnMessage(f.data, f.binary)
		}
	case typePong:
		c.pong()
	case typeClose:
		c.closeByClient()
	case typeNoop, typeUpgrade, typePing:
		// A ping from a v4 client only comes as the upgrade probe, which the WebSocket side handles;
		// noop and stray upgrade packets carry nothing.
	default:
		c.fail("parse error")
	}
}

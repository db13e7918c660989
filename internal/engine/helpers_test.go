package engine

// Test-only clients and a recording Handler. Every test in this package runs the real server behind
// httptest on 127.0.0.1 and talks to it over the wire: raw HTTP for long-polling, gobwas/ws frames for
// WebSocket.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"
)

// Bounds. They are generous on purpose: the suite must pass with -race -count=3 on a busy 2-core
// machine, and a correct server meets each of them by orders of magnitude.
const (
	waitTimeout    = 5 * time.Second // for conditions that should hold almost at once
	requestTimeout = 5 * time.Second // for HTTP requests that should be answered at once
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eventually waits until cond holds, failing the test with what after timeout.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---- the recording Handler ----

type message struct {
	data   string
	binary bool
}

func (m message) String() string {
	if m.binary {
		return fmt.Sprintf("bin%q", m.data)
	}
	return fmt.Sprintf("%q", m.data)
}

// recorder is the Handler of one session: it records what the engine delivers and checks the
// Handler contract (no OnMessage after OnClose, no concurrent OnMessage, OnClose once).
type recorder struct {
	conn   *Conn
	opened time.Time
	echo   bool

	mu        sync.Mutex
	inside    bool // an OnMessage or OnClose is running
	msgs      []message
	upgrades  []string
	closes    []string
	closedAt  time.Time
	violation []string
}

func (r *recorder) enter(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inside {
		r.violation = append(r.violation, what+" called concurrently with another callback")
	}
	if len(r.closes) > 0 {
		r.violation = append(r.violation, what+" called after OnClose")
	}
	r.inside = true
}

func (r *recorder) leave() {
	r.mu.Lock()
	r.inside = false
	r.mu.Unlock()
}

func (r *recorder) OnMessage(data []byte, binary bool) {
	r.enter("OnMessage")
	defer r.leave()
	r.mu.Lock()
	r.msgs = append(r.msgs, message{string(data), binary})
	r.mu.Unlock()
	if r.echo {
		r.conn.Send(Packet{Data: append([]byte(nil), data...), Binary: binary})
	}
}

func (r *recorder) OnUpgrade(transport string) {
	r.enter("OnUpgrade")
	defer r.leave()
	r.mu.Lock()
	r.upgrades = append(r.upgrades, transport)
	r.mu.Unlock()
}

func (r *recorder) OnClose(reason string) {
	r.enter("OnClose")
	defer r.leave()
	r.mu.Lock()
	r.closes = append(r.closes, reason)
	if r.closedAt.IsZero() {
		r.closedAt = time.Now()
	}
	r.mu.Unlock()
}

func (r *recorder) messages() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message(nil), r.msgs...)
}

func (r *recorder) closeReasons() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.closes...)
}

func (r *recorder) upgradeList() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.upgrades...)
}

// waitClosed waits for OnClose and returns its reason.
func (r *recorder) waitClosed(t testing.TB, timeout time.Duration) string {
	t.Helper()
	eventually(t, timeout, func() bool { return len(r.closeReasons()) > 0 }, "OnClose of session %s", r.conn.ID())
	return r.closeReasons()[0]
}

// waitMessages waits until n messages have been delivered and returns them.
func (r *recorder) waitMessages(t testing.TB, n int) []message {
	t.Helper()
	eventually(t, waitTimeout, func() bool { return len(r.messages()) >= n }, "%d messages on session %s (have %v)", n, r.conn.ID(), r.messages())
	return r.messages()
}

// ---- the server under test ----

type testServer struct {
	*Server
	t      testing.TB
	http   *httptest.Server
	base   string // http://127.0.0.1:port/socket.io/
	client *http.Client

	mu     sync.Mutex
	recs   map[string]*recorder
	echo   bool
	onOpen func(*Conn) // called at the end of OnOpen, when set
}

type serverOption func(*testServer)

// withEcho makes every session's handler send each message back.
func withEcho(ts *testServer) { ts.echo = true }

// withOnOpen runs f inside every OnOpen, after the session's recorder is made.
func withOnOpen(f func(*Conn)) serverOption { return func(ts *testServer) { ts.onOpen = f } }

// newTestServer starts an engine.Server with opts (OnOpen is provided) behind httptest. On cleanup
// it closes the server and checks that no goroutine started during the test is left behind.
func newTestServer(t *testing.T, opts Options, sopts ...serverOption) *testServer {
	t.Helper()
	before := goleak.IgnoreCurrent()
	ts := &testServer{t: t, recs: make(map[string]*recorder)}
	for _, o := range sopts {
		o(ts)
	}
	opts.OnOpen = func(c *Conn) Handler {
		r := &recorder{conn: c, opened: time.Now(), echo: ts.echo}
		ts.mu.Lock()
		ts.recs[c.ID()] = r
		ts.mu.Unlock()
		if ts.onOpen != nil {
			ts.onOpen(c)
		}
		return r
	}
	ts.Server = NewServer(opts)
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", ts.Server)
	ts.http = httptest.NewServer(mux)
	ts.base = ts.http.URL + "/socket.io/"
	ts.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(func() {
		ts.Server.Close()
		ts.http.Close()
		ts.client.CloseIdleConnections()
		ts.mu.Lock()
		for sid, r := range ts.recs {
			r.mu.Lock()
			if len(r.violation) > 0 {
				t.Errorf("session %s broke the Handler contract: %v", sid, r.violation)
			}
			if len(r.closes) > 1 {
				t.Errorf("session %s: OnClose called %d times: %q", sid, len(r.closes), r.closes)
			}
			r.mu.Unlock()
		}
		ts.mu.Unlock()
		// goleak retries for well under a second; a loaded machine may need longer to let the
		// engine's goroutines (OnClose callbacks, flushers, readers) end.
		for deadline := time.Now().Add(waitTimeout); goleak.Find(before) != nil && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		goleak.VerifyNone(t, before)
	})
	return ts
}

// rec returns the recorder of session sid.
func (ts *testServer) rec(sid string) *recorder {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	r := ts.recs[sid]
	if r == nil {
		ts.t.Fatalf("no session %q was opened", sid)
	}
	return r
}

func (ts *testServer) url(query string) string { return ts.base + "?" + query }

func (ts *testServer) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(ts.base, "http") + "?" + query
}

// ---- raw HTTP ----

type response struct {
	status int
	header http.Header
	body   string
}

// do sends one request and reads the whole answer; an error means no answer within requestTimeout.
func (ts *testServer) do(method, url string, body io.Reader, header http.Header) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := ts.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}, nil
}

func (ts *testServer) mustDo(method, url string, body io.Reader, header http.Header) response {
	ts.t.Helper()
	res, err := ts.do(method, url, body, header)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, url, err)
	}
	return res
}

// engineError is the JSON body of an Engine.IO error answer.
type engineError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// checkError fails the test unless res is an Engine.IO error answer with status and code.
func checkError(t testing.TB, res response, status, code int) {
	t.Helper()
	if res.status != status {
		t.Fatalf("status = %d, want %d (body %q)", res.status, status, res.body)
	}
	var e engineError
	if err := json.Unmarshal([]byte(res.body), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", res.body, err)
	}
	if e.Code != code || e.Message == "" {
		t.Fatalf("error body = %+v, want code %d with a message", e, code)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type = %q, want application/json", ct)
	}
}

// handshakeInfo is the payload of an open packet.
type handshakeInfo struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int64    `json:"pingInterval"`
	PingTimeout  int64    `json:"pingTimeout"`
	MaxPayload   int64    `json:"maxPayload"`
	raw          string
}

func parseOpen(t testing.TB, packet string) handshakeInfo {
	t.Helper()
	if !strings.HasPrefix(packet, "0") {
		t.Fatalf("first packet %q is not an open packet", packet)
	}
	var h handshakeInfo
	dec := json.NewDecoder(strings.NewReader(packet[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("open packet %q: %v", packet, err)
	}
	h.raw = packet[1:]
	return h
}

// splitPayload splits a long-polling body into its packets.
func splitPayload(body string) []string { return strings.Split(body, "\x1e") }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// ---- long-polling client ----

type pollClient struct {
	ts   *testServer
	sid  string
	open handshakeInfo
	rec  *recorder
}

// pollHandshake opens a polling session and returns its client.
func (ts *testServer) pollHandshake(query ...string) *pollClient {
	ts.t.Helper()
	q := "EIO=4&transport=polling"
	if len(query) > 0 {
		q += "&" + strings.Join(query, "&")
	}
	res := ts.mustDo(http.MethodGet, ts.url(q), nil, nil)
	if res.status != http.StatusOK {
		ts.t.Fatalf("handshake: status %d, body %q", res.status, res.body)
	}
	pkts := splitPayload(res.body)
	if len(pkts) != 1 {
		ts.t.Fatalf("handshake answered %d packets %q, want the open packet alone", len(pkts), pkts)
	}
	h := parseOpen(ts.t, pkts[0])
	return &pollClient{ts: ts, sid: h.SID, open: h, rec: ts.rec(h.SID)}
}

func (pc *pollClient) url() string {
	return pc.ts.url("EIO=4&transport=polling&sid=" + url.QueryEscape(pc.sid))
}

// get polls once; an error means no answer within requestTimeout.
func (pc *pollClient) get() (response, error) {
	return pc.ts.do(http.MethodGet, pc.url(), nil, nil)
}

func (pc *pollClient) mustGet() response {
	pc.ts.t.Helper()
	return pc.ts.mustDo(http.MethodGet, pc.url(), nil, nil)
}

// mustGetOK polls once and returns the packets, failing on anything but 200.
func (pc *pollClient) mustGetOK() []string {
	pc.ts.t.Helper()
	res := pc.mustGet()
	if res.status != http.StatusOK {
		pc.ts.t.Fatalf("GET: status %d, body %q", res.status, res.body)
	}
	return splitPayload(res.body)
}

func (pc *pollClient) post(body string) (response, error) {
	return pc.ts.do(http.MethodPost, pc.url(), strings.NewReader(body), http.Header{"Content-Type": {"text/plain;charset=UTF-8"}})
}

func (pc *pollClient) mustPost(body string) response {
	pc.ts.t.Helper()
	res, err := pc.post(body)
	if err != nil {
		pc.ts.t.Fatalf("POST: %v", err)
	}
	return res
}

// mustPostOK sends a payload and fails unless it is accepted.
func (pc *pollClient) mustPostOK(body string) {
	pc.ts.t.Helper()
	res := pc.mustPost(body)
	if res.status != http.StatusOK || res.body != "ok" {
		pc.ts.t.Fatalf("POST %q: status %d, body %q; want 200 ok", body, res.status, res.body)
	}
}

// pollWaiting reports whether a GET of the session is parked on the server waiting for packets.
func (pc *pollClient) pollWaiting() bool {
	pc.rec.conn.mu.Lock()
	defer pc.rec.conn.mu.Unlock()
	return pc.rec.conn.pollWake != nil
}

// upgrading reports whether the session is between a WebSocket probe and its outcome.
func (pc *pollClient) upgrading() bool {
	pc.rec.conn.mu.Lock()
	defer pc.rec.conn.mu.Unlock()
	return pc.rec.conn.upgrading
}

// startGet sends a GET in the background; its answer arrives on the returned channel.
func (pc *pollClient) startGet() <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		res, err := pc.get()
		ch <- getResult{res, err}
	}()
	return ch
}

type getResult struct {
	res response
	err error
}

// awaitGet waits for a background GET; it fails the test if the GET is not answered in time.
func awaitGet(t testing.TB, ch <-chan getResult) response {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("GET was not answered: %v", r.err)
		}
		return r.res
	case <-time.After(requestTimeout + time.Second):
		t.Fatalf("GET was not answered within %v", requestTimeout)
	}
	return response{}
}

// ---- raw requests over TCP, for bodies net/http would not send as written ----

// rawRequest writes head and then body (in chunks of chunk bytes, concurrently with reading the
// answer, so that a server which answers early is seen to do so) and returns the answer.
func (ts *testServer) rawRequest(head string, body []byte, chunk int) (response, error) {
	conn, err := net.DialTimeout("tcp", ts.http.Listener.Addr().String(), requestTimeout)
	if err != nil {
		return response{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(requestTimeout))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := io.WriteString(conn, head); err != nil {
			return
		}
		for len(body) > 0 {
			n := min(chunk, len(body))
			if _, err := conn.Write(body[:n]); err != nil {
				return // the server answered and hung up: expected when it refuses the body
			}
			body = body[n:]
		}
	}()
	defer func() { conn.Close(); <-done }()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: string(b)}, nil
}

// chunked encodes body with HTTP/1.1 chunked transfer coding, in chunks of size n.
func chunked(body []byte, n int) []byte {
	var b []byte
	for len(body) > 0 {
		k := min(n, len(body))
		b = fmt.Appendf(b, "%x\r\n", k)
		b = append(b, body[:k]...)
		b = append(b, "\r\n"...)
		body = body[k:]
	}
	return append(b, "0\r\n\r\n"...)
}

// ---- WebSocket client ----

type wsClient struct {
	t    testing.TB
	conn net.Conn
	rw   io.ReadWriter
	wmu  sync.Mutex
}

type lockedWriter struct{ c *wsClient }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.c.conn.Write(p)
}

// dialWS opens a WebSocket to the engine; the connection is closed on cleanup.
func (ts *testServer) dialWS(query string, header http.Header) (*wsClient, error) {
	return ts.dialWSWith(query, header, nil)
}

// dialWSWith is dialWS with the TCP connection dialled by netDial (nil: the default dialer).
func (ts *testServer) dialWSWith(query string, header http.Header, netDial func(ctx context.Context, network, addr string) (net.Conn, error)) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	d := ws.Dialer{NetDial: netDial}
	if header != nil {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	conn, br, _, err := d.Dial(ctx, ts.wsURL(query))
	if err != nil {
		return nil, err
	}
	c := &wsClient{t: ts.t, conn: conn}
	var r io.Reader = conn
	if br != nil {
		r = io.MultiReader(br, conn) // the server may have written the open packet with the handshake
	}
	c.rw = struct {
		io.Reader
		io.Writer
	}{r, lockedWriter{c}}
	ts.t.Cleanup(func() { conn.Close() })
	return c, nil
}

func (ts *testServer) mustDialWS(query string) *wsClient {
	ts.t.Helper()
	c, err := ts.dialWS(query, nil)
	if err != nil {
		ts.t.Fatalf("WebSocket dial %s: %v", query, err)
	}
	return c
}

// wsHandshake opens a session on WebSocket and returns the client and the open packet.
func (ts *testServer) wsHandshake() (*wsClient, handshakeInfo, *recorder) {
	ts.t.Helper()
	c := ts.mustDialWS("EIO=4&transport=websocket")
	h := parseOpen(ts.t, c.mustReadText())
	return c, h, ts.rec(h.SID)
}

// read reads the next data message; control frames are answered on the way. A close frame from
// the server comes back as a wsutil.ClosedError.
func (c *wsClient) read() ([]byte, ws.OpCode, error) {
	c.conn.SetReadDeadline(time.Now().Add(waitTimeout))
	return wsutil.ReadServerData(c.rw)
}

func (c *wsClient) mustRead() ([]byte, ws.OpCode) {
	c.t.Helper()
	data, op, err := c.read()
	if err != nil {
		c.t.Fatalf("WebSocket read: %v", err)
	}
	return data, op
}

func (c *wsClient) mustReadText() string {
	c.t.Helper()
	data, op := c.mustRead()
	if op != ws.OpText {
		c.t.Fatalf("got a %v frame %q, want text", op, data)
	}
	return string(data)
}

// readClose reads until the server ends the connection and returns the close code it sent (0 when
// the connection ended without a close frame).
func (c *wsClient) readClose() (ws.StatusCode, error) {
	for {
		_, _, err := c.read()
		if err == nil {
			continue
		}
		var closed wsutil.ClosedError
		if errors.As(err, &closed) {
			// The close frame has been answered; like a browser, hang up now that the server is done.
			c.conn.Close()
			return closed.Code, nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, err
		}
		return 0, nil // EOF or reset: closed without a close frame
	}
}

func (c *wsClient) write(op ws.OpCode, p []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	return wsutil.WriteClientMessage(lockedWriter{c}, op, p)
}

func (c *wsClient) mustWriteText(s string) {
	c.t.Helper()
	if err := c.write(ws.OpText, []byte(s)); err != nil {
		c.t.Fatalf("WebSocket write %q: %v", s, err)
	}
}

// writeFrame writes one (masked) frame, for fragmented messages.
func (c *wsClient) writeFrame(op ws.OpCode, fin bool, p []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	f := ws.MaskFrameInPlace(ws.NewFrame(op, fin, append([]byte(nil), p...)))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return ws.WriteFrame(c.conn, f)
}

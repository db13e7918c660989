package app_test

// The catalogue of bad input (issue 6, point 8), driven over the wire against chorus running in this
// process, so that the goroutines can be counted: after every case they must come back to their
// baseline exactly. The cases and what each must cause are in tests/badinput/catalogue.json, which
// the end-to-end suite (tests/node/badinput.test.mjs) runs too against the built binary.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/protocol"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// catalogue is tests/badinput/catalogue.json; its "about" describes every field.
type catalogue struct {
	Namespaces []string          `json:"namespaces"`
	Env        map[string]string `json:"env"`
	Cases      []badCase         `json:"cases"`
}

type badCase struct {
	Name       string     `json:"name"`
	Level      string     `json:"level"`
	Transports []string   `json:"transports"`
	Send       []sendItem `json:"send"`
	Repeat     int        `json:"repeat"`
	WSBytes    string     `json:"wsBytes"`
	Body       *string    `json:"body"`
	Chunked    bool       `json:"chunked"`
	BodyShort  int        `json:"bodyShort"`
	Hangup     bool       `json:"hangup"`
	HTTP       *struct {
		Method    string            `json:"method"`
		Query     string            `json:"query"`
		Headers   map[string]string `json:"headers"`
		WebSocket bool              `json:"websocket"`
		Count     int               `json:"count"`
	} `json:"http"`
	Expect struct {
		Close     string `json:"close"`
		WSCode    int    `json:"wsCode"`
		Status    int    `json:"status"`
		ErrorCode *int   `json:"errorCode"`
		AtLeast   int    `json:"atLeast"`
		Ack       *struct {
			ID   uint64 `json:"id"`
			Code string `json:"code"`
		} `json:"ack"`
		ConnectError *struct {
			Nsp     string `json:"nsp"`
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"connectError"`
		Delivers int `json:"delivers"`
	} `json:"expect"`
}

// sendItem is a text packet ("..."), a binary one ({binary: hex}) or a text one of raw bytes
// ({textHex: hex}).
type sendItem struct {
	Text    *string
	Binary  string `json:"binary"`
	TextHex string `json:"textHex"`
}

func (s *sendItem) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		s.Text = new(string)
		return json.Unmarshal(b, s.Text)
	}
	type plain sendItem
	return json.Unmarshal(b, (*plain)(s))
}

func (c badCase) transports() []string {
	switch {
	case len(c.Transports) > 0:
		return c.Transports
	case c.Level == "none":
		return []string{"http"}
	}
	return []string{"websocket", "polling"}
}

func loadCatalogue(t testing.TB) catalogue {
	t.Helper()
	b, err := os.ReadFile("../../tests/badinput/catalogue.json")
	if err != nil {
		t.Fatal(err)
	}
	var c catalogue
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("catalogue.json: %v", err)
	}
	return c
}

// enginePacket is an Engine.IO packet as sent or received.
type enginePacket struct {
	data   []byte
	binary bool
}

// badRunner runs the cases against one chorus.
type badRunner struct {
	url, host string
	srv       *sio.Server
	logs      *logBuffer
	macros    *regexp.Regexp
	tokens    map[string]string
	client    *http.Client // no keep-alive: every request's connection is gone once it is answered

	receiver *siotest.Client
	apiKey   string
	seq      int
	baseline int // goroutines with only the control clients connected
}

// TestBadInputCatalogue runs every case of the catalogue on each of its transports. After each one,
// besides what the case expects: the server still serves, the control client in the case's room
// has received the control message and only what the case delivers, and the goroutines are back to
// their baseline exactly (nothing leaked: no reader, timer goroutine or lingering close left).
func TestBadInputCatalogue(t *testing.T) {
	cat := loadCatalogue(t)
	cfg, err := config.Load(nil, func(k string) string { return cat.Env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cat.Namespaces {
		cfg.Namespaces = append(cfg.Namespaces, config.Namespace{Name: n})
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := &badRunner{logs: &logBuffer{}, client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}}
	r.macros = r.macrosRE()
	mint := func(sub string, ttl time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(ttl).Unix()}).SignedString([]byte(cfg.JWTSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r.tokens = map[string]string{"TOKEN": mint("catalogue", time.Hour), "TOKEN_OTHER": mint("someone-else", time.Hour), "TOKEN_EXPIRED": mint("catalogue", -time.Hour)}

	srv, h := app.New(cfg, slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ts := httptest.NewUnstartedServer(h)
	ts.Config = app.HTTPServer(h, slog.New(slog.DiscardHandler))
	ts.Start()
	defer func() {
		srv.Close()
		ts.Close()
	}()
	r.srv, r.url, r.host, r.apiKey = srv, ts.URL, strings.TrimPrefix(ts.URL, "http://"), cfg.APIKey

	auth := map[string]string{"token": r.tokens["TOKEN"]}
	r.receiver = mustDialWith(t, r.url, "/", auth, nil)
	if a := request(t, r.receiver, "join", "catalogue"); !a.OK {
		t.Fatalf("control join: %+v", a)
	}
	// Taken in a subtest, as the cases run: the subtest's own goroutine is part of it.
	t.Run("baseline", func(t *testing.T) {
		r.control(t, 0)
		r.baseline = r.settle(t, -1)
	})

	runs := 0
	for i, c := range cat.Cases {
		for j, transport := range c.transports() {
			addr := fmt.Sprintf("10.%d.%d.%d", 1+j, i/250, 1+i%250) // one client address per run
			t.Run(transport+"/"+c.Name, func(t *testing.T) {
				r.run(t, c, transport, addr)
				if t.Failed() {
					return
				}
				if res, err := r.client.Get(r.url + "/healthz"); err != nil || res.StatusCode != http.StatusOK {
					t.Fatalf("/healthz after the case: %v %v", res, err)
				} else {
					res.Body.Close()
				}
				r.control(t, c.Expect.Delivers)
				r.settle(t, r.baseline)
			})
			runs++
		}
	}
	t.Logf("%d cases of bad input, %d runs (case × transport)", len(cat.Cases), runs)
}

// macrosRE matches the catalogue's macros.
func (r *badRunner) macrosRE() *regexp.Regexp {
	return regexp.MustCompile(`\$(TOKEN_OTHER|TOKEN_EXPIRED|TOKEN|SID|N)|\$R\(([^,]*?),(\d+)\)`)
}

// expand replaces the catalogue's macros in s ($N is 0).
func (r *badRunner) expand(s, sid string) string { return r.expandN(s, sid, 0) }

func (r *badRunner) expandN(s, sid string, n int) string {
	return r.macros.ReplaceAllStringFunc(s, func(m string) string {
		sub := r.macros.FindStringSubmatch(m)
		switch {
		case sub[1] == "SID":
			return sid
		case sub[1] == "N":
			return strconv.Itoa(n)
		case sub[1] != "":
			return r.tokens[sub[1]]
		}
		n, _ := strconv.Atoi(sub[3])
		return strings.Repeat(sub[2], n)
	})
}

func (r *badRunner) hex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(r.expand(s, ""), " ", ""))
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

func (r *badRunner) packets(t testing.TB, c badCase) []enginePacket {
	var out []enginePacket
	for n := range max(c.Repeat, 1) {
		for _, it := range c.Send {
			switch {
			case it.Text != nil:
				out = append(out, enginePacket{data: []byte(r.expandN(*it.Text, "", n))})
			case it.TextHex != "":
				out = append(out, enginePacket{data: r.hex(t, it.TextHex)})
			default:
				out = append(out, enginePacket{data: r.hex(t, it.Binary), binary: true})
			}
		}
	}
	return out
}

// session is one Engine.IO session of the runner's, on either transport.
type session interface {
	ID() string
	// Send sends packets: one WebSocket message each, or one polling POST (whose status it returns).
	Send(pkts []enginePacket) (status int, err error)
	// Next returns the next packet the server sends.
	Next(d time.Duration) (enginePacket, error)
	// Closed reads until the session ends and returns the WebSocket close code (0: none).
	Closed(d time.Duration) (code int, err error)
	Close()
}

func (r *badRunner) run(t *testing.T, c badCase, transport, addr string) {
	if c.Level == "none" {
		r.runHTTP(t, c, addr, "")
		return
	}
	var s session
	var err error
	if transport == "websocket" {
		s, err = r.dialWS(addr)
	} else {
		s, err = r.openPolling(addr)
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if c.Level != "engine" {
		r.mustExchange(t, s, `40{"token":"`+r.tokens["TOKEN"]+`"}`, func(p enginePacket) bool { return bytes.HasPrefix(p.data, []byte(`40{"sid"`)) })
		r.mustExchange(t, s, `429000["join","catalogue"]`, func(p enginePacket) bool { return string(p.data) == `439000[{"ok":true}]` })
	}

	status := http.StatusOK
	switch {
	case c.HTTP != nil:
		r.runHTTP(t, c, addr, s.ID())
	case c.WSBytes != "":
		if _, err := s.(*wsSession).conn.Write(r.hex(t, c.WSBytes)); err != nil {
			t.Fatal(err)
		}
	case c.BodyShort > 0:
		status = 0 // no answer to a body that never ends
		r.postShort(t, s.ID(), addr, r.expand(*c.Body, ""), c.BodyShort)
	case c.Body != nil:
		status = s.(*pollSession).post(strings.NewReader(r.expand(*c.Body, "")), c.Chunked)
	default:
		// A write may fail once the server has closed (a flood): what it caused is checked below.
		status, _ = s.Send(r.packets(t, c))
	}
	if c.Hangup {
		s.(*wsSession).conn.Close()
	}
	if transport == "polling" && c.HTTP == nil && status != 0 {
		if want := cmp(c.Expect.Status, http.StatusOK); status != want {
			t.Errorf("POST answered %d, want %d", status, want)
		}
	}

	e := c.Expect
	switch {
	case e.Close != "":
		if !c.Hangup {
			code, err := s.Closed(5 * time.Second)
			if err != nil {
				t.Fatalf("the session did not end: %v", err)
			}
			s.Close() // as a client does once the server has closed
			if e.WSCode != 0 && code != e.WSCode {
				t.Errorf("WebSocket close code %d, want %d", code, e.WSCode)
			}
		}
		r.waitLog(t, "engine close", "conn", s.ID(), "reason", e.Close)
		return
	case e.Ack != nil:
		p := r.next(t, s, func(p enginePacket) bool { return ackID(p) == e.Ack.ID })
		_, _, data := decodeSIO(p)
		var a ack
		if err := json.Unmarshal(bytes.Trim(data, "[]"), &a); err != nil {
			t.Fatalf("ack %q: %v", p.data, err)
		}
		if got := code(a); got != e.Ack.Code || a.OK != (e.Ack.Code == "") {
			t.Errorf("ack %s, want code %q", p.data, e.Ack.Code)
		}
	case e.ConnectError != nil:
		want := e.ConnectError
		nsp := r.expand(want.Nsp, "")
		p := r.next(t, s, func(p enginePacket) bool {
			typ, pn, _ := decodeSIO(p)
			return typ == protocol.ConnectError && pn == nsp
		})
		_, _, data := decodeSIO(p)
		var got struct {
			Message string
			Data    struct{ Code string }
		}
		json.Unmarshal(data, &got)
		if got.Message != want.Message || got.Data.Code != want.Code {
			t.Errorf("connect_error %s, want message %q code %q", abbrev(p.data), want.Message, want.Code)
		}
	}
	// Nothing closed: the session still works.
	if c.Level == "engine" {
		r.mustExchange(t, s, `40{"token":"`+r.tokens["TOKEN"]+`"}`, func(p enginePacket) bool { return bytes.HasPrefix(p.data, []byte(`40{"sid"`)) })
	} else {
		r.mustExchange(t, s, `429001["join","catalogue"]`, func(p enginePacket) bool { return string(p.data) == `439001[{"ok":true}]` })
	}
	if r.logs.has("engine close", "conn", s.ID()) {
		t.Errorf("the session was closed")
	}
}

func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func abbrev(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q… (%d bytes)", b[:200], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// decodeSIO decodes the Socket.IO packet in an Engine.IO message packet.
func decodeSIO(p enginePacket) (protocol.Type, string, []byte) {
	if p.binary || len(p.data) < 2 || p.data[0] != '4' {
		return 255, "", nil
	}
	sp, _, err := protocol.DecodeHeader(p.data[1:])
	if err != nil {
		return 255, "", nil
	}
	return sp.Type, sp.Nsp, sp.Data
}

// ackID returns the id of an ACK packet, or 0.
func ackID(p enginePacket) uint64 {
	if p.binary || len(p.data) < 2 || p.data[0] != '4' {
		return 0
	}
	sp, _, err := protocol.DecodeHeader(p.data[1:])
	if err != nil || sp.Type != protocol.Ack || !sp.HasID {
		return 0
	}
	return sp.ID
}

// next returns the first packet from the server that match accepts, skipping others (pings, the
// personal room's events…).
func (r *badRunner) next(t *testing.T, s session, match func(enginePacket) bool) enginePacket {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var seen []string
	for {
		p, err := s.Next(time.Until(deadline))
		if err != nil {
			t.Fatalf("no matching packet: %v (got %v)", err, seen)
		}
		if match(p) {
			return p
		}
		seen = append(seen, abbrev(p.data))
	}
}

func (r *badRunner) mustExchange(t *testing.T, s session, send string, match func(enginePacket) bool) {
	t.Helper()
	if _, err := s.Send([]enginePacket{{data: []byte(send)}}); err != nil {
		t.Fatalf("send %q: %v", send, err)
	}
	r.next(t, s, match)
}

func (r *badRunner) waitLog(t *testing.T, msg string, kv ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !r.logs.has(msg, kv...) {
		if time.Now().After(deadline) {
			t.Fatalf("no log %q %v", msg, kv)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// control publishes the next control message and checks that the receiver gets it, after exactly
// delivers other messages.
func (r *badRunner) control(t *testing.T, delivers int) {
	t.Helper()
	r.seq++
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Through the HTTP API: a publishing socket's reader would linger after each message
	// (engine.lingerIdle) and every case would wait for it to go before counting goroutines.
	req, _ := http.NewRequest(http.MethodPost, r.url+"/api/v1/emit", strings.NewReader(fmt.Sprintf(`{"rooms":["catalogue"],"event":"control","data":%d}`, r.seq)))
	req.Header.Set("Authorization", "Bearer "+r.apiKey)
	res, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("control emit: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("control emit: %d", res.StatusCode)
	}
	others := 0
	for {
		ev, err := r.receiver.Next(ctx)
		if err != nil {
			t.Fatalf("control message %d not received: %v", r.seq, err)
		}
		if ev.Name == "control" && string(ev.Args[0]) == strconv.Itoa(r.seq) {
			break
		}
		others++
	}
	if others != delivers {
		t.Errorf("the control client received %d messages of the case, want %d", others, delivers)
	}
}

// settle waits until only the control clients' sessions are left and the goroutine count is
// want (-1: until it stops moving), and returns it.
func (r *badRunner) settle(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.srv.Sessions() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions open, want the control one", r.srv.Sessions())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// No namespace is left behind: the dynamic ones a case made go with their last socket, and
	// those a refused socket asked for were never made.
	for len(r.srv.Namespaces()) != 1 {
		if time.Now().After(deadline) {
			var names []string
			for _, n := range r.srv.Namespaces() {
				names = append(names, n.Name())
			}
			t.Fatalf("namespaces %q are left, want only /", names)
		}
		time.Sleep(5 * time.Millisecond)
	}
	last, stable := -1, 0
	for {
		n := runtime.NumGoroutine()
		// The baseline is taken once the count has not moved for longer than a reader goroutine
		// lingers after input (engine.lingerIdle, 200 ms).
		if n == want || (want < 0 && n == last && stable >= 60) {
			return n
		}
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		if time.Now().After(deadline) {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, baseline %d:\n%s", n, want, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runHTTP sends a case's http requests (Count of them at once) from addr; sid is the case's session.
func (r *badRunner) runHTTP(t *testing.T, c badCase, addr, sid string) {
	h := c.HTTP
	n := max(h.Count, 1)
	type result struct {
		status int
		body   string
		close  func()
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, err := http.NewRequest(cmpStr(h.Method, http.MethodGet), r.url+"/socket.io/?"+r.expand(h.Query, sid), nil)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("X-Forwarded-For", addr)
			if h.WebSocket {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", "13")
				req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			}
			for k, v := range h.Headers {
				req.Header.Set(k, r.expand(v, sid))
			}
			res, err := r.client.Do(req)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			if res.StatusCode == http.StatusSwitchingProtocols {
				results[i] = result{status: res.StatusCode, close: func() { res.Body.Close() }}
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			results[i] = result{status: res.StatusCode, body: string(body)}
			if res.StatusCode == http.StatusOK && strings.HasPrefix(string(body), "0{") {
				var open struct{ SID string }
				json.Unmarshal(body[1:], &open)
				results[i].close = func() { // a session the flood opened: closed again
					res, err := r.client.Post(r.url+"/socket.io/?EIO=4&transport=polling&sid="+open.SID, "text/plain", strings.NewReader("1"))
					if err == nil {
						res.Body.Close()
					}
				}
			}
		})
	}
	wg.Wait()
	matched := 0
	for i, res := range results {
		if res.close != nil {
			res.close()
		}
		if res.status == c.Expect.Status {
			matched++
			if c.Expect.ErrorCode != nil {
				var e struct{ Code *int }
				if json.Unmarshal([]byte(res.body), &e); e.Code == nil || *e.Code != *c.Expect.ErrorCode {
					t.Errorf("request %d answered %q, want Engine.IO error code %d", i, res.body, *c.Expect.ErrorCode)
				}
			}
		} else if n == 1 || (res.status != http.StatusOK && res.status != http.StatusSwitchingProtocols) {
			t.Errorf("request %d answered %d %q, want %d", i, res.status, abbrev([]byte(res.body)), c.Expect.Status)
		}
	}
	if want := cmp(c.Expect.AtLeast, n); matched < want {
		t.Errorf("%d of %d requests answered %d, want at least %d", matched, n, c.Expect.Status, want)
	}
}

func cmpStr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// postShort sends a polling POST whose body is short of its Content-Length by short bytes, and
// hangs up.
func (r *badRunner) postShort(t *testing.T, sid, addr, body string, short int) {
	conn, err := net.Dial("tcp", r.host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: %s\r\nX-Forwarded-For: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
		sid, r.host, addr, len(body)+short, body)
}

// wsSession is a session over WebSocket.
type wsSession struct {
	id   string
	conn net.Conn
	rw   io.ReadWriter
}

func (r *badRunner) dialWS(addr string) (*wsSession, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"X-Forwarded-For": {addr}})}
	conn, br, _, err := d.Dial(ctx, "ws://"+r.host+"/socket.io/?EIO=4&transport=websocket")
	if err != nil {
		return nil, err
	}
	s := &wsSession{conn: conn, rw: conn}
	if br != nil {
		s.rw = struct {
			io.Reader
			io.Writer
		}{br, conn}
	}
	p, err := s.Next(5 * time.Second)
	if err != nil || !bytes.HasPrefix(p.data, []byte("0{")) {
		conn.Close()
		return nil, fmt.Errorf("open packet %q: %v", p.data, err)
	}
	var open struct{ SID string }
	json.Unmarshal(p.data[1:], &open)
	s.id = open.SID
	return s, nil
}

func (s *wsSession) ID() string { return s.id }

func (s *wsSession) Send(pkts []enginePacket) (int, error) {
	for _, p := range pkts {
		op := ws.OpText
		if p.binary {
			op = ws.OpBinary
		}
		s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := wsutil.WriteClientMessage(s.conn, op, p.data); err != nil {
			return 0, err
		}
	}
	return http.StatusOK, nil
}

func (s *wsSession) Next(d time.Duration) (enginePacket, error) {
	s.conn.SetReadDeadline(time.Now().Add(d))
	data, op, err := wsutil.ReadServerData(s.rw)
	if err != nil {
		return enginePacket{}, err
	}
	return enginePacket{data: data, binary: op == ws.OpBinary}, nil
}

func (s *wsSession) Closed(d time.Duration) (int, error) {
	s.conn.SetReadDeadline(time.Now().Add(d))
	for {
		_, _, err := wsutil.ReadServerData(s.rw)
		var closed wsutil.ClosedError
		switch {
		case errors.As(err, &closed):
			return int(closed.Code), nil
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), isReset(err):
			return 0, nil
		case err != nil:
			return 0, err
		}
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func (s *wsSession) Close() { s.conn.Close() }

// pollSession is a session over HTTP long-polling.
type pollSession struct {
	r       *badRunner
	id      string
	addr    string
	pending []enginePacket
	closed  bool
}

func (r *badRunner) openPolling(addr string) (*pollSession, error) {
	s := &pollSession{r: r, addr: addr}
	status, pkts, err := s.get()
	if err != nil || status != http.StatusOK || len(pkts) == 0 || !bytes.HasPrefix(pkts[0].data, []byte("0{")) {
		return nil, fmt.Errorf("handshake: %d %v %v", status, pkts, err)
	}
	var open struct{ SID string }
	json.Unmarshal(pkts[0].data[1:], &open)
	s.id = open.SID
	s.pending = pkts[1:]
	return s, nil
}

func (s *pollSession) ID() string { return s.id }

func (s *pollSession) url() string {
	u := s.r.url + "/socket.io/?EIO=4&transport=polling"
	if s.id != "" {
		u += "&sid=" + s.id
	}
	return u
}

func (s *pollSession) get() (int, []enginePacket, error) {
	req, _ := http.NewRequest(http.MethodGet, s.url(), nil)
	req.Header.Set("X-Forwarded-For", s.addr)
	res, err := s.r.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		return res.StatusCode, nil, err
	}
	var pkts []enginePacket
	for part := range bytes.SplitSeq(body, []byte{0x1e}) {
		if len(part) > 0 && part[0] == 'b' {
			data, _ := base64.StdEncoding.DecodeString(string(part[1:]))
			pkts = append(pkts, enginePacket{data: data, binary: true})
		} else {
			pkts = append(pkts, enginePacket{data: part})
		}
	}
	return res.StatusCode, pkts, nil
}

func (s *pollSession) post(body io.Reader, chunked bool) int {
	if chunked {
		body = struct{ io.Reader }{body} // no length known: sent chunked
	}
	req, _ := http.NewRequest(http.MethodPost, s.url(), body)
	req.Header.Set("X-Forwarded-For", s.addr)
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	res, err := s.r.client.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func (s *pollSession) Send(pkts []enginePacket) (int, error) {
	var b []byte
	for i, p := range pkts {
		if i > 0 {
			b = append(b, 0x1e)
		}
		if p.binary {
			b = append(b, 'b')
			b = base64.StdEncoding.AppendEncode(b, p.data)
		} else {
			b = append(b, p.data...)
		}
	}
	return s.post(bytes.NewReader(b), false), nil
}

func (s *pollSession) Next(d time.Duration) (enginePacket, error) {
	deadline := time.Now().Add(d)
	for len(s.pending) == 0 {
		if time.Now().After(deadline) {
			return enginePacket{}, errors.New("timed out")
		}
		status, pkts, err := s.get()
		if err != nil || status != http.StatusOK {
			return enginePacket{}, fmt.Errorf("GET: %d %v", status, err)
		}
		s.pending = pkts
	}
	p := s.pending[0]
	s.pending = s.pending[1:]
	return p, nil
}

func (s *pollSession) Closed(d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for _, p := range s.pending {
		if string(p.data) == "1" {
			return 0, nil
		}
	}
	for time.Now().Before(deadline) {
		status, pkts, err := s.get()
		if err != nil {
			return 0, err
		}
		if status != http.StatusOK {
			return 0, nil // the session is gone
		}
		for _, p := range pkts {
			if string(p.data) == "1" {
				return 0, nil
			}
		}
	}
	return 0, errors.New("still open")
}

func (s *pollSession) Close() {
	if s.closed {
		return
	}
	s.closed = true
	if s.post(strings.NewReader("1"), false) == http.StatusOK {
		s.get() // answered with a noop: the session ends now rather than after clientCloseLinger
	}
}

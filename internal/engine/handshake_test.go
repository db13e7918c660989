package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestPollingHandshake(t *testing.T) {
	tests := []struct {
		name         string
		opts         Options
		wantUpgrades []string
		wantInterval int64
		wantTimeout  int64
		wantMax      int64
	}{
		{name: "defaults", wantUpgrades: []string{"websocket"}, wantInterval: 25000, wantTimeout: 20000, wantMax: 1e6},
		{
			name:         "configured",
			opts:         Options{PingInterval: 1500 * time.Millisecond, PingTimeout: 750 * time.Millisecond, MaxPayload: 4096},
			wantUpgrades: []string{"websocket"}, wantInterval: 1500, wantTimeout: 750, wantMax: 4096,
		},
		{name: "polling only", opts: Options{Transports: []string{Polling}}, wantUpgrades: []string{}, wantInterval: 25000, wantTimeout: 20000, wantMax: 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.opts)
			res := ts.mustDo(http.MethodGet, ts.url("EIO=4&transport=polling"), nil, nil)
			if res.status != http.StatusOK {
				t.Fatalf("status %d, body %q", res.status, res.body)
			}
			if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", ct)
			}
			h := parseOpen(t, res.body) // the open packet alone, nothing after it
			if h.SID == "" {
				t.Fatal("open packet has no sid")
			}
			if h.Upgrades == nil || !slices.Equal(h.Upgrades, tt.wantUpgrades) {
				t.Errorf("upgrades = %#v (raw %s), want %#v", h.Upgrades, h.raw, tt.wantUpgrades)
			}
			if h.PingInterval != tt.wantInterval || h.PingTimeout != tt.wantTimeout || h.MaxPayload != tt.wantMax {
				t.Errorf("pingInterval, pingTimeout, maxPayload = %d, %d, %d; want %d, %d, %d",
					h.PingInterval, h.PingTimeout, h.MaxPayload, tt.wantInterval, tt.wantTimeout, tt.wantMax)
			}
			r := ts.rec(h.SID)
			if r.conn.ID() != h.SID || r.conn.Transport() != Polling || ts.Len() != 1 {
				t.Errorf("server side: id %q transport %q sessions %d", r.conn.ID(), r.conn.Transport(), ts.Len())
			}
			if got := r.conn.Request().Query.Get("transport"); got != "polling" {
				t.Errorf("Request().Query transport = %q", got)
			}

			// A second handshake is a second session with another id.
			h2 := ts.pollHandshake().open
			if h2.SID == h.SID {
				t.Errorf("two handshakes got the same sid %q", h.SID)
			}
			if ts.Len() != 2 {
				t.Errorf("Len() = %d after two handshakes, want 2", ts.Len())
			}
		})
	}
}

func TestWebSocketHandshake(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{name: "both transports"},
		{name: "websocket only", opts: Options{Transports: []string{WebSocket}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.PingInterval, tt.opts.PingTimeout, tt.opts.MaxPayload = 3*time.Second, 2*time.Second, 1234
			ts := newTestServer(t, tt.opts)
			_, h, r := ts.wsHandshake()
			if h.Upgrades == nil || len(h.Upgrades) != 0 {
				t.Errorf("upgrades = %#v (raw %s), want []", h.Upgrades, h.raw)
			}
			if h.PingInterval != 3000 || h.PingTimeout != 2000 || h.MaxPayload != 1234 {
				t.Errorf("open packet %s: want pingInterval 3000, pingTimeout 2000, maxPayload 1234", h.raw)
			}
			if r.conn.Transport() != WebSocket {
				t.Errorf("Transport() = %q", r.conn.Transport())
			}
		})
	}

	t.Run("polling disabled", func(t *testing.T) {
		ts := newTestServer(t, Options{Transports: []string{WebSocket}})
		checkError(t, ts.mustDo(http.MethodGet, ts.url("EIO=4&transport=polling"), nil, nil), http.StatusBadRequest, codeUnknownTransport)
	})
	t.Run("websocket disabled", func(t *testing.T) {
		ts := newTestServer(t, Options{Transports: []string{Polling}})
		_, err := ts.dialWS("EIO=4&transport=websocket", nil)
		if !errors.Is(err, ws.StatusError(http.StatusBadRequest)) {
			t.Fatalf("dial error = %v, want status 400", err)
		}
	})
}

func TestHandshakeErrors(t *testing.T) {
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	tests := []struct {
		name     string
		method   string
		query    string // %s is replaced by the sid of an open polling session
		header   http.Header
		wantCode int
	}{
		{name: "unknown transport", method: "GET", query: "EIO=4&transport=flashsocket", wantCode: codeUnknownTransport},
		{name: "no transport", method: "GET", query: "EIO=4", wantCode: codeUnknownTransport},
		{name: "EIO 3", method: "GET", query: "EIO=3&transport=polling", wantCode: codeBadVersion},
		{name: "EIO 3 websocket", method: "GET", query: "EIO=3&transport=websocket", header: upgrade, wantCode: codeBadVersion},
		{name: "no EIO", method: "GET", query: "transport=polling", wantCode: codeBadVersion},
		{name: "unknown sid GET", method: "GET", query: "EIO=4&transport=polling&sid=nope", wantCode: codeUnknownSID},
		{name: "unknown sid POST", method: "POST", query: "EIO=4&transport=polling&sid=nope", wantCode: codeUnknownSID},
		{name: "unknown sid websocket", method: "GET", query: "EIO=4&transport=websocket&sid=nope", header: upgrade, wantCode: codeUnknownSID},
		{name: "POST without sid", method: "POST", query: "EIO=4&transport=polling", wantCode: codeBadHandshake},
		{name: "PUT on a session", method: "PUT", query: "EIO=4&transport=polling&sid=%s", wantCode: codeBadRequest},
		{name: "websocket without Upgrade", method: "GET", query: "EIO=4&transport=websocket", wantCode: codeBadRequest},
	}
	ts := newTestServer(t, Options{})
	sid := ts.pollHandshake().sid
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			query := tt.query
			if strings.Contains(query, "%s") {
				query = fmt.Sprintf(query, sid)
			}
			res := ts.mustDo(tt.method, ts.url(query), strings.NewReader("4x"), tt.header)
			checkError(t, res, http.StatusBadRequest, tt.wantCode)
		})
	}
	if n := ts.Len(); n != 1 {
		t.Errorf("refused handshakes left %d sessions, want the 1 opened", n)
	}
}

// AllowRequest refusing a handshake answers 403 on both transports (LIBRARY-DEFECTS #7: the library
// answered 400 on WebSocket), and opens no session.
func TestAllowRequestRefused(t *testing.T) {
	allow := func(r *http.Request) error {
		if r.URL.Query().Get("token") != "good" {
			return errors.New("bad token")
		}
		return nil
	}
	ts := newTestServer(t, Options{AllowRequest: allow})

	tests := []struct {
		name   string
		token  string
		wantOK bool
	}{
		{name: "refused", token: "bad"},
		{name: "no token", token: ""},
		{name: "allowed", token: "good", wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/polling", func(t *testing.T) {
			res := ts.mustDo(http.MethodGet, ts.url("EIO=4&transport=polling&token="+tt.token), nil, nil)
			if tt.wantOK {
				if res.status != http.StatusOK || !strings.HasPrefix(res.body, "0{") {
					t.Fatalf("allowed handshake: status %d body %q", res.status, res.body)
				}
				return
			}
			checkError(t, res, http.StatusForbidden, codeForbidden)
			if !strings.Contains(res.body, "bad token") {
				t.Errorf("body %q does not carry AllowRequest's error", res.body)
			}
		})
		t.Run(tt.name+"/websocket", func(t *testing.T) {
			var status int
			var body string
			d := ws.Dialer{OnStatusError: func(s int, _ []byte, r io.Reader) {
				status = s
				// r is the whole answer, status line included.
				if res, err := http.ReadResponse(bufio.NewReader(r), nil); err == nil {
					b, _ := io.ReadAll(res.Body)
					body = string(b)
				}
			}}
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			conn, _, _, err := d.Dial(ctx, ts.wsURL("EIO=4&transport=websocket&token="+tt.token))
			if tt.wantOK {
				if err != nil {
					t.Fatalf("allowed WebSocket handshake: %v", err)
				}
				conn.Close()
				return
			}
			if err == nil {
				conn.Close()
				t.Fatal("refused WebSocket handshake was upgraded")
			}
			if status != http.StatusForbidden || !strings.Contains(body, `"code":4`) {
				t.Fatalf("refused WebSocket handshake: status %d body %q (err %v), want 403 code 4", status, body, err)
			}
		})
	}
	eventually(t, waitTimeout, func() bool { return ts.Len() == 1 }, "one session (the allowed polling one; the allowed WebSocket one is closed), have %d", ts.Len())
}

func TestCORS(t *testing.T) {
	const allowed, evil = "https://app.example", "https://evil.example"
	tests := []struct {
		name       string
		origins    []string
		method     string
		origin     string // "self" means the server's own origin
		reqHeaders string
		wantStatus int
		wantACAO   bool
	}{
		{name: "no origin", method: "GET", wantStatus: 200},
		{name: "allowed origin", origins: []string{allowed}, method: "GET", origin: allowed, wantStatus: 200, wantACAO: true},
		{name: "own origin", origins: []string{allowed}, method: "GET", origin: "self", wantStatus: 200, wantACAO: true},
		{name: "disallowed origin", origins: []string{allowed}, method: "GET", origin: evil, wantStatus: 403},
		{name: "disallowed origin, none configured", method: "GET", origin: evil, wantStatus: 403},
		{name: "wildcard", origins: []string{"*"}, method: "GET", origin: evil, wantStatus: 200, wantACAO: true},
		{name: "preflight", origins: []string{allowed}, method: "OPTIONS", origin: allowed, reqHeaders: "content-type", wantStatus: 204, wantACAO: true},
		{name: "disallowed preflight", origins: []string{allowed}, method: "OPTIONS", origin: evil, wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, Options{CORSOrigins: tt.origins})
			origin := tt.origin
			if origin == "self" {
				origin = ts.http.URL
			}
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			if tt.method == "OPTIONS" {
				h.Set("Access-Control-Request-Method", "POST")
				h.Set("Access-Control-Request-Headers", tt.reqHeaders)
			}
			res := ts.mustDo(tt.method, ts.url("EIO=4&transport=polling"), nil, h)
			if tt.wantStatus == 403 {
				checkError(t, res, http.StatusForbidden, codeForbidden)
				if got := res.header.Get("Access-Control-Allow-Origin"); got != "" {
					t.Errorf("refused origin got Access-Control-Allow-Origin %q", got)
				}
				if ts.Len() != 0 {
					t.Errorf("refused origin opened a session")
				}
				// The WebSocket transport refuses it as well.
				_, err := ts.dialWS("EIO=4&transport=websocket", http.Header{"Origin": {origin}})
				if !errors.Is(err, ws.StatusError(http.StatusForbidden)) {
					t.Errorf("WebSocket from a refused origin: err %v, want status 403", err)
				}
				return
			}
			if res.status != tt.wantStatus {
				t.Fatalf("status %d (body %q), want %d", res.status, res.body, tt.wantStatus)
			}
			acao := res.header.Get("Access-Control-Allow-Origin")
			if tt.wantACAO {
				if acao != origin || res.header.Get("Access-Control-Allow-Credentials") != "true" {
					t.Errorf("Access-Control-Allow-Origin %q, -Credentials %q; want %q, true", acao, res.header.Get("Access-Control-Allow-Credentials"), origin)
				}
				if !slices.Contains(res.header.Values("Vary"), "Origin") {
					t.Errorf("Vary = %q, want Origin", res.header.Values("Vary"))
				}
			} else if acao != "" {
				t.Errorf("Access-Control-Allow-Origin = %q without an Origin", acao)
			}
			if tt.method == "OPTIONS" {
				if m := res.header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") || !strings.Contains(m, "GET") {
					t.Errorf("Access-Control-Allow-Methods = %q", m)
				}
				if got := res.header.Get("Access-Control-Allow-Headers"); got != tt.reqHeaders {
					t.Errorf("Access-Control-Allow-Headers = %q, want %q", got, tt.reqHeaders)
				}
				if ts.Len() != 0 {
					t.Errorf("a preflight opened a session")
				}
				return
			}
			parseOpen(t, res.body)
			if origin != "" {
				c, err := ts.dialWS("EIO=4&transport=websocket", http.Header{"Origin": {origin}})
				if err != nil {
					t.Fatalf("WebSocket from an allowed origin: %v", err)
				}
				parseOpen(t, c.mustReadText())
			}
		})
	}
}

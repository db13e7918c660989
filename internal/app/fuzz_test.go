package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
)

// errorLog keeps the records logged at error level (a handler that panicked, say).
type errorLog struct {
	mu      sync.Mutex
	records []string
}

func (l *errorLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	l.records = append(l.records, b.String())
	return nil
}
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLog) WithGroup(string) slog.Handler      { return l }

func (l *errorLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.records
	l.records = nil
	return r
}

// FuzzClientSession sends any polling payload into a Socket.IO session of a whole chorus (the
// catalogue's settings: a required JWT, event rate limits, a 64 KiB max payload), in-process: the
// Engine.IO payload decoder, the Socket.IO decoder, the typed handlers of join, leave, publish and
// refresh, the auth middleware and the room policy all see it. Nothing panics (a handler's panic,
// recovered, is logged at error level, which fails the target), the POST is answered 200, 400 or
// 413, and once the client closes the session it is gone. Seeds: every case of the bad-input
// catalogue as one payload.
func FuzzClientSession(f *testing.F) {
	cat := loadCatalogue(f)
	cfg, err := config.Load(nil, func(k string) string { return cat.Env[k] }, io.Discard)
	if err != nil {
		f.Fatal(err)
	}
	cfg.HandshakeRate, cfg.MaxConnsPerIP, cfg.MaxConns = 0, 0, 0 // every session comes from one address
	errs := &errorLog{}
	srv, h := app.New(cfg, slog.New(errs))
	f.Cleanup(func() { srv.Close() })
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "fuzz", "exp": time.Now().Add(24 * time.Hour).Unix()}).SignedString([]byte(cfg.JWTSecret))
	if err != nil {
		f.Fatal(err)
	}
	r := &badRunner{macros: (&badRunner{}).macrosRE(), tokens: map[string]string{"TOKEN": tok, "TOKEN_OTHER": tok, "TOKEN_EXPIRED": tok}}
	for _, c := range cat.Cases {
		var body []byte
		switch {
		case c.Body != nil:
			body = []byte(r.expand(*c.Body, ""))
		case len(c.Send) > 0:
			for i, p := range r.packets(f, c) {
				if i > 0 {
					body = append(body, 0x1e)
				}
				if p.binary {
					body = append(body, 'b')
					body = base64.StdEncoding.AppendEncode(body, p.data)
				} else {
					body = append(body, p.data...)
				}
			}
		}
		if len(body) > 0 && len(body) <= 8192 {
			f.Add(body)
		}
	}

	do := func(t *testing.T, method, sid string, body []byte) (int, string) {
		u := "/socket.io/?EIO=4&transport=polling"
		if sid != "" {
			u += "&sid=" + sid
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req)
		if time.Since(start) > 4*time.Second {
			t.Fatalf("%s %s took %v", method, u, time.Since(start))
		}
		return rec.Code, rec.Body.String()
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		status, open := do(t, http.MethodGet, "", nil)
		if status != http.StatusOK || !strings.HasPrefix(open, "0{") {
			t.Fatalf("handshake: %d %q", status, open)
		}
		var o struct{ SID string }
		json.Unmarshal([]byte(open[1:]), &o)
		if status, _ := do(t, http.MethodPost, o.SID, []byte(`40{"token":"`+tok+`"}`)); status != http.StatusOK {
			t.Fatalf("CONNECT: %d", status)
		}
		if status, got := do(t, http.MethodGet, o.SID, nil); status != http.StatusOK || !strings.HasPrefix(got, `40{"sid"`) {
			t.Fatalf("CONNECT answered %d %q", status, got)
		}
		switch status, _ := do(t, http.MethodPost, o.SID, body); status {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("POST %s answered %d", abbrev(body), status)
		}
		// The client closes, and polls as the stock client does until the session is gone (a
		// session the server closed has its close packet wait for the next poll).
		do(t, http.MethodPost, o.SID, []byte("1"))
		for range 5 {
			if status, _ := do(t, http.MethodGet, o.SID, nil); status != http.StatusOK {
				break
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for srv.Sessions() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the session is still open after its client closed it", abbrev(body))
			}
			time.Sleep(time.Millisecond)
		}
		if e := errs.take(); len(e) > 0 {
			t.Fatalf("%s: logged errors: %v", abbrev(body), e)
		}
	})
}

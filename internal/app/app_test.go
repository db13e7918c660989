package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs chorus in-process on 127.0.0.1 with cfg (defaults changed by edit).
func serve(t *testing.T, edit func(*config.Config)) string {
	t.Helper()
	cfg := config.Default()
	cfg.APIKey = "secret"
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, h := app.New(cfg, slog.New(slog.DiscardHandler))
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	return ts.URL
}

func dial(t *testing.T, url, nsp string) *siotest.Client {
	t.Helper()
	return siotest.Connect(t, url, nsp, nil)
}

type ack struct {
	OK    bool `json:"ok"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func request(t *testing.T, c *siotest.Client, event string, arg any) ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := c.EmitWithAck(ctx, event, arg)
	if err != nil {
		t.Fatalf("%s: %v", event, err)
	}
	var a ack
	if err := json.Unmarshal(ev.Args[0], &a); err != nil {
		t.Fatalf("%s ack %s: %v", event, ev.Args[0], err)
	}
	return a
}

func code(a ack) string {
	if a.Error == nil {
		return ""
	}
	return a.Error.Code
}

func TestHTTPAPI(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) { c.MaxPayload = 2000 })
	member := dial(t, url, "/")
	if a := request(t, member, "join", "news"); !a.OK {
		t.Fatalf("join: %+v", a)
	}
	tests := []struct {
		name       string
		method     string
		key        string
		body       string
		wantStatus int
		wantCode   string
	}{
		{"emit to a room", "POST", "secret", `{"rooms":["news"],"event":"headline","data":{"n":1}}`, 202, ""},
		{"no key", "POST", "", `{"event":"x"}`, 401, "unauthorized"},
		{"wrong key", "POST", "secret2", `{"event":"x"}`, 401, "unauthorized"},
		{"bad json", "POST", "secret", `{"event":`, 400, "bad_json"},
		{"not an object", "POST", "secret", `[1,2]`, 400, "bad_json"},
		{"missing event", "POST", "secret", `{"data":1}`, 400, "invalid_event"},
		{"reserved event", "POST", "secret", `{"event":"disconnect"}`, 400, "invalid_event"},
		{"unknown namespace", "POST", "secret", `{"namespace":"/nope","event":"x"}`, 400, "unknown_namespace"},
		{"too large", "POST", "secret", `{"event":"x","data":"` + strings.Repeat("a", 3000) + `"}`, 413, "payload_too_large"},
		{"wrong method", "GET", "secret", ``, 405, "method_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, url+"/api/v1/emit", strings.NewReader(tc.body))
			if tc.key != "" {
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.wantStatus, body)
			}
			if tc.wantCode == "" {
				return
			}
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tc.wantCode || e.Error.Message == "" {
				t.Fatalf("body %s, want code %s", body, tc.wantCode)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := member.Next(ctx)
	if err != nil || ev.Name != "headline" || string(ev.Args[0]) != `{"n":1}` {
		t.Fatalf("member got %+v, %v", ev, err)
	}
}

func TestAPIDisabledWithoutKey(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) { c.APIKey = "" })
	req, _ := http.NewRequest("POST", url+"/api/v1/emit", bytes.NewBufferString(`{"event":"x"}`))
	req.Header.Set("Authorization", "Bearer ")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("status %d, want 401", res.StatusCode)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	url := serve(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("%s: %d", path, res.StatusCode)
		}
	}
}

// Namespaces come from the config file, exact or by pattern, each with its own room policy; any other
// namespace is refused.
func TestNamespacesAndRoomPolicy(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) {
		c.Namespaces = []config.Namespace{
			{Name: "/chat", Join: []string{"lobby", "team-*"}, Publish: []string{"team-*"}},
			{Name: "/tenant-*", Publish: []string{}},
		}
	})
	chat := dial(t, url, "/chat")
	tests := []struct {
		name, event string
		arg         any
		wantCode    string
	}{
		{"join allowed exact", "join", "lobby", ""},
		{"join allowed pattern", "join", "team-a", ""},
		{"join refused", "join", "secret", "forbidden"},
		{"publish allowed", "publish", map[string]any{"room": "team-a", "event": "m", "data": 1}, ""},
		{"publish refused", "publish", map[string]any{"room": "lobby", "event": "m", "data": 1}, "forbidden"},
	}
	for _, tc := range tests {
		if got := code(request(t, chat, tc.event, tc.arg)); got != tc.wantCode {
			t.Errorf("%s: code %q, want %q", tc.name, got, tc.wantCode)
		}
	}
	tenant := dial(t, url, "/tenant-acme")
	if got := code(request(t, tenant, "join", "anything")); got != "" {
		t.Errorf("join in /tenant-acme: %q", got)
	}
	if got := code(request(t, tenant, "publish", map[string]any{"room": "anything", "event": "m"})); got != "forbidden" {
		t.Errorf("publish in /tenant-acme: %q, want forbidden", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := siotest.Dial(ctx, url, "/other", nil); err == nil || !strings.Contains(err.Error(), "Invalid namespace") {
		t.Errorf("unknown namespace: %v, want connect_error Invalid namespace", err)
	}
	// "/" exists without being configured.
	dial(t, url, "/")
}

// A burst of publishes from one client reaches the other member whole and in order; the sender gets
// nothing back.
func TestPublishBurstInOrder(t *testing.T) {
	t.Parallel()
	url := serve(t, nil)
	a, b := dial(t, url, "/"), dial(t, url, "/")
	for _, c := range []*siotest.Client{a, b} {
		if r := request(t, c, "join", "room"); !r.OK {
			t.Fatal(r)
		}
	}
	const n = 5000
	for i := range n {
		if err := a.Emit("publish", map[string]any{"room": "room", "event": "seq", "data": i}); err != nil {
			t.Fatal(err)
		}
	}
	if r := request(t, a, "publish", map[string]any{"room": "room", "event": "seq", "data": n}); !r.OK {
		t.Fatal(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i <= n; i++ {
		ev, err := b.Next(ctx)
		if err != nil {
			t.Fatalf("after %d: %v", i, err)
		}
		if ev.Name != "seq" || string(ev.Args[0]) != jsonInt(i) {
			t.Fatalf("message %d: %s %s", i, ev.Name, ev.Args)
		}
	}
	// The first thing the sender receives must be b's marker, not one of its own messages.
	if r := request(t, b, "publish", map[string]any{"room": "room", "event": "marker"}); !r.OK {
		t.Fatal(r)
	}
	if ev, err := a.Next(ctx); err != nil || ev.Name != "marker" {
		t.Fatalf("the sender got %+v, %v; want only the other member's marker", ev, err)
	}
}

func jsonInt(i int) string { b, _ := json.Marshal(i); return string(b) }

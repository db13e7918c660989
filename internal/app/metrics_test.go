package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// scrape reads url's /metrics: series (name{labels} as exposed) → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", res.StatusCode)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// waitMetric polls /metrics until series has the value want.
func waitMetric(t *testing.T, url, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, ok := scrape(t, url)[series]
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v), want %v", series, got, ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Traffic moves the metrics as it should, and no label takes a value a client chose: the namespace
// a client created from a pattern counts under the pattern, and room and event names appear nowhere.
func TestMetricsFollowTraffic(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.APIKey = "secret"
	cfg.Namespaces = []config.Namespace{{Name: "/tenant-*"}}
	srv, h := app.New(cfg, slog.New(slog.DiscardHandler))
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	url := ts.URL
	const ns = `namespace="/tenant-*"`

	a, b := dial(t, url, "/tenant-acme"), dial(t, url, "/tenant-acme")
	for _, c := range []*siotest.Client{a, b} {
		if r := request(t, c, "join", "secret-room"); !r.OK {
			t.Fatal(r)
		}
	}
	if r := request(t, a, "publish", map[string]any{"room": "secret-room", "event": "whisper", "data": "hello"}); !r.OK {
		t.Fatal(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ev, err := b.Next(ctx); err != nil || ev.Name != "whisper" {
		t.Fatalf("b got %+v, %v", ev, err)
	}

	// The HTTP API: one emit to both members, one refused, one unknown route.
	for _, r := range []struct {
		path, key string
		want      int
	}{{"/api/v1/emit", "secret", 202}, {"/api/v1/emit", "wrong", 401}, {"/api/v1/nope", "secret", 404}} {
		req, _ := http.NewRequest("POST", url+r.path, strings.NewReader(`{"namespace":"/tenant-acme","rooms":["secret-room"],"event":"whisper"}`))
		req.Header.Set("Authorization", "Bearer "+r.key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != r.want {
			t.Fatalf("POST %s: %d, want %d", r.path, res.StatusCode, r.want)
		}
	}
	for _, c := range []*siotest.Client{a, b} {
		if ev, err := c.Next(ctx); err != nil || ev.Name != "whisper" {
			t.Fatalf("%s got %+v, %v", c.ID, ev, err)
		}
	}

	// A server event with an ack: its round trip is timed.
	n, _ := srv.Lookup("/tenant-acme")
	conn, ok := n.Socket(b.ID)
	if !ok {
		t.Fatal("b is not in /tenant-acme")
	}
	go func() {
		if ev, err := b.Next(ctx); err == nil && ev.HasAck {
			b.Ack(ev.AckID, "ok")
		}
	}()
	if _, err := conn.EmitWithAck(ctx, "ping"); err != nil {
		t.Fatal(err)
	}

	// Refused handshakes: an unknown namespace, and a browser from a foreign origin.
	if _, err := siotest.Dial(ctx, url, "/nope", nil); err == nil {
		t.Fatal("/nope accepted")
	}
	req, _ := http.NewRequest("GET", url+"/socket.io/?EIO=4&transport=polling", nil)
	req.Header.Set("Origin", "https://evil.example")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 403 {
		t.Fatalf("foreign origin: %d", res.StatusCode)
	}

	a.Close()
	waitMetric(t, url, `chorus_sockets{`+ns+`,transport="websocket"}`, 1)

	m := scrape(t, url)
	for series, want := range map[string]float64{
		`chorus_connections_total{` + ns + `,transport="websocket"}`:                            2,
		`chorus_disconnections_total{` + ns + `,reason="transport close"}`:                      1,
		`chorus_events_received_total{` + ns + `}`:                                              3, // join, join, publish
		`chorus_events_sent_total{` + ns + `}`:                                                  4, // publish → b, emit → a and b, ping → b
		`chorus_broadcasts_total{` + ns + `}`:                                                   2,
		`chorus_broadcast_recipients_sum{` + ns + `}`:                                           3,
		`chorus_broadcast_recipients_count{` + ns + `}`:                                         2,
		`chorus_broadcast_recipients_bucket{` + ns + `,le="1"}`:                                 1,
		`chorus_ack_round_trip_seconds_count{` + ns + `}`:                                       1,
		`chorus_http_requests_total{code="202",route="/api/v1/emit"}`:                           1,
		`chorus_http_requests_total{code="401",route="/api/v1/emit"}`:                           1,
		`chorus_http_requests_total{code="404",route="other"}`:                                  1,
		`chorus_http_request_duration_seconds_count{route="/api/v1/emit"}`:                      2,
		`chorus_handshakes_refused_total{reason="invalid_namespace"}`:                           1,
		`chorus_handshakes_refused_total{reason="origin"}`:                                      1,
		`chorus_sessions_opened_total{transport="websocket"}`:                                   3,
		`chorus_sessions_closed_total{reason="transport close"}`:                                2, // a, and the client refused /nope
		`chorus_sockets{namespace="/",transport="websocket"}`:                                   0,
		`chorus_recoveries_total{` + ns + `,result="success"}`:                                  0,
		`chorus_build_info{goversion="` + runtimeVersion() + `",version="` + app.Version + `"}`: 1,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
	}
	for _, series := range []string{"chorus_received_bytes_total", "chorus_sent_bytes_total", "chorus_received_messages_total", "chorus_sent_messages_total"} {
		if m[series] <= 0 {
			t.Errorf("%s = %v, want more than 0", series, m[series])
		}
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics (go_goroutines)")
	}
	if _, ok := m["process_resident_memory_bytes"]; !ok {
		t.Error("no process metrics (process_resident_memory_bytes)")
	}
	for series := range m {
		for _, client := range []string{"acme", "secret-room", "whisper", "nope", "evil"} {
			if strings.Contains(series, client) {
				t.Errorf("series %s holds %q, which a client chose", series, client)
			}
		}
	}
}

func runtimeVersion() string { return runtime.Version() }

// count returns how many lines logged msg with every key=value of kv.
func (l *logBuffer) count(msg string, kv ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for line := range strings.SplitSeq(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != msg {
			continue
		}
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(m[kv[i]]) != kv[i+1] {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// The security side's refusals are logged once each and counted under a reason of a fixed set: the
// connection limits (429 rate_limited, 503 too_many_connections, from the engine's Admit hook), a
// namespace's token check (connect_error unauthorized, invalid_token), and the HTTP API's key check
// (403 for the read-only key, 401, then 429) in the API's request metrics.
func TestSecurityRefusalsInMetricsAndLog(t *testing.T) {
	t.Parallel()
	t.Run("limits and API", func(t *testing.T) {
		t.Parallel()
		url, logs := serveLogged(t, func(c *config.Config) {
			c.MaxConns = 1
			c.HandshakeRate, c.HandshakeBurst = 0.001, 2 // two handshakes, then none for 1000 s
			c.APIReadKey = "reader"
			c.APIAuthFailures = 1
		})
		for i, want := range []int{200, 503, 429} {
			res, err := http.Get(url + "/socket.io/?EIO=4&transport=polling")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != want {
				t.Fatalf("handshake %d: %d, want %d", i, res.StatusCode, want)
			}
		}
		for i, r := range []struct {
			key  string
			want int
		}{{"reader", 403}, {"wrong", 401}, {"wrong", 429}} {
			req, _ := http.NewRequest("POST", url+"/api/v1/emit", strings.NewReader(`{"rooms":["r"],"event":"e"}`))
			req.Header.Set("Authorization", "Bearer "+r.key)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != r.want {
				t.Fatalf("API request %d: %d, want %d", i, res.StatusCode, r.want)
			}
		}
		m := scrape(t, url)
		for series, want := range map[string]float64{
			`chorus_handshakes_refused_total{reason="too_many_connections"}`: 1,
			`chorus_handshakes_refused_total{reason="rate_limited"}`:         1,
			`chorus_http_requests_total{code="403",route="/api/v1/emit"}`:    1,
			`chorus_http_requests_total{code="401",route="/api/v1/emit"}`:    1,
			`chorus_http_requests_total{code="429",route="/api/v1/emit"}`:    1,
		} {
			if got, ok := m[series]; !ok || got != want {
				t.Errorf("%s = %v (present: %v), want %v", series, got, ok, want)
			}
		}
		// The first load refusal at warn, the next within 10 s at debug: once each.
		if n := logs.count("handshake refused (further refusals for load in the next 10s are logged at debug)", "reason", "too_many_connections", "status", "503"); n != 1 {
			t.Errorf("too_many_connections logged %d times at warn, want 1", n)
		}
		if n := logs.count("handshake refused", "reason", "rate_limited", "status", "429"); n != 1 {
			t.Errorf("rate_limited logged %d times, want 1", n)
		}
		for _, code := range []string{"403", "401", "429"} {
			if n := logs.count("http request", "route", "/api/v1/emit", "status", code); n != 1 {
				t.Errorf("API %s logged %d times, want 1", code, n)
			}
		}
	})
	t.Run("tokens", func(t *testing.T) {
		t.Parallel()
		url, logs := serveLogged(t, func(c *config.Config) {
			withJWT(c)
			c.Namespaces = []config.Namespace{{Name: "/", Auth: "required"}}
		})
		for _, auth := range []any{nil, map[string]any{"token": "hello"}} {
			if _, err := dialWith(t, url, "/", auth, nil); err == nil {
				t.Fatalf("auth %v accepted", auth)
			}
		}
		waitMetric(t, url, `chorus_handshakes_refused_total{reason="unauthorized"}`, 1)
		waitMetric(t, url, `chorus_handshakes_refused_total{reason="invalid_token"}`, 1)
		for _, reason := range []string{"unauthorized", "invalid_token"} {
			if n := logs.count("handshake refused", "reason", reason, "nsp", "/"); n != 1 {
				t.Errorf("%s logged %d times, want 1", reason, n)
			}
		}
		for series := range scrape(t, url) {
			if strings.Contains(series, "hello") {
				t.Errorf("series %s holds the client's token", series)
			}
		}
	})
}

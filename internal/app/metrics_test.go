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

// until waits up to 10 s for cond, naming what it waits for.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Dynamic namespaces come and go (each is removed with its last socket) while the metrics and
// connection-state recovery follow them: a pattern's namespaces count under the pattern however
// often they are made again, and the sockets gauge comes back to 0; a namespace whose last socket
// left a session stays until the session expires, so that its client recovers it with what it
// missed, and then goes, so that the same client afterwards starts afresh in a new one; a
// connection past the namespaces-per-connection limit is refused, logged and counted.
func TestDynamicNamespacesMetricsAndRecovery(t *testing.T) {
	t.Parallel()
	const window = time.Second // the sessions' MaxDisconnection
	cfg := config.Default()
	cfg.APIKey = "secret"
	cfg.Namespaces = []config.Namespace{{Name: "/"}, {Name: "/tenant-*", Recovery: &config.Recovery{Enabled: true, MaxDisconnection: window}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	srv, h := app.New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	url := ts.URL
	exists := func(nsp string) bool { _, ok := srv.Lookup(nsp); return ok }
	gone := func(c *siotest.Client, times int) {
		t.Helper()
		c.Close()
		until(t, "the server to see "+c.ID+" leave", func() bool { return logs.count("disconnect", "sid", c.ID) == times })
	}

	// Churn over more names than the metrics keep label values for.
	for i := range 70 {
		gone(dial(t, url, fmt.Sprintf("/tenant-churn-%d", i)), 1)
	}
	until(t, "the churned namespaces removed once their sessions expired", func() bool {
		for i := range 70 {
			if exists(fmt.Sprintf("/tenant-churn-%d", i)) {
				return false
			}
		}
		return true
	})
	waitMetric(t, url, `chorus_sockets{namespace="/tenant-*",transport="websocket"}`, 0)
	waitMetric(t, url, `chorus_connections_total{namespace="/tenant-*",transport="websocket"}`, 70)

	// A session outlives its namespace's last socket, and is recovered with what it missed.
	a := dial(t, url, "/tenant-r")
	pid, id := a.PID, a.ID
	if pid == "" {
		t.Fatal("no pid: recovery is off on /tenant-r")
	}
	gone(a, 1)
	if !exists("/tenant-r") {
		t.Fatal("/tenant-r removed while a session of it is kept")
	}
	req, _ := http.NewRequest("POST", url+"/api/v1/emit", strings.NewReader(`{"namespace":"/tenant-r","event":"missed","data":1}`))
	req.Header.Set("Authorization", "Bearer secret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("emit: %d", res.StatusCode)
	}
	b := mustDialWith(t, url, "/tenant-r", map[string]string{"pid": pid}, nil)
	if !b.Recovered || b.ID != id {
		t.Fatalf("not recovered: id %s (was %s), recovered %v", b.ID, id, b.Recovered)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ev, err := b.Next(ctx); err != nil || ev.Name != "missed" {
		t.Fatalf("missed event: %+v, %v", ev, err)
	}

	// Once the session has expired, the namespace goes, and the client starts afresh in a new one.
	gone(b, 2)
	until(t, "/tenant-r removed after its session expired", func() bool { return !exists("/tenant-r") })
	c := mustDialWith(t, url, "/tenant-r", map[string]string{"pid": pid}, nil)
	if c.Recovered || c.ID == id {
		t.Fatalf("recovered from an expired session: id %s, recovered %v", c.ID, c.Recovered)
	}
	gone(c, 1)
	waitMetric(t, url, `chorus_recoveries_total{namespace="/tenant-*",result="success"}`, 1)
	waitMetric(t, url, `chorus_recoveries_total{namespace="/tenant-*",result="failure"}`, 1)

	// One connection: "/" and 99 namespaces, then one too many.
	d := dial(t, url, "/")
	for i := range 100 {
		if err := d.WriteRaw(fmt.Sprintf("40/tenant-many-%d,", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(t, url, `chorus_handshakes_refused_total{reason="too_many_namespaces"}`, 1)
	if n := logs.count("handshake refused", "reason", "too_many_namespaces", "nsp", "/tenant-many-99"); n != 1 {
		t.Errorf("too_many_namespaces logged %d times, want 1", n)
	}
	waitMetric(t, url, `chorus_sockets{namespace="/tenant-*",transport="websocket"}`, 99)
	d.Close()
	waitMetric(t, url, `chorus_sockets{namespace="/tenant-*",transport="websocket"}`, 0)
	until(t, "every dynamic namespace removed", func() bool {
		for _, n := range srv.Namespaces() {
			if strings.HasPrefix(n.Name(), "/tenant-") {
				return false
			}
		}
		return true
	})

	for series := range scrape(t, url) {
		if strings.Contains(series, "churn") || strings.Contains(series, "tenant-r") || strings.Contains(series, "tenant-many") {
			t.Errorf("series %s names a namespace a client chose", series)
		}
	}
}

package app_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

const jwtSecret = "chorus-test-secret-0123456789abcdef"

// token mints an HS256 token for sub valid for ttl, with extra claims.
func token(t *testing.T, sub string, ttl time.Duration, extra map[string]any) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(ttl).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// logBuffer collects chorus's JSON log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// has reports whether a line logged msg with every key=value of kv.
func (l *logBuffer) has(msg string, kv ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
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
			return true
		}
	}
	return false
}

// serveLogged is serve with the log kept.
func serveLogged(t *testing.T, edit func(*config.Config)) (string, *logBuffer) {
	t.Helper()
	cfg := config.Default()
	cfg.APIKey = "secret"
	if edit != nil {
		edit(&cfg)
	}
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
	return ts.URL, logs
}

func withJWT(c *config.Config) { c.JWTSecret = jwtSecret }

// dialWith connects to nsp with a handshake auth object and extra headers; a refusal is returned.
func dialWith(t *testing.T, url, nsp string, auth any, header http.Header) (*siotest.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := siotest.DialHeader(ctx, url, nsp, auth, header)
	if err == nil {
		t.Cleanup(c.Close)
	}
	return c, err
}

func mustDialWith(t *testing.T, url, nsp string, auth any, header http.Header) *siotest.Client {
	t.Helper()
	c, err := dialWith(t, url, nsp, auth, header)
	if err != nil {
		t.Fatalf("dial %s: %v", nsp, err)
	}
	return c
}

// connectCode returns the data.code of a connect_error ("" if err is not one).
func connectCode(err error) string {
	var ce *siotest.ConnectError
	if !errors.As(err, &ce) {
		return ""
	}
	var d struct{ Code string }
	json.Unmarshal(ce.Data, &d)
	return d.Code
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// Issue 6.1: with a JWT secret, namespaces require a token by default; the token comes from
// auth.token or the Authorization header; refusals carry data.code; `auth` per namespace.
func TestJWTHandshake(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) {
		withJWT(c)
		c.JWTIssuer, c.JWTAudience = "https://auth.example", "chorus"
		c.Namespaces = []config.Namespace{
			{Name: "/"},
			{Name: "/opt", Auth: "optional"},
			{Name: "/open", Auth: "none"},
			{Name: "/tenant-*"},
		}
	})
	claims := map[string]any{"iss": "https://auth.example", "aud": "chorus"}
	with := func(extra map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range claims {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	good := token(t, "42", time.Hour, claims)
	tests := []struct {
		name   string
		nsp    string
		auth   any
		header http.Header
		want   string // connect_error data.code; "" = connects
	}{
		{"auth.token", "/", map[string]any{"token": good}, nil, ""},
		{"Authorization header", "/", nil, bearer(good), ""},
		{"lower-case bearer scheme", "/", nil, http.Header{"Authorization": {"bearer " + good}}, ""},
		{"auth.token wins over the header", "/", map[string]any{"token": good}, bearer("garbage"), ""},
		{"no token", "/", nil, nil, "unauthorized"},
		{"empty token", "/", map[string]any{"token": ""}, nil, "unauthorized"},
		{"token not a string", "/", map[string]any{"token": 42}, nil, "invalid_token"},
		{"expired", "/", map[string]any{"token": token(t, "42", -time.Minute, claims)}, nil, "token_expired"},
		{"not valid yet", "/", map[string]any{"token": token(t, "42", time.Hour, with(map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}))}, nil, "token_not_valid_yet"},
		{"wrong issuer", "/", map[string]any{"token": token(t, "42", time.Hour, with(map[string]any{"iss": "https://evil.example"}))}, nil, "invalid_token"},
		{"wrong audience", "/", map[string]any{"token": token(t, "42", time.Hour, with(map[string]any{"aud": "other"}))}, nil, "invalid_token"},
		{"bad signature", "/", map[string]any{"token": good[:len(good)-4] + "AAAA"}, nil, "invalid_token"},
		{"garbage", "/", map[string]any{"token": "hello"}, nil, "invalid_token"},
		{"dynamic namespace requires a token too", "/tenant-a", nil, nil, "unauthorized"},
		{"dynamic namespace with a token", "/tenant-a", map[string]any{"token": good}, nil, ""},
		{"namespaces claim allows", "/tenant-a", map[string]any{"token": token(t, "42", time.Hour, with(map[string]any{"namespaces": []string{"/tenant-a"}}))}, nil, ""},
		{"namespaces claim forbids", "/tenant-b", map[string]any{"token": token(t, "42", time.Hour, with(map[string]any{"namespaces": []string{"/tenant-a"}}))}, nil, "forbidden_namespace"},
		{"optional: no token is anonymous", "/opt", nil, nil, ""},
		{"optional: a bad token is refused", "/opt", map[string]any{"token": "hello"}, nil, "invalid_token"},
		{"optional: a good token", "/opt", map[string]any{"token": good}, nil, ""},
		{"none: no token", "/open", nil, nil, ""},
		{"none: a bad token is ignored", "/open", map[string]any{"token": "hello"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := dialWith(t, url, tt.nsp, tt.auth, tt.header)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v (code %q)", err, connectCode(err))
				}
				return
			}
			if got := connectCode(err); got != tt.want {
				t.Fatalf("err %v, data.code %q; want connect_error %q", err, got, tt.want)
			}
		})
	}
}

// Without a JWT secret or key nothing changes: no token needed, tokens ignored, no refresh.
func TestNoJWTMeansNoAuth(t *testing.T) {
	t.Parallel()
	url := serve(t, nil)
	c := mustDialWith(t, url, "/", map[string]any{"token": "anything"}, nil)
	if got := code(request(t, c, "refresh", map[string]any{"token": "x"})); got != "unknown_event" {
		t.Errorf("refresh without JWT: %q, want unknown_event", got)
	}
}

// RS256 tokens verify with a JWKS file and ES256 ones with a PEM file, over the wire.
func TestJWTPublicKeys(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dir := t.TempDir()
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{
		"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes()),
	}}})
	der, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	files := map[string][]byte{"jwks.json": jwks, "ec.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mint := func(m jwt.SigningMethod, key any, kid string) string {
		tok := jwt.NewWithClaims(m, jwt.MapClaims{"sub": "7", "exp": time.Now().Add(time.Hour).Unix()})
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tt := range []struct {
		name, file string
		good, bad  string
	}{
		{"RS256 from a JWKS", "jwks.json", mint(jwt.SigningMethodRS256, rsaKey, "rsa-1"), mint(jwt.SigningMethodES256, ecKey, "")},
		{"ES256 from PEM", "ec.pem", mint(jwt.SigningMethodES256, ecKey, ""), mint(jwt.SigningMethodRS256, rsaKey, "rsa-1")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := serve(t, func(c *config.Config) { c.JWTKeys = filepath.Join(dir, tt.file) })
			if _, err := dialWith(t, url, "/", map[string]any{"token": tt.good}, nil); err != nil {
				t.Errorf("good token refused: %v", err)
			}
			if _, err := dialWith(t, url, "/", map[string]any{"token": tt.bad}, nil); connectCode(err) != "invalid_token" {
				t.Errorf("token of the other key: %v, want invalid_token", err)
			}
			// HS256 is not enabled by a key file.
			if _, err := dialWith(t, url, "/", map[string]any{"token": token(t, "7", time.Hour, nil)}, nil); connectCode(err) != "invalid_token" {
				t.Errorf("HS256 token with only a key file: %v, want invalid_token", err)
			}
		})
	}
}

func apiPost(t *testing.T, url, path, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// next returns the next event of c within 5s, or fails.
func next(t *testing.T, c *siotest.Client) siotest.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	return ev
}

// Issue 6.2: every authenticated socket is in user:<sub> from the start, the HTTP API reaches all of
// a user's sockets with "users", nobody joins another user's room, and claims grant room patterns on
// top of the namespace's policy.
func TestPersonalRooms(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) {
		withJWT(c)
		c.Namespaces = []config.Namespace{{Name: "/"}, {Name: "/chat", Join: []string{"lobby"}, Publish: []string{}}}
	})
	auth := func(sub string, extra map[string]any) map[string]any {
		return map[string]any{"token": token(t, sub, time.Hour, extra)}
	}
	phone := mustDialWith(t, url, "/", auth("42", nil), nil)
	laptop := mustDialWith(t, url, "/", nil, bearer(token(t, "42", time.Hour, nil)))
	other := mustDialWith(t, url, "/", auth("7", nil), nil)

	// The HTTP API reaches both of 42's sockets, and only them; the personal room is there before
	// the client hears it is connected, so an emit right after connecting is not lost.
	if st, body := apiPost(t, url, "/api/v1/emit", "secret", `{"users":["42"],"event":"dm","data":"for 42"}`); st != 202 {
		t.Fatalf("emit to users: %d %s", st, body)
	}
	for name, c := range map[string]*siotest.Client{"phone": phone, "laptop": laptop} {
		if ev := next(t, c); ev.Name != "dm" || string(ev.Args[0]) != `"for 42"` {
			t.Errorf("%s got %s %s", name, ev.Name, ev.Args)
		}
	}
	if st, _ := apiPost(t, url, "/api/v1/emit", "secret", `{"users":["7"],"event":"dm","data":"for 7"}`); st != 202 {
		t.Fatal(st)
	}
	if ev := next(t, other); ev.Name != "dm" || string(ev.Args[0]) != `"for 7"` {
		t.Errorf("7 got %s %s", ev.Name, ev.Args)
	}
	if st, body := apiPost(t, url, "/api/v1/emit", "secret", `{"users":[""],"event":"dm"}`); st != 400 || !strings.Contains(body, "invalid_user") {
		t.Errorf("empty user id: %d %s", st, body)
	}

	for _, tt := range []struct {
		name, event string
		arg         any
		want        string
	}{
		{"join another user's room", "join", "user:7", "forbidden"},
		{"join one's own room (already in)", "join", "user:42", ""},
		{"leave one's own room", "leave", "user:42", "forbidden"},
		{"publish to another user's room", "publish", map[string]any{"room": "user:7", "event": "m"}, "forbidden"},
		{"publish to one's own room (other devices)", "publish", map[string]any{"room": "user:42", "event": "sync", "data": 1}, ""},
		{"publish a chorus: event", "publish", map[string]any{"room": "lobby", "event": "chorus:disconnect"}, "reserved_event"},
	} {
		if got := code(request(t, phone, tt.event, tt.arg)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if ev := next(t, laptop); ev.Name != "sync" {
		t.Errorf("the other device got %s, want sync", ev.Name)
	}
	// Still reachable after the refused leave.
	apiPost(t, url, "/api/v1/emit", "secret", `{"users":["42"],"event":"still"}`)
	if ev := next(t, phone); ev.Name != "still" {
		t.Errorf("phone got %s after the refused leave", ev.Name)
	}

	// /chat lets everyone join lobby and publish nowhere; claims add to that.
	plain := mustDialWith(t, url, "/chat", auth("1", nil), nil)
	granted := mustDialWith(t, url, "/chat", auth("2", map[string]any{"rooms": map[string]any{"join": []string{"team-*"}, "publish": []string{"team-a", "user:*"}}}), nil)
	for _, tt := range []struct {
		name string
		c    *siotest.Client
		ev   string
		arg  any
		want string
	}{
		{"default join", plain, "join", "lobby", ""},
		{"no grant", plain, "join", "team-a", "forbidden"},
		{"default publish (none)", plain, "publish", map[string]any{"room": "lobby", "event": "m"}, "forbidden"},
		{"granted join", granted, "join", "team-b", ""},
		{"granted publish", granted, "publish", map[string]any{"room": "team-a", "event": "m"}, ""},
		{"not granted publish", granted, "publish", map[string]any{"room": "team-b", "event": "m"}, "forbidden"},
		{"user:* grant publishes to another user", granted, "publish", map[string]any{"room": "user:1", "event": "note", "data": "hi"}, ""},
		{"user:* grant never joins another user's room", granted, "join", "user:1", "forbidden"},
	} {
		if got := code(request(t, tt.c, tt.ev, tt.arg)); got != tt.want {
			t.Errorf("/chat %s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if ev := next(t, plain); ev.Name != "note" || string(ev.Args[0]) != `"hi"` {
		t.Errorf("user 1 got %s %s", ev.Name, ev.Args)
	}

	// POST /api/v1/disconnect with users disconnects every socket of the user.
	if st, body := apiPost(t, url, "/api/v1/disconnect", "secret", `{"users":["42"]}`); st != 202 {
		t.Fatalf("disconnect users: %d %s", st, body)
	}
	for _, c := range []*siotest.Client{phone, laptop} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a socket of user 42 is still connected")
		}
	}
	if r := request(t, other, "join", "x"); !r.OK {
		t.Errorf("user 7 was affected: %+v", r)
	}
}

// waitDone waits for c's connection to end; it fails after d.
func waitDone(t *testing.T, c *siotest.Client, d time.Duration) time.Time {
	t.Helper()
	select {
	case <-c.Done():
		return time.Now()
	case <-time.After(d):
		t.Fatalf("still connected after %s", d)
	}
	return time.Time{}
}

// Issue 6.3: a socket is disconnected with reason token_expired at its token's exp, unless a refresh
// with a newer token of the same user came first.
func TestTokenExpiryAndRefresh(t *testing.T) {
	t.Parallel()
	url, logs := serveLogged(t, func(c *config.Config) {
		withJWT(c)
		c.Namespaces = []config.Namespace{{Name: "/"}, {Name: "/opt", Auth: "optional"}, {Name: "/open", Auth: "none"}}
	})
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
	short := func(sub string) map[string]any {
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": exp.Unix()}).SignedString([]byte(jwtSecret))
		return map[string]any{"token": tok}
	}
	expiring := mustDialWith(t, url, "/", short("42"), nil)
	refreshed := mustDialWith(t, url, "/", short("42"), nil)

	later := time.Now().Add(time.Hour).Unix()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := refreshed.EmitWithAck(ctx, "refresh", map[string]any{"token": token(t, "42", time.Hour, map[string]any{"exp": later})})
	if err != nil || string(ev.Args[0]) != fmt.Sprintf(`{"ok":true,"exp":%d}`, later) {
		t.Fatalf("refresh ack %s, %v; want {ok:true, exp:%d}", ev.Args, err, later)
	}
	// The token itself, as a string, works too.
	if r := request(t, refreshed, "refresh", token(t, "42", time.Hour, map[string]any{"exp": later})); !r.OK {
		t.Errorf("refresh with the bare token: %+v", r)
	}
	for _, tt := range []struct {
		name string
		arg  any
		want string
	}{
		{"another user", map[string]any{"token": token(t, "7", time.Hour, nil)}, "subject_mismatch"},
		{"expired", map[string]any{"token": token(t, "42", -time.Minute, nil)}, "token_expired"},
		{"bad token", map[string]any{"token": "nope"}, "invalid_token"},
		{"no token", map[string]any{}, "invalid_argument"},
		{"wrong type", 42, "invalid_argument"},
	} {
		if got := code(request(t, expiring, "refresh", tt.arg)); got != tt.want {
			t.Errorf("refresh %s: %q, want %q", tt.name, got, tt.want)
		}
	}

	// The socket that did not refresh gets chorus:disconnect {code: token_expired}, then the
	// disconnect, at exp (not before, and within 1.5 s).
	ev = next(t, expiring)
	at := time.Now()
	if ev.Name != "chorus:disconnect" || !strings.Contains(string(ev.Args[0]), `"code":"token_expired"`) {
		t.Fatalf("got %s %s, want chorus:disconnect token_expired", ev.Name, ev.Args)
	}
	waitDone(t, expiring, 5*time.Second)
	if at.Before(exp) || at.After(exp.Add(1500*time.Millisecond)) {
		t.Errorf("disconnected at %s, exp %s", at.Format(time.StampMilli), exp.Format(time.StampMilli))
	}
	// Logged once the disconnect packet is on its way: the client may see it first.
	for deadline := time.Now().Add(5 * time.Second); !logs.has("disconnect", "reason", "token_expired"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("no disconnect logged with reason token_expired")
			break
		}
	}
	// The refreshed one is past its first exp and still works.
	if r := request(t, refreshed, "join", "after-exp"); !r.OK {
		t.Errorf("the refreshed socket: %+v", r)
	}

	// An anonymous socket has nothing to refresh; where auth is none, refresh does not exist.
	anon := mustDialWith(t, url, "/opt", nil, nil)
	if got := code(request(t, anon, "refresh", map[string]any{"token": token(t, "42", time.Hour, nil)})); got != "unauthorized" {
		t.Errorf("refresh on an anonymous socket: %q, want unauthorized", got)
	}
	open := mustDialWith(t, url, "/open", nil, nil)
	if got := code(request(t, open, "refresh", map[string]any{"token": token(t, "42", time.Hour, nil)})); got != "unknown_event" {
		t.Errorf("refresh where auth is none: %q, want unknown_event", got)
	}
}

// Expiry needs no goroutine per socket: a thousand connected sockets with tokens that expire later
// add no goroutines on the server beyond those of sockets without one.
func TestExpiryTimersNeedNoGoroutines(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	url := serve(t, func(c *config.Config) {
		withJWT(c)
		c.HandshakeRate = 0 // 200 connections at once from one address
		c.Namespaces = []config.Namespace{{Name: "/"}, {Name: "/anon", Auth: "none"}}
	})
	const n = 100
	connect := func(nsp string, auth any) []*siotest.Client {
		cs := make([]*siotest.Client, n)
		for i := range cs {
			cs[i] = mustDialWith(t, url, nsp, auth, nil)
		}
		return cs
	}
	// settle returns the goroutine count once it has stayed the same for 100 ms (readers that just
	// handled a connect finish their linger first).
	settle := func() int {
		g, same := runtime.NumGoroutine(), 0
		for i := 0; i < 500 && same < 10; i++ {
			time.Sleep(10 * time.Millisecond)
			if now := runtime.NumGoroutine(); now == g {
				same++
			} else {
				g, same = now, 0
			}
		}
		return g
	}
	base := settle()
	anon := connect("/anon", nil)
	withoutTokens := settle() - base
	authed := connect("/", map[string]any{"token": token(t, "42", time.Hour, nil)})
	withTokens := settle() - base - withoutTokens
	// Each client of this test has a reader goroutine of its own, in this process; the server adds
	// none per idle socket. Tokens must not change that.
	if withTokens > withoutTokens+n/20 {
		t.Errorf("%d authenticated sockets added %d goroutines; %d anonymous ones added %d", n, withTokens, n, withoutTokens)
	}
	for _, c := range append(anon, authed...) {
		c.Close()
	}
}

// Issue 6.4: past CHORUS_RATE_EVENTS (with its burst) an event gets the ack error rate_limited and is
// not handled; a socket that keeps at it is disconnected, and nobody else notices.
func TestEventRateLimit(t *testing.T) {
	t.Parallel()
	url, logs := serveLogged(t, func(c *config.Config) { c.RateEvents, c.RateBurst = 2, 5 })
	sender, member, bystander := dial(t, url, "/"), dial(t, url, "/"), dial(t, url, "/")
	for _, c := range []*siotest.Client{sender, member, bystander} {
		if r := request(t, c, "join", "room"); !r.OK {
			t.Fatal(r)
		}
	}
	// The join used one of the sender's five. Four publishes pass, the next are refused and reach
	// nobody.
	var codes []string
	for i := range 6 {
		codes = append(codes, code(request(t, sender, "publish", map[string]any{"room": "room", "event": "n", "data": i})))
	}
	if want := []string{"", "", "", "", "rate_limited", "rate_limited"}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("acks %q, want %q", codes, want)
	}
	for i := range 4 {
		if ev := next(t, member); ev.Name != "n" || string(ev.Args[0]) != fmt.Sprint(i) {
			t.Fatalf("member got %s %s, want n %d", ev.Name, ev.Args, i)
		}
	}
	// Events without an ack are limited the same way (refused silently).
	for range 3 {
		sender.Emit("publish", map[string]any{"room": "room", "event": "silent"})
	}

	// Sustained abuse: sending far faster than the rate empties the second bucket, and the
	// connection is closed after a chorus:disconnect {code: rate_limited}.
	for i := 0; ; i++ {
		if sender.Emit("publish", map[string]any{"room": "room", "event": "flood"}) != nil {
			break
		}
		select {
		case <-sender.Done():
		default:
			if i < 1000 {
				continue
			}
			t.Fatal("1000 events over the limit and still connected")
		}
		break
	}
	waitDone(t, sender, 5*time.Second)
	for deadline := time.Now().Add(5 * time.Second); !logs.has("disconnect", "reason", "rate_limited"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) { // logged once the close is on its way: the client may see it first
			t.Error("no disconnect logged with reason rate_limited")
			break
		}
	}
	// The member got nothing of the refused events; the bystander was not limited by the sender.
	if r := request(t, bystander, "publish", map[string]any{"room": "room", "event": "marker"}); !r.OK {
		t.Fatalf("bystander: %+v", r)
	}
	if ev := next(t, member); ev.Name != "marker" {
		t.Errorf("member got %s after the limited publishes, want only the marker", ev.Name)
	}
}

// The sender of a flood hears why before it is disconnected, although it goes on sending after the
// server has closed (the close must not turn into a reset that destroys the reason).
func TestEventRateLimitTellsWhy(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) { c.RateEvents, c.RateBurst = 1, 1 })
	c := dial(t, url, "/")
	go func() {
		for range 2000 {
			if c.Emit("publish", map[string]any{"room": "r", "event": "flood", "data": strings.Repeat("x", 100)}) != nil {
				return
			}
		}
	}()
	ev := next(t, c)
	if ev.Name != "chorus:disconnect" || !strings.Contains(string(ev.Args[0]), `"code":"rate_limited"`) {
		t.Fatalf("got %s %s, want chorus:disconnect rate_limited", ev.Name, ev.Args)
	}
	waitDone(t, c, 5*time.Second)
}

// pollOpen opens a long-polling session by hand: the status and body of the handshake.
func pollOpen(t *testing.T, url string, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/socket.io/?EIO=4&transport=polling", nil)
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// pollClose closes a polling session opened by pollOpen.
func pollClose(t *testing.T, url, body string) {
	t.Helper()
	var open struct{ SID string }
	json.Unmarshal([]byte(body[1:]), &open)
	req, _ := http.NewRequest("POST", url+"/socket.io/?EIO=4&transport=polling&sid="+open.SID, strings.NewReader("1"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
}

func wsStatus(err error) string {
	if err == nil {
		return "connected"
	}
	if strings.Contains(err.Error(), "429") {
		return "429"
	}
	if strings.Contains(err.Error(), "503") {
		return "503"
	}
	return err.Error()
}

// Issue 6.4: per-address and global connection limits and the per-address handshake rate hold on
// both transports; closing a connection frees its place; addresses behind a trusted proxy count
// apart.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	t.Run("per address", func(t *testing.T) {
		t.Parallel()
		url := serve(t, func(c *config.Config) { c.MaxConnsPerIP = 3 })
		a, b := dial(t, url, "/"), dial(t, url, "/")
		st, body := pollOpen(t, url, nil)
		if st != 200 {
			t.Fatalf("third connection (polling): %d %s", st, body)
		}
		if _, err := dialWith(t, url, "/", nil, nil); wsStatus(err) != "429" {
			t.Errorf("fourth connection (websocket): %v, want 429", err)
		}
		if st, b := pollOpen(t, url, nil); st != 429 || !strings.Contains(b, "too_many_connections") {
			t.Errorf("fourth connection (polling): %d %s, want 429 too_many_connections", st, b)
		}
		// Closing frees a place, whichever transport it was on.
		pollClose(t, url, body)
		eventuallyConnects(t, url)
		a.Close()
		eventuallyConnects(t, url)
		_ = b
	})
	t.Run("in total", func(t *testing.T) {
		t.Parallel()
		url := serve(t, func(c *config.Config) { c.MaxConns = 2 })
		dial(t, url, "/")
		dial(t, url, "/")
		if st, b := pollOpen(t, url, nil); st != 503 {
			t.Errorf("third connection (polling): %d %s, want 503", st, b)
		}
		if _, err := dialWith(t, url, "/", nil, nil); wsStatus(err) != "503" {
			t.Errorf("third connection (websocket): %v, want 503", err)
		}
	})
	t.Run("handshake rate", func(t *testing.T) {
		t.Parallel()
		url := serve(t, func(c *config.Config) { c.HandshakeRate, c.HandshakeBurst = 0.01, 3 })
		dial(t, url, "/")
		if st, _ := pollOpen(t, url, nil); st != 200 {
			t.Fatal(st)
		}
		dial(t, url, "/")
		if st, b := pollOpen(t, url, nil); st != 429 || !strings.Contains(b, "rate_limited") {
			t.Errorf("fourth handshake (polling): %d %s, want 429 rate_limited", st, b)
		}
		if _, err := dialWith(t, url, "/", nil, nil); wsStatus(err) != "429" {
			t.Errorf("fifth handshake (websocket): %v, want 429", err)
		}
	})
	t.Run("behind a trusted proxy", func(t *testing.T) {
		t.Parallel()
		url := serve(t, func(c *config.Config) { c.MaxConnsPerIP, c.TrustedProxies = 1, []string{"127.0.0.1"} })
		from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
		mustDialWith(t, url, "/", nil, from("198.51.100.1"))
		mustDialWith(t, url, "/", nil, from("198.51.100.2"))
		if _, err := dialWith(t, url, "/", nil, from("198.51.100.1")); wsStatus(err) != "429" {
			t.Errorf("second connection of 198.51.100.1: %v, want 429", err)
		}
		if st, _ := pollOpen(t, url, from("198.51.100.2")); st != 429 {
			t.Errorf("second connection of 198.51.100.2 (polling): %d, want 429", st)
		}
		if st, _ := pollOpen(t, url, from("198.51.100.3")); st != 200 {
			t.Errorf("first connection of 198.51.100.3: %d", st)
		}
	})
}

// eventuallyConnects waits until a new WebSocket connection is admitted again (a closed
// connection's place is given back when the server has seen it close).
func eventuallyConnects(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dialWith(t, url, "/", nil, nil)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no place freed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Issue 6.4: a socket may join CHORUS_MAX_ROOMS rooms; its own-id and personal rooms do not count.
func TestMaxRooms(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) { withJWT(c); c.MaxRooms = 3 })
	c := mustDialWith(t, url, "/", map[string]any{"token": token(t, "42", time.Hour, nil)}, nil)
	for _, tt := range []struct {
		event, room, want string
	}{
		{"join", "a", ""}, {"join", "b", ""}, {"join", "c", ""},
		{"join", "d", "too_many_rooms"},
		{"join", "a", ""}, // already in: no new room
		{"leave", "b", ""},
		{"join", "d", ""},
		{"join", "e", "too_many_rooms"},
	} {
		if got := code(request(t, c, tt.event, tt.room)); got != tt.want {
			t.Errorf("%s %s: %q, want %q", tt.event, tt.room, got, tt.want)
		}
	}
}

// Issue 6.5: in production (the default) an empty CHORUS_CORS_ORIGINS refuses cross-origin browsers
// on polling and WebSocket alike and serves same-origin ones and clients without an Origin; the
// allowlist opens listed origins; development mode opens every origin.
func TestOrigins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(*config.Config)
		origin  string // "" = no Origin header; "self" = the server's own
		allowed bool
	}{
		{"production, no Origin (server-side client)", nil, "", true},
		{"production, same origin", nil, "self", true},
		{"production, cross-origin", nil, "http://evil.example", false},
		{"production, allowlisted", func(c *config.Config) { c.CORSOrigins = []string{"https://app.example"} }, "https://app.example", true},
		{"production, not on the list", func(c *config.Config) { c.CORSOrigins = []string{"https://app.example"} }, "https://app.example.evil", false},
		{"development, cross-origin", func(c *config.Config) { c.Mode = "development" }, "http://localhost:5173", true},
		{"development with a list keeps the list", func(c *config.Config) { c.Mode = "development"; c.CORSOrigins = []string{"https://app.example"} }, "http://localhost:5173", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, tt.edit)
			origin := tt.origin
			if origin == "self" {
				origin = url
			}
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			st, _ := pollOpen(t, url, h)
			_, wsErr := dialWith(t, url, "/", nil, h)
			if tt.allowed {
				if st != 200 || wsErr != nil {
					t.Errorf("polling %d, websocket %v; want both served", st, wsErr)
				}
			} else if st != 403 || wsErr == nil || !strings.Contains(wsErr.Error(), "403") {
				t.Errorf("polling %d, websocket %v; want 403 on both", st, wsErr)
			}
			// CORS headers name the origin on polling, only when it is allowed.
			req, _ := http.NewRequest("OPTIONS", url+"/socket.io/?EIO=4&transport=polling", nil)
			req.Header = h.Clone()
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			acao := res.Header.Get("Access-Control-Allow-Origin")
			if tt.allowed && origin != "" && acao != origin || !tt.allowed && acao != "" {
				t.Errorf("preflight: Access-Control-Allow-Origin %q (status %d)", acao, res.StatusCode)
			}
		})
	}
}

// Issue 6.6: a packet and its attachments together stay under CHORUS_MAX_PAYLOAD, at most 10
// attachments, nested at most 64 deep; past any of these the connection is closed with a logged
// reason, nothing of it is delivered, and other clients notice nothing.
func TestPacketLimits(t *testing.T) {
	t.Parallel()
	url, logs := serveLogged(t, func(c *config.Config) { c.MaxPayload = 10_000 })
	member, probe := dial(t, url, "/"), dial(t, url, "/")
	if r := request(t, member, "join", "room"); !r.OK {
		t.Fatal(r)
	}
	placeholders := func(n int) string {
		var ps []string
		for i := range n {
			ps = append(ps, fmt.Sprintf(`{"_placeholder":true,"num":%d}`, i))
		}
		return strings.Join(ps, ",")
	}
	tests := []struct {
		name        string
		text        string
		attachments [][]byte
		ok          bool
	}{
		{"attachments under the limit together", `455-["publish",{"room":"room","event":"bin","data":[` + placeholders(5) + `]}]`, repeat(5, 1500), true},
		{"attachments over the limit together", `455-["publish",{"room":"room","event":"bin","data":[` + placeholders(5) + `]}]`, repeat(5, 2500), false},
		{"11 attachments", `4511-["publish",{"room":"room","event":"bin","data":[` + placeholders(11) + `]}]`, repeat(11, 1), false},
		{"nested 65 deep", `42["publish",{"room":"room","event":"deep","data":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}]`, nil, false},
		{"nested 64 deep", `42["publish",{"room":"room","event":"deep","data":` + strings.Repeat("[", 62) + strings.Repeat("]", 62) + `}]`, nil, true},
		{"placeholder without its attachment", `451-["publish",{"room":"room","event":"bin","data":{"_placeholder":true,"num":3}}]`, repeat(1, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, url, "/")
			if err := c.WriteRaw(tt.text); err != nil {
				t.Fatal(err)
			}
			for _, a := range tt.attachments {
				if err := c.WriteBinary(a); err != nil && tt.ok {
					t.Fatal(err)
				}
			}
			if tt.ok {
				if ev := next(t, member); ev.Name != "bin" && ev.Name != "deep" {
					t.Fatalf("member got %s", ev.Name)
				}
				return
			}
			waitDone(t, c, 5*time.Second)
			// Nothing reached the member, which is still served: the next thing it gets is a marker.
			if r := request(t, probe, "publish", map[string]any{"room": "room", "event": "marker"}); !r.OK {
				t.Fatalf("probe: %+v", r)
			}
			if ev := next(t, member); ev.Name != "marker" {
				t.Fatalf("member got %s from the refused packet", ev.Name)
			}
			if !logs.has("closing connection: bad packet") {
				t.Error("no logged reason")
			}
		})
	}
	if !logs.has("closing connection: bad packet", "err", "packet and its attachments larger than the max payload") {
		t.Error("the oversize packet's reason is not in the log")
	}
}

func repeat(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{byte(i)}, size)
	}
	return out
}

// Issue 6.7: the read-only key serves GET only; failed key checks are limited per address (and
// then even the right key waits); other addresses are not affected.
func TestAPIKeys(t *testing.T) {
	t.Parallel()
	url := serve(t, func(c *config.Config) {
		c.APIReadKey = "read-only"
		c.APIAuthFailures = 3
		c.TrustedProxies = []string{"127.0.0.1"}
	})
	do := func(method, path, key, from, body string) (int, string) {
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		req.Header.Set("X-Forwarded-For", from)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var e struct{ Error struct{ Code string } }
		json.Unmarshal(b, &e)
		return res.StatusCode, e.Error.Code
	}
	emit := `{"event":"x"}`
	for _, tt := range []struct {
		name, method, path, key, body string
		status                        int
		code                          string
	}{
		{"read key lists sockets", "GET", "/api/v1/sockets", "read-only", "", 200, ""},
		{"read key cannot emit", "POST", "/api/v1/emit", "read-only", emit, 403, "forbidden"},
		{"read key cannot disconnect", "POST", "/api/v1/disconnect", "read-only", `{"rooms":["r"]}`, 403, "forbidden"},
		{"main key lists sockets", "GET", "/api/v1/sockets", "secret", "", 200, ""},
		{"main key emits", "POST", "/api/v1/emit", "secret", emit, 202, ""},
		{"a key that is a prefix", "POST", "/api/v1/emit", "secre", emit, 401, "unauthorized"},
		{"a key with a suffix", "POST", "/api/v1/emit", "secretx", emit, 401, "unauthorized"},
	} {
		if st, c := do(tt.method, tt.path, tt.key, "198.51.100.1", tt.body); st != tt.status || c != tt.code {
			t.Errorf("%s: %d %q, want %d %q", tt.name, st, c, tt.status, tt.code)
		}
	}
	// 198.51.100.1 has used two of its three failures; one more, then 429 even for the right key.
	if st, _ := do("POST", "/api/v1/emit", "guess", "198.51.100.1", emit); st != 401 {
		t.Fatalf("third failure: %d", st)
	}
	for _, key := range []string{"guess", "secret"} {
		if st, c := do("POST", "/api/v1/emit", key, "198.51.100.1", emit); st != 429 || c != "too_many_attempts" {
			t.Errorf("after three failures, key %q: %d %q, want 429 too_many_attempts", key, st, c)
		}
	}
	if st, _ := do("POST", "/api/v1/emit", "secret", "198.51.100.2", emit); st != 202 {
		t.Errorf("another address: %d, want 202", st)
	}
}

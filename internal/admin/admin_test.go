package admin

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/metrics"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/internal/siotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a sio server with the admin on it, in-process.
func start(t *testing.T, o Options) (*sio.Server, *Admin, string) {
	t.Helper()
	srv := sio.NewServer(sio.Options{})
	a := Register(srv, o)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	return srv, a, ts.URL
}

func dial(t *testing.T, url, nsp string, auth any) *siotest.Client {
	t.Helper()
	return siotest.Connect(t, url, nsp, auth)
}

// waitEvent returns the admin's next event called name, skipping others.
func waitEvent(t *testing.T, c *siotest.Client, name string) siotest.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("no %s: %v", name, err)
		}
		if ev.Name == name {
			return ev
		}
	}
}

// A session id is accepted on every node with the same credentials, until it expires; one forged,
// tampered with, expired or made under other credentials is not.
func TestSessions(t *testing.T) {
	t.Parallel()
	a := &Admin{opts: Options{Username: "u", Password: "p"}}
	b := &Admin{opts: Options{Username: "u", Password: "p"}}
	other := &Admin{opts: Options{Username: "u", Password: "changed"}}
	for _, x := range []*Admin{a, b, other} {
		k := sha256.Sum256([]byte("chorus admin session\x00" + x.opts.Username + "\x00" + x.opts.Password))
		x.key = k[:]
	}
	s := a.newSession()
	if !a.validSession(s) || !b.validSession(s) {
		t.Fatal("a fresh session is refused")
	}
	if other.validSession(s) {
		t.Fatal("a session survives a password change")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(s)
	raw[len(raw)-1] ^= 1
	for _, bad := range []string{"", "forged", base64.RawURLEncoding.EncodeToString(raw), s + "x"} {
		if a.validSession(bad) {
			t.Errorf("session %q accepted", bad)
		}
	}
	expired := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Add(-time.Second).Unix()))
	mac := hmac.New(sha256.New, a.key)
	mac.Write(expired)
	if a.validSession(base64.RawURLEncoding.EncodeToString(mac.Sum(expired))) {
		t.Error("an expired session is accepted")
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	a := &Admin{opts: Options{Username: "admin", Password: "secret"}}
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{{"admin", "secret", true}, {"admin", "secret ", false}, {"admin", "", false}, {"", "secret", false}, {"Admin", "secret", false}, {"secret", "admin", false}} {
		if got := a.matches(tc.user, tc.pass); got != tc.ok {
			t.Errorf("matches(%q, %q) = %v", tc.user, tc.pass, got)
		}
	}
}

// The UI's socket form: client and transport from data._admin, which is not shown; the address from
// a proxy's header when there is one; never the handshake's auth.
func TestSerialize(t *testing.T) {
	t.Parallel()
	si := adapter.SocketInfo{
		ID:        "s1",
		Handshake: json.RawMessage(`{"address":"10.0.0.1","headers":{"x-forwarded-for":"203.0.113.9"},"auth":{"token":"secret"},"query":{}}`),
		Rooms:     []string{"s1", "r"},
		Data:      json.RawMessage(`{"_admin":{"clientId":"c1","transport":"polling"},"user":"ann"}`),
	}
	got := serialize("/chat", si)
	if got.ClientID != "c1" || got.Transport != "polling" || got.Nsp != "/chat" || string(got.Data) != `{"user":"ann"}` {
		t.Errorf("serialize = %+v, data %s", got, got.Data)
	}
	var hs map[string]any
	json.Unmarshal(got.Handshake, &hs)
	if hs["address"] != "203.0.113.9" || hs["auth"] != nil {
		t.Errorf("handshake %s", got.Handshake)
	}
	// A Node server's socket without _admin, and one with data that is not an object.
	if s := serialize("/", adapter.SocketInfo{ID: "x", Data: json.RawMessage(`null`)}); string(s.Data) != "null" || s.ClientID != "" || string(s.Handshake) != "{}" || s.Rooms == nil {
		t.Errorf("serialize without _admin = %+v", s)
	}
}

// Events sent to a single socket (Conn.Emit) reach the Events page when live events are on; the
// admin's own traffic never does.
func TestLiveEventsSent(t *testing.T) {
	t.Parallel()
	srv, _, url := start(t, Options{Username: "u", Password: "p", Events: true})
	ui := dial(t, url, NamespaceName, map[string]string{"username": "u", "password": "p"})
	waitEvent(t, ui, "config")
	c := dial(t, url, "/", nil)
	conn, ok := srv.Namespace("/").Socket(c.ID)
	if !ok {
		t.Fatal("no socket")
	}
	if err := conn.Emit("greeting", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, ui, "event_sent")
	if len(ev.Args) != 4 || string(ev.Args[0]) != `"/"` || string(ev.Args[1]) != `"`+c.ID+`"` || string(ev.Args[2]) != `["greeting",{"n":1}]` {
		t.Fatalf("event_sent %s", ev.Args)
	}
}

// server_stats count what happened since the previous one, and only that.
func TestAggregatedEventsAreDeltas(t *testing.T) {
	t.Parallel()
	var totals struct {
		opened, in float64
	}
	srv := sio.NewServer(sio.Options{})
	defer srv.Close()
	a := Register(srv, Options{Username: "u", Password: "p", Totals: func() metrics.Totals {
		return metrics.Totals{Opened: totals.opened, BytesIn: totals.in, Closed: map[string]float64{}}
	}})
	totals.opened, totals.in = 3, 100
	st := a.stats(true)
	if len(st.AggregatedEvents) != 2 || st.AggregatedEvents[0].Count != 3 || st.AggregatedEvents[1].Count != 100 {
		t.Fatalf("first stats %+v", st.AggregatedEvents)
	}
	if st := a.stats(true); len(st.AggregatedEvents) != 0 {
		t.Fatalf("nothing happened, yet %+v", st.AggregatedEvents)
	}
	totals.opened = 4
	if st := a.stats(true); len(st.AggregatedEvents) != 1 || st.AggregatedEvents[0].Type != "rawConnection" || st.AggregatedEvents[0].Count != 1 {
		t.Fatalf("after one more connection %+v", st.AggregatedEvents)
	}
}

// The UI is read from disk: a missing install says how to fix it; paths cannot escape the directory.
func TestUIHandler(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := UIHandler(dir)
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	if rec := get("/admin/"); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "npm ci") {
		t.Fatalf("not installed: %d %s", rec.Code, rec.Body)
	}
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<title>ui</title>"), 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(dir), "secret.txt"), []byte("secret"), 0o644)
	if rec := get("/admin/"); rec.Code != 200 || rec.Body.String() != "<title>ui</title>" {
		t.Fatalf("index: %d %s", rec.Code, rec.Body)
	}
	for _, p := range []string{"/admin/../secret.txt", "/admin/%2e%2e/secret.txt", "/admin/nope.js"} {
		if rec := get(p); rec.Code != 404 {
			t.Errorf("%s: %d", p, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/admin/", nil))
	if rec.Code != 405 {
		t.Errorf("POST: %d", rec.Code)
	}
}

package web

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	fakeClient = "/* fake socket.io client */ window.io = function () {};\n"
	fakeESM    = "/* fake socket.io client */ export class Manager {}\n"
	fakeMap    = `{"version":3,"sources":[],"mappings":""}`
)

// serve starts Handler(clientDir) on a real listener and returns its URL.
func serve(t *testing.T, clientDir string) string {
	t.Helper()
	srv := httptest.NewServer(Handler(clientDir))
	t.Cleanup(srv.Close)
	return srv.URL
}

// clientDir returns a temporary directory holding a fake socket.io client build.
func clientDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"socket.io.min.js": fakeClient, "socket.io.min.js.map": fakeMap,
		"socket.io.esm.min.js": fakeESM, "socket.io.esm.min.js.map": fakeMap,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(body)}
}

func wantHeader(t *testing.T, r response, key, want string) {
	t.Helper()
	if got := r.header.Get(key); got != want {
		t.Errorf("%s = %q, want %q", key, got, want)
	}
}

func TestPage(t *testing.T) {
	t.Parallel()
	base := serve(t, clientDir(t))

	r := do(t, http.MethodGet, base+"/", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", r.status)
	}
	wantHeader(t, r, "Content-Type", "text/html; charset=utf-8")
	wantHeader(t, r, "Cache-Control", "no-cache")
	wantHeader(t, r, "X-Content-Type-Options", "nosniff")
	for _, want := range []string{
		`<script type="importmap">{"imports": {"socket.io-client": "/vendor/socket.io.esm.min.js"}}</script>`,
		`<script type="module" src="/app.js"></script>`,
		`<link rel="stylesheet" href="/style.css">`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// The import map is the one inline script: the policy allows it by its hash, and nothing else inline.
	csp := r.header.Get("Content-Security-Policy")
	sum := sha256.Sum256([]byte(`{"imports": {"socket.io-client": "/vendor/socket.io.esm.min.js"}}`))
	if want := "script-src 'self' 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "';"; !strings.Contains(csp, want) {
		t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("Content-Security-Policy %q allows inline scripts", csp)
	}
	// Browser tests drive the page through these.
	for _, id := range []string{
		"status", "attempt", "queued", "reconnect-button", "transport-select", "room-input", "join-button",
		"leave-button", "message-input", "send-button", "messages", "stats-node", "stats-connections", "stats-rate",
	} {
		if !strings.Contains(r.body, `id="`+id+`" data-testid="`+id+`"`) {
			t.Errorf("page lacks an element with id and data-testid %q", id)
		}
	}

	// The page revalidates with its ETag.
	etag := r.header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on the page")
	}
	if r := do(t, http.MethodGet, base+"/", http.Header{"If-None-Match": {etag}}); r.status != http.StatusNotModified {
		t.Errorf("GET / with If-None-Match = %d, want 304", r.status)
	}
}

func TestPageAssets(t *testing.T) {
	t.Parallel()
	base := serve(t, t.TempDir()) // the page's own files do not depend on the client

	tests := []struct {
		name        string
		path        string
		contentType string
		body        []byte
	}{
		{name: "script", path: "/app.js", contentType: "text/javascript; charset=utf-8", body: appJS},
		{name: "stylesheet", path: "/style.css", contentType: "text/css; charset=utf-8", body: styleCSS},
		{name: "client module", path: "/chorus-client.js", contentType: "text/javascript; charset=utf-8", body: clientJS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, http.MethodGet, base+tt.path, nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200", tt.path, r.status)
			}
			wantHeader(t, r, "Content-Type", tt.contentType)
			wantHeader(t, r, "Cache-Control", "no-cache")
			wantHeader(t, r, "X-Content-Type-Options", "nosniff")
			if r.body != string(tt.body) {
				t.Errorf("GET %s served %d bytes, want the embedded %d", tt.path, len(r.body), len(tt.body))
			}
		})
	}
}

func TestVendoredClient(t *testing.T) {
	t.Parallel()
	base := serve(t, clientDir(t))

	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
	}{
		{name: "client", method: http.MethodGet, path: "/vendor/socket.io.min.js", contentType: "text/javascript; charset=utf-8", body: fakeClient},
		{name: "client HEAD", method: http.MethodHead, path: "/vendor/socket.io.min.js", contentType: "text/javascript; charset=utf-8", body: ""},
		{name: "source map", method: http.MethodGet, path: "/vendor/socket.io.min.js.map", contentType: "application/json; charset=utf-8", body: fakeMap},
		{name: "ES module", method: http.MethodGet, path: "/vendor/socket.io.esm.min.js", contentType: "text/javascript; charset=utf-8", body: fakeESM},
		{name: "ES module source map", method: http.MethodGet, path: "/vendor/socket.io.esm.min.js.map", contentType: "application/json; charset=utf-8", body: fakeMap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, tt.method, base+tt.path, nil)
			if r.status != http.StatusOK {
				t.Fatalf("%s %s = %d, want 200", tt.method, tt.path, r.status)
			}
			wantHeader(t, r, "Content-Type", tt.contentType)
			wantHeader(t, r, "X-Content-Type-Options", "nosniff")
			if r.body != tt.body {
				t.Errorf("%s %s body = %q, want %q", tt.method, tt.path, r.body, tt.body)
			}
		})
	}
}

// The client is read on every request, so `npm ci` after start is enough.
func TestClientInstalledLater(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := serve(t, dir)

	if r := do(t, http.MethodGet, base+"/vendor/socket.io.min.js", nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("before install: %d, want 503", r.status)
	}
	if err := os.WriteFile(filepath.Join(dir, "socket.io.min.js"), []byte(fakeClient), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodGet, base+"/vendor/socket.io.min.js", nil); r.status != http.StatusOK || r.body != fakeClient {
		t.Fatalf("after install: %d %q, want 200 and the file", r.status, r.body)
	}
}

func TestMissingClient(t *testing.T) {
	t.Parallel()
	base := serve(t, filepath.Join(t.TempDir(), "node_modules", "socket.io-client", "dist"))

	if r := do(t, http.MethodGet, base+"/vendor/socket.io.esm.min.js", nil); r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "npm ci") {
		t.Errorf("GET ES module client = %d %q, want 503 telling to run npm ci", r.status, r.body)
	}
	r := do(t, http.MethodGet, base+"/vendor/socket.io.min.js", nil)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("GET client = %d, want 503", r.status)
	}
	wantHeader(t, r, "Content-Type", "text/plain; charset=utf-8")
	wantHeader(t, r, "X-Content-Type-Options", "nosniff")
	if !strings.Contains(r.body, "npm ci") {
		t.Errorf("503 body %q does not tell the operator to run npm ci", r.body)
	}

	if r := do(t, http.MethodGet, base+"/vendor/socket.io.min.js.map", nil); r.status != http.StatusNotFound {
		t.Errorf("GET source map = %d, want 404", r.status)
	}
	if r := do(t, http.MethodGet, base+"/", nil); r.status != http.StatusOK {
		t.Errorf("GET / = %d, want 200 even without the client", r.status)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	base := serve(t, clientDir(t))

	for _, path := range []string{
		"/nope",
		"/index.html",
		"/static/app.js",
		"/app.js/",
		"/vendor/",
		"/vendor/socket.io.js",
		"/vendor/../web.go",
		"/vendor/%2e%2e/web.go",
	} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			r := do(t, http.MethodGet, base+path, nil)
			if r.status != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", path, r.status)
			}
			wantHeader(t, r, "X-Content-Type-Options", "nosniff")
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	base := serve(t, clientDir(t))

	tests := []struct{ method, path string }{
		{http.MethodPost, "/"},
		{http.MethodPut, "/app.js"},
		{http.MethodDelete, "/style.css"},
		{http.MethodPost, "/vendor/socket.io.min.js"},
		{http.MethodOptions, "/"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			r := do(t, tt.method, base+tt.path, nil)
			if r.status != http.StatusMethodNotAllowed {
				t.Fatalf("%s %s = %d, want 405", tt.method, tt.path, r.status)
			}
			wantHeader(t, r, "Allow", "GET, HEAD")
		})
	}
}

// TestPageScript checks app.js against the page it runs in: every element it looks up exists, and
// neither it nor the client module builds markup from strings.
func TestPageScript(t *testing.T) {
	t.Parallel()
	script, page := string(appJS), string(indexHTML)

	for name, js := range map[string]string{"app.js": script, "chorus-client.js": string(clientJS)} {
		if strings.Contains(js, "innerHTML") || strings.Contains(js, "insertAdjacentHTML") {
			t.Errorf("%s builds markup from strings; use textContent", name)
		}
	}
	ids := regexp.MustCompile(`\$\("([^"]+)"\)`).FindAllStringSubmatch(script, -1)
	if len(ids) == 0 {
		t.Fatal("found no $(id) lookups in app.js")
	}
	for _, m := range ids {
		if !strings.Contains(page, `id="`+m[1]+`"`) {
			t.Errorf("app.js looks up #%s, which index.html lacks", m[1])
		}
	}
}

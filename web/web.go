// Package web serves the chorus demo page (rooms, chat and a live dashboard of the node's stats) and
// the browser client module it is built on, chorus-client.js: a connection manager on the stock
// socket.io-client that applications can copy (README, "The browser client module").
//
// The page and the module are embedded in the binary. The socket.io client is third-party code
// installed by npm and never committed, so it is read from disk on every request: running `npm ci`
// after chorus started is enough, no restart needed. The page maps the bare import "socket.io-client"
// to the client's ES module build with an import map.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// DefaultClientDir is where `npm ci` in the repository root puts the browser builds of
// socket.io-client. Handler uses it when given an empty clientDir.
const DefaultClientDir = "node_modules/socket.io-client/dist"

// The page's own files. Naming each one makes a missing file a build error and keeps
// anything else in static/ from being served by accident.
var (
	//go:embed static/index.html
	indexHTML []byte
	//go:embed static/app.js
	appJS []byte
	//go:embed static/chorus-client.js
	clientJS []byte
	//go:embed static/style.css
	styleCSS []byte
)

const (
	contentTypeHTML = "text/html; charset=utf-8"
	contentTypeJS   = "text/javascript; charset=utf-8"
	contentTypeCSS  = "text/css; charset=utf-8"
	contentTypeJSON = "application/json; charset=utf-8"
)

// pageCSP allows the page only its own origin: its scripts, style, the vendored client, and the
// socket.io connection (CSP Level 3 browsers match same-origin ws: and wss: with 'self'); the one
// inline script, the import map, is allowed by its hash. data: images are for the empty favicon,
// which spares a 404 in every browser console.
var pageCSP = "default-src 'self'; script-src 'self'" + inlineScriptHashes(indexHTML) +
	"; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

var inlineScript = regexp.MustCompile(`(?s)<script type="importmap">(.*?)</script>`)

// inlineScriptHashes returns the CSP sources (" 'sha256-…'") of page's import maps.
func inlineScriptHashes(page []byte) string {
	var out string
	for _, m := range inlineScript.FindAllSubmatch(page, -1) {
		sum := sha256.Sum256(m[1])
		out += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return out
}

// Handler serves the demo page (embedded with go:embed from web/static) at "/", the client module at
// "/chorus-client.js", and the stock socket.io client's builds at "/vendor/socket.io.esm.min.js"
// (the ES module the page imports) and "/vendor/socket.io.min.js" (the classic script, for pages
// that load io() as a global), each with its .map, read from clientDir on disk (default in config:
// node_modules/socket.io-client/dist; "" means DefaultClientDir), because third-party code is
// installed by npm, never committed. If a client file is missing, it answers 503 with a plain
// message telling the operator to run `npm ci`, and the page still loads.
//
// Every response has "X-Content-Type-Options: nosniff"; the page's files have "Cache-Control:
// no-cache" and an ETag, so browsers revalidate them cheaply. Paths other than these answer 404,
// and methods other than GET and HEAD answer 405.
func Handler(clientDir string) http.Handler {
	if clientDir == "" {
		clientDir = DefaultClientDir
	}
	mux := http.NewServeMux()
	// "GET" patterns also match HEAD; ServeMux answers 405 with an Allow header for other methods.
	mux.Handle("GET /{$}", embedded(indexHTML, contentTypeHTML, pageCSP))
	mux.Handle("GET /app.js", embedded(appJS, contentTypeJS, ""))
	mux.Handle("GET /style.css", embedded(styleCSS, contentTypeCSS, ""))
	mux.Handle("GET /chorus-client.js", embedded(clientJS, contentTypeJS, ""))
	for _, name := range []string{"socket.io.min.js", "socket.io.esm.min.js"} {
		mux.Handle("GET /vendor/"+name, vendored(clientDir, name, contentTypeJS, true))
		mux.Handle("GET /vendor/"+name+".map", vendored(clientDir, name+".map", contentTypeJSON, false))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// embedded serves one file of the page from memory. http.ServeContent answers HEAD, ranges and
// If-None-Match against the content hash.
func embedded(body []byte, contentType, csp string) http.Handler {
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		if csp != "" {
			h.Set("Content-Security-Policy", csp)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}

// vendored serves dir/name from disk. A missing file answers 503 with instructions when the page
// cannot work without it (required), and 404 otherwise (the source map is only for developer tools).
func vendored(dir, name, contentType string, required bool) http.Handler {
	path := filepath.Join(dir, name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			missing(w, r, path, err, required)
			return
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			missing(w, r, path, err, required)
			return
		}
		if info.IsDir() {
			missing(w, r, path, fs.ErrNotExist, required)
			return
		}
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", info.ModTime(), f)
	})
}

func missing(w http.ResponseWriter, r *http.Request, path string, err error, required bool) {
	switch {
	case !errors.Is(err, fs.ErrNotExist):
		// Present but unreadable (permissions, I/O): that is not fixed by npm ci.
		http.Error(w, fmt.Sprintf("cannot read the socket.io client: %v", err), http.StatusInternalServerError)
	case required:
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, fmt.Sprintf("socket.io client not installed: %s is missing. "+
			"Run `npm ci` in the chorus repository, or point the client directory at an installed "+
			"socket.io-client/dist.", path), http.StatusServiceUnavailable)
	default:
		http.NotFound(w, r)
	}
}

package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// DefaultUIDir is where `npm ci` in the repository root puts the Admin UI's built files.
const DefaultUIDir = "node_modules/@socket.io/admin-ui/ui/dist"

// UIHandler serves the stock Admin UI's built files (index.html, js/, css/, img/) from dir on disk
// under /admin/ (mount it at "/admin/"; "/admin" redirects there). The files are third-party code
// installed by npm, never committed, and are read on each request. A missing installation answers
// 503 with instructions; directories are not listed; methods other than GET and HEAD answer 405.
func UIHandler(dir string) http.Handler {
	if dir == "" {
		dir = DefaultUIDir
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		rel, ok := strings.CutPrefix(r.URL.Path, "/admin/")
		if !ok {
			http.Redirect(w, r, "/admin/", http.StatusMovedPermanently)
			return
		}
		if rel == "" {
			rel = "index.html"
		}
		rel = path.Clean("/" + rel)[1:]
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			uiMissing(w, r, dir, rel, err)
			return
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil || info.IsDir() {
			http.NotFound(w, r)
			return
		}
		if rel == "index.html" {
			w.Header().Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, info.Name(), info.ModTime(), f)
	})
}

func uiMissing(w http.ResponseWriter, r *http.Request, dir, rel string, err error) {
	if !errors.Is(err, fs.ErrNotExist) {
		http.Error(w, fmt.Sprintf("cannot read the Admin UI: %v", err), http.StatusInternalServerError)
		return
	}
	if _, statErr := os.Stat(filepath.Join(dir, "index.html")); statErr == nil || rel != "index.html" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, fmt.Sprintf("Admin UI not installed: %s is missing. Run `npm ci` in the chorus repository, "+
		"or point CHORUS_ADMIN_UI_DIR at an installed @socket.io/admin-ui/ui/dist.", filepath.Join(dir, "index.html")),
		http.StatusServiceUnavailable)
}

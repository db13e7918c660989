package app_test

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
)

// A keep-alive connection that made a request and then stays silent is closed after the idle
// timeout: without it, it held a goroutine and its buffers for ever, outside every per-address
// limit (those count sessions, not connections).
func TestIdleConnectionIsClosed(t *testing.T) {
	defer app.SetIdleTimeout(300 * time.Millisecond)()
	cfg := config.Default()
	srv, h := app.New(cfg, slog.New(slog.DiscardHandler))
	ts := httptest.NewUnstartedServer(h)
	ts.Config = app.HTTPServer(h, slog.New(slog.DiscardHandler))
	ts.Start()
	defer func() {
		srv.Close()
		ts.Close()
	}()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: chorus\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("the idle connection was not closed: %v after %v", err, time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
}

package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Poller opens and closes Engine.IO long-polling sessions over keep-alive HTTP connections.
type Poller struct {
	base   string
	client *http.Client
}

// NewPoller returns a poller for the server at addr (host:port) that keeps up to conns HTTP
// connections open.
func NewPoller(addr string, conns int) *Poller {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	return &Poller{base: "http://" + addr + "/socket.io/?EIO=4&transport=polling", client: &http.Client{Transport: tr}}
}

// Close closes the poller's idle HTTP connections.
func (p *Poller) Close() { p.client.CloseIdleConnections() }

// Handshake runs one whole session: the open GET, a POST of the Socket.IO connect "40", the GET
// that returns the connect reply "40{sid}", and a POST of the close packet "1".
func (p *Poller) Handshake(ctx context.Context) error {
	body, err := p.do(ctx, http.MethodGet, p.base, "")
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	var open struct {
		SID string `json:"sid"`
	}
	if len(body) < 2 || body[0] != '0' || json.Unmarshal(body[1:], &open) != nil || open.SID == "" {
		return fmt.Errorf("open: want an open packet, got %q", clip(body))
	}
	u := p.base + "&sid=" + open.SID
	if _, err := p.do(ctx, http.MethodPost, u, "40"); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	body, err = p.do(ctx, http.MethodGet, u, "")
	if err != nil {
		return fmt.Errorf("connect reply: %w", err)
	}
	if !bytes.HasPrefix(body, []byte(`40{"sid":`)) {
		return fmt.Errorf("connect reply: got %q", clip(body))
	}
	if _, err := p.do(ctx, http.MethodPost, u, "1"); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

func (p *Poller) do(ctx context.Context, method, url, body string) ([]byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %q", method, resp.StatusCode, clip(data))
	}
	return data, nil
}

// HandshakeMany runs n sessions with at most concurrency in flight; err reports how many failed
// and the first failure.
func (p *Poller) HandshakeMany(ctx context.Context, n, concurrency int) (ok int, err error) {
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		firstErr   error
		wg         sync.WaitGroup
	)
	for range min(concurrency, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				if err := p.Handshake(ctx); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	ok = int(done.Load())
	if ok < n {
		return ok, fmt.Errorf("%d of %d polling sessions failed: %w", n-ok, n, errors.Join(firstErr, ctx.Err()))
	}
	return ok, nil
}

package engine

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

// A client that stops reading must not grow the server's memory without bound: once the output
// waiting for it passes MaxBuffered it is closed with ReasonSlowConsumer, and a client that reads
// gets every packet, in order, meanwhile. Over WebSocket the client stops reading its socket (the
// TCP window fills, then the kernel's buffers, then the session's queue); over long-polling it
// stops polling.
func TestSlowConsumer(t *testing.T) {
	const maxBuffered = 64 << 10
	payload := strings.Repeat("x", 1000)
	tests := []struct {
		name string
		// stall opens the session that stops reading and returns its recorder.
		stall func(t *testing.T, ts *testServer) *recorder
	}{
		{name: "websocket, stops reading", stall: func(t *testing.T, ts *testServer) *recorder {
			c := dialSmallWindow(t, ts)
			return ts.rec(parseOpen(t, c.mustReadText()).SID)
		}},
		{name: "polling, stops polling", stall: func(t *testing.T, ts *testServer) *recorder {
			return ts.pollHandshake().rec
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, Options{MaxBuffered: maxBuffered})
			slow := tt.stall(t, ts)
			reader, _, good := ts.wsHandshake()

			// Broadcast until the stalled session is closed: at most 64 MiB, far more than the
			// kernel's socket buffers and the cap together.
			sent := 0
			for ; len(slow.closeReasons()) == 0 && sent < 64<<10; sent++ {
				Broadcast([]*Conn{slow.conn, good.conn}, []Packet{{Data: []byte(fmt.Sprintf("%d %s", sent, payload))}})
				if sent%16 == 15 {
					// Let the reader keep up, as a live client would; the stalled one never does.
					for i := sent - 15; i <= sent; i++ {
						want := fmt.Sprintf("4%d %s", i, payload)
						if got := reader.mustReadText(); got != want {
							t.Fatalf("the reading client got %.20q…, want %.20q…", got, want)
						}
					}
				}
			}
			if reason := slow.waitClosed(t, waitTimeout); reason != ReasonSlowConsumer {
				t.Fatalf("the stalled session closed with %q after %d packets, want %q", reason, sent, ReasonSlowConsumer)
			}
			eventually(t, waitTimeout, func() bool { return ts.Len() == 1 }, "the stalled session to be removed")
			if reasons := good.closeReasons(); len(reasons) > 0 {
				t.Fatalf("the reading session closed too: %q", reasons)
			}
			// The reader still gets everything after the stalled one is gone.
			for i := sent - sent%16; i < sent; i++ {
				want := fmt.Sprintf("4%d %s", i, payload)
				if got := reader.mustReadText(); got != want {
					t.Fatalf("the reading client got %.20q…, want %.20q…", got, want)
				}
			}
		})
	}
}

// dialSmallWindow opens a WebSocket session whose socket has a small receive buffer, so that a
// client that stops reading fills the TCP window quickly.
func dialSmallWindow(t *testing.T, ts *testServer) *wsClient {
	t.Helper()
	nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	c, err := ts.dialWSWith("EIO=4&transport=websocket", nil, nd.DialContext)
	if err != nil {
		t.Fatalf("WebSocket dial: %v", err)
	}
	return c
}

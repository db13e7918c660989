package engine

import (
	"time"

	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/gobwas/ws"
)

// The upgrade as engine.io-client runs it: probe over a new WebSocket while a GET waits, the GET is
// answered with a noop so the client can pause polling, "5" moves the session, and everything queued
// around the switch arrives over the WebSocket in order.
func TestUpgrade(t *testing.T) {
	ts := newTestServer(t, Options{}, withEcho)
	pc := ts.pollHandshake()
	c := pc.rec.conn

	// Before the upgrade the session works over polling.
	pc.mustPostOK("4before")
	if got := pc.mustGetOK(); !slices.Equal(got, []string{"4before"}) {
		t.Fatalf("echo over polling: %q", got)
	}

	get := pc.startGet()
	eventually(t, waitTimeout, pc.pollWaiting, "the GET to wait on the server")

	wc := ts.mustDialWS("EIO=4&transport=websocket&sid=" + pc.sid)
	wc.mustWriteText("2probe")
	if got := wc.mustReadText(); got != "3probe" {
		t.Fatalf("probe answer %q, want 3probe", got)
	}
	res := awaitGet(t, get)
	if res.status != http.StatusOK || res.body != "6" {
		t.Fatalf("the GET pending at the probe got status %d body %q, want 200 \"6\"", res.status, res.body)
	}
	if got := c.Transport(); got != Polling {
		t.Fatalf("Transport() = %q before the upgrade packet", got)
	}

	// Queued while upgrading: no GET waits, so they wait for the switch.
	c.Send(Packet{Data: []byte("during-1")})
	c.Send(Packet{Data: []byte{1, 2}, Binary: true}, Packet{Data: []byte("during-2")})

	wc.mustWriteText("5")
	eventually(t, waitTimeout, func() bool { return len(pc.rec.upgradeList()) == 1 }, "OnUpgrade")
	if got := pc.rec.upgradeList(); got[0] != WebSocket {
		t.Errorf("OnUpgrade(%q), want websocket", got[0])
	}
	if got := c.Transport(); got != WebSocket {
		t.Errorf("Transport() = %q after the upgrade", got)
	}
	c.Send(Packet{Data: []byte("after-1")})
	c.Send(Packet{Data: []byte("after-2")})

	want := []struct {
		op   ws.OpCode
		data string
	}{{ws.OpText, "4during-1"}, {ws.OpBinary, "\x01\x02"}, {ws.OpText, "4during-2"}, {ws.OpText, "4after-1"}, {ws.OpText, "4after-2"}}
	for i, w := range want {
		data, op := wc.mustRead()
		if op != w.op || string(data) != w.data {
			t.Fatalf("WebSocket frame %d = %v %q, want %v %q", i, op, data, w.op, w.data)
		}
	}

	// Incoming packets now come over the WebSocket; the echo goes back over it.
	wc.mustWriteText("4via-ws")
	if got := wc.mustReadText(); got != "4via-ws" {
		t.Fatalf("echo over WebSocket = %q", got)
	}

	// The polling transport is gone for this session.
	checkError(t, pc.mustGet(), http.StatusBadRequest, codeBadRequest)
	checkError(t, pc.mustPost("4late"), http.StatusBadRequest, codeBadRequest)
	// A second upgrade is accepted and closed at once (as Node does); the session carries on.
	wc2, err := ts.dialWS("EIO=4&transport=websocket&sid="+pc.sid, nil)
	if err != nil {
		t.Fatalf("second upgrade of the session: %v", err)
	}
	if _, err := wc2.readClose(); err != nil {
		t.Errorf("second upgrade's WebSocket was not closed: %v", err)
	}
	wc.mustWriteText("4via-ws")
	if got := wc.mustReadText(); got != "4via-ws" {
		t.Fatalf("echo over WebSocket after a second upgrade = %q", got)
	}
	if got := pc.rec.messages(); len(got) != 3 || got[2] != (message{"via-ws", false}) {
		t.Errorf("handler got %v", got)
	}
	if got := pc.rec.closeReasons(); len(got) != 0 {
		t.Errorf("session closed: %q", got)
	}
}

// Packets queued before the probe while no GET waits are not lost: they come out either in a GET
// or over the WebSocket, in order, and nothing comes twice.
func TestUpgradeKeepsOrder(t *testing.T) {
	ts := newTestServer(t, Options{})
	for round := range 20 {
		pc := ts.pollHandshake()
		c := pc.rec.conn
		var got []string
		sent := 0
		send := func(k int) {
			for range k {
				c.Send(Packet{Data: []byte(fmt.Sprintf("p%d", sent))})
				sent++
			}
		}
		send(3)
		get := pc.startGet() // takes the 3 at once, or waits
		send(2)
		wc := ts.mustDialWS("EIO=4&transport=websocket&sid=" + pc.sid)
		wc.mustWriteText("2probe")
		if s := wc.mustReadText(); s != "3probe" {
			t.Fatalf("round %d: probe answer %q", round, s)
		}
		send(2)
		// The client pauses: it waits for its GET, and polls until a GET ends in a noop (or takes
		// what is queued).
		for {
			res := awaitGet(t, get)
			if res.status != http.StatusOK {
				t.Fatalf("round %d: GET during upgrade: %d %q", round, res.status, res.body)
			}
			pkts := splitPayload(res.body)
			if slices.Equal(pkts, []string{"6"}) {
				break
			}
			got = append(got, pkts...)
			get = pc.startGet()
		}
		send(2)
		wc.mustWriteText("5")
		send(2)
		for len(got) < sent {
			got = append(got, wc.mustReadText())
		}
		for i, p := range got {
			if want := fmt.Sprintf("4p%d", i); p != want {
				t.Fatalf("round %d: packet %d = %q, want %q (all: %q)", round, i, p, want, got)
			}
		}
	}
}

// A failed probe leaves the polling session as it was.
func TestUpgradeFailedProbe(t *testing.T) {
	tests := []struct {
		name  string
		probe func(wc *wsClient) error
	}{
		{name: "wrong probe", probe: func(wc *wsClient) error { return wc.write(ws.OpText, []byte("4hello")) }},
		{name: "binary probe", probe: func(wc *wsClient) error { return wc.write(ws.OpBinary, []byte("2probe")) }},
		{name: "hang up", probe: func(wc *wsClient) error { return wc.conn.Close() }},
		{name: "no upgrade packet", probe: func(wc *wsClient) error {
			if err := wc.write(ws.OpText, []byte("2probe")); err != nil {
				return err
			}
			if _, _, err := wc.read(); err != nil {
				return err
			}
			return wc.write(ws.OpText, []byte("4not-the-upgrade"))
		}},
	}
	ts := newTestServer(t, Options{}, withEcho)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := ts.pollHandshake()
			wc := ts.mustDialWS("EIO=4&transport=websocket&sid=" + pc.sid)
			if err := tt.probe(wc); err != nil {
				t.Fatal(err)
			}
			if _, err := wc.readClose(); err != nil {
				t.Fatalf("the failed probe's WebSocket was not closed: %v", err)
			}
			eventually(t, waitTimeout, func() bool { return !pc.upgrading() }, "the upgrade to be abandoned")
			// Still a polling session: a POST is handled and its echo comes back by GET.
			pc.mustPostOK("4still-polling")
			var got []string
			for !slices.Contains(got, "4still-polling") {
				got = append(got, pc.mustGetOK()...)
			}
			if r := pc.rec.closeReasons(); len(r) != 0 || pc.rec.conn.Transport() != Polling {
				t.Fatalf("session after a failed probe: closes %q, transport %q", r, pc.rec.conn.Transport())
			}
		})
	}
}

// The upgrade writes "3probe" with a write deadline; a deadline left behind made every later
// non-blocking write fail once it passed, closing upgraded sessions after PingInterval+PingTimeout.
func TestUpgradedSessionOutlivesWriteTimeout(t *testing.T) {
	const interval, timeout = 100 * time.Millisecond, 150 * time.Millisecond
	ts := newTestServer(t, Options{PingInterval: interval, PingTimeout: timeout})
	pc := ts.pollHandshake()
	c := pc.rec.conn
	get := pc.startGet()
	eventually(t, waitTimeout, pc.pollWaiting, "the GET to wait on the server")
	wc := ts.mustDialWS("EIO=4&transport=websocket&sid=" + pc.sid)
	wc.mustWriteText("2probe")
	if got := wc.mustReadText(); got != "3probe" {
		t.Fatalf("probe answer %q", got)
	}
	awaitGet(t, get)
	wc.mustWriteText("5")
	eventually(t, waitTimeout, func() bool { return c.Transport() == WebSocket }, "the upgrade")

	// Answer pings for several write timeouts, then the session must still take a message.
	deadline := time.Now().Add(4 * (interval + timeout))
	for time.Now().Before(deadline) {
		if got := wc.mustReadText(); got != "2" {
			t.Fatalf("unexpected frame %q", got)
		}
		wc.mustWriteText("3")
	}
	c.Send(Packet{Data: []byte("still-here")})
	for {
		got := wc.mustReadText()
		if got == "2" {
			wc.mustWriteText("3")
			continue
		}
		if got != "4still-here" {
			t.Fatalf("got %q, want 4still-here", got)
		}
		break
	}
	if r := pc.rec.closeReasons(); len(r) != 0 {
		t.Fatalf("the upgraded session closed: %q", r)
	}
}

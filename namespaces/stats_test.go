package namespaces_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/internal/siotest"
	"github.com/chorus-rt/chorus/namespaces"
	"github.com/chorus-rt/chorus/rooms"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const statsInterval = 50 * time.Millisecond

// serve runs a chorus server in-process with the client protocol on "/" and on "/chat", and its
// stats ticker every statsInterval until the test ends.
func serve(t *testing.T) (*sio.Server, string) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	srv := sio.NewServer(sio.Options{Logger: log})
	namespaces.Register(srv.Namespace("/"), rooms.Policy{}, nil, log)
	namespaces.Register(srv.Namespace("/chat"), rooms.Policy{}, nil, log)
	ts := httptest.NewServer(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		namespaces.RunStats(ctx, srv, namespaces.StatsOptions{Node: "node-a", Interval: statsInterval, Logger: log})
	}()
	t.Cleanup(func() {
		cancel()
		<-done // RunStats returns once ctx is done
		srv.Close()
		ts.Close()
	})
	return srv, ts.URL
}

func dial(t *testing.T, url, nsp string) *siotest.Client {
	t.Helper()
	return siotest.Connect(t, url, nsp, nil)
}

// request sends event with arg and returns the error code of the ack, "" for {ok:true}.
func request(t *testing.T, c *siotest.Client, event string, arg any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := c.EmitWithAck(ctx, event, arg)
	if err != nil {
		t.Fatalf("%s: %v", event, err)
	}
	var a struct {
		OK    bool `json:"ok"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(ev.Args[0], &a); err != nil {
		t.Fatalf("%s ack %s: %v", event, ev.Args[0], err)
	}
	if a.OK {
		return ""
	}
	return a.Error.Code
}

// nextStats returns the next chorus:stats event c receives, skipping other events.
func nextStats(t *testing.T, c *siotest.Client) namespaces.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("no %s event: %v", namespaces.StatsEvent, err)
		}
		if ev.Name != namespaces.StatsEvent {
			continue
		}
		var st namespaces.Stats
		if err := json.Unmarshal(ev.Args[0], &st); err != nil {
			t.Fatalf("stats %s: %v", ev.Args[0], err)
		}
		return st
	}
}

func TestStatsRoom(t *testing.T) {
	srv, url := serve(t)
	watcher := dial(t, url, "/")
	sender := dial(t, url, "/")
	peer := dial(t, url, "/")
	if code := request(t, peer, "join", "lobby"); code != "" {
		t.Fatalf("join lobby: %s", code)
	}

	// Nobody in the room: several ticks go by and broadcast nothing.
	if code := request(t, sender, "publish", map[string]any{"room": "lobby", "event": "chat", "data": 1}); code != "" {
		t.Fatalf("publish: %s", code)
	}
	time.Sleep(4 * statsInterval) // the absence of broadcasts cannot be awaited
	if got := srv.Emitted(); got != 1 {
		t.Fatalf("Emitted = %d with nobody in %s, want 1 (the publish only)", got, rooms.StatsRoom)
	}

	if code := request(t, watcher, "join", rooms.StatsRoom); code != "" {
		t.Fatalf("join %s: %s", rooms.StatsRoom, code)
	}
	st := nextStats(t, watcher)
	if st.Node != "node-a" || st.Connections != 3 || st.Messages != 1 {
		t.Errorf("first stats = %+v, want node node-a, 3 connections, 1 message", st)
	}
	if st.At <= 0 || time.Since(time.UnixMilli(st.At)) > 5*time.Second {
		t.Errorf("stats at %d is not a recent Unix millisecond time", st.At)
	}

	// Five publishes are counted once each, and the stats themselves are not.
	for i := range 5 {
		if code := request(t, sender, "publish", map[string]any{"room": "lobby", "event": "chat", "data": i}); code != "" {
			t.Fatalf("publish %d: %s", i, code)
		}
	}
	busy := false // some tick saw the publishes go by
	for st.Messages < 6 {
		st = nextStats(t, watcher)
		busy = busy || st.MessagesPerSecond > 0
	}
	if st.Messages != 6 || !busy {
		t.Errorf("stats after 6 publishes = %+v (a rate above 0 seen: %v), want 6 messages", st, busy)
	}
	for range 3 {
		if st = nextStats(t, watcher); st.Messages != 6 || st.MessagesPerSecond != 0 {
			t.Fatalf("idle stats = %+v, want 6 messages and a rate of 0", st)
		}
	}

	// A socket that leaves the room stops receiving them; one that disconnects is not counted.
	sender.Close()
	for st.Connections != 2 {
		st = nextStats(t, watcher)
	}
	if code := request(t, watcher, "leave", rooms.StatsRoom); code != "" {
		t.Fatalf("leave: %s", code)
	}
	before := srv.Emitted()
	time.Sleep(4 * statsInterval)
	if got := srv.Emitted(); got != before {
		t.Errorf("Emitted went from %d to %d after the last member left", before, got)
	}
}

// Every namespace's members get the stats, each on their own namespace.
func TestStatsInEveryNamespace(t *testing.T) {
	_, url := serve(t)
	root := dial(t, url, "/")
	chat := dial(t, url, "/chat")
	for _, c := range []*siotest.Client{root, chat} {
		if code := request(t, c, "join", rooms.StatsRoom); code != "" {
			t.Fatalf("join %s in %s: %s", rooms.StatsRoom, c.Nsp, code)
		}
	}
	for _, c := range []*siotest.Client{root, chat} {
		if st := nextStats(t, c); st.Node != "node-a" || st.Connections != 2 {
			t.Errorf("stats in %s = %+v, want node-a and 2 connections", c.Nsp, st)
		}
	}
}

// Clients cannot forge stats, nor take other rooms chorus reserves.
func TestServerRoomsRefused(t *testing.T) {
	_, url := serve(t)
	c := dial(t, url, "/")
	tests := []struct {
		name  string
		event string
		arg   any
		want  string
	}{
		{name: "publish to the stats room", event: "publish", arg: map[string]any{"room": rooms.StatsRoom, "event": "x", "data": 1}, want: namespaces.CodeForbidden},
		{name: "publish to another chorus room", event: "publish", arg: map[string]any{"room": "chorus:other", "event": "x"}, want: namespaces.CodeForbidden},
		{name: "join another chorus room", event: "join", arg: "chorus:other", want: namespaces.CodeForbidden},
		{name: "join a long chorus room", event: "join", arg: "chorus:" + strings.Repeat("x", 200), want: namespaces.CodeForbidden},
		{name: "join the stats room", event: "join", arg: rooms.StatsRoom, want: ""},
		{name: "leave the stats room", event: "leave", arg: rooms.StatsRoom, want: ""},
		{name: "a room that only contains chorus:", event: "join", arg: "x-chorus:stats", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := request(t, c, tt.event, tt.arg); got != tt.want {
				t.Errorf("%s %v = %q, want %q", tt.event, tt.arg, got, tt.want)
			}
		})
	}
}

package adapter_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/siotest"
)

// publishOutage publishes m=n while Redis is unreachable: acked local.
func publishOutage(t *testing.T, c *siotest.Client, n int) {
	t.Helper()
	publishLocal(t, c, map[string]any{"room": "room", "event": "m", "data": n})
}

// While Redis is down, a publish acked {local:true} reaches the publisher's node only, with a local
// offset (the node's outage log). A client of that node that drops during the outage and comes
// back, during it (its CONNECT waits for Redis) or after it, recovers what it missed: the local
// broadcasts after its offset, then the stream entries, each exactly once and in order. So does a
// client that dropped before the outage. The other node's clients never get them.
func TestStreamsRecoveryOfOutageBroadcasts(t *testing.T) {
	t.Parallel()
	rs := startRedisPersistent(t)
	nodes, _ := streamsNodes(t, rs, 2, nil)
	a, b := nodes[0], nodes[1]
	stay := dial(t, a.url)   // stays connected
	early := dial(t, a.url)  // drops before the outage, back after it
	during := dial(t, a.url) // drops during the outage, back during it
	late := dial(t, a.url)   // drops during the outage, back after it
	other := dial(t, b.url)
	for _, c := range []*siotest.Client{stay, early, during, late, other} {
		join(t, c, "room")
	}
	pub := dial(t, a.url)
	publish(t, pub, "room", "m", 1)
	for _, c := range []*siotest.Client{stay, early, during, late, other} {
		expect(t, c, "m", "1")
	}
	dropOn(t, a, early)
	earlyOffset := early.LastOffset()

	rs.stop()
	waitFor(t, "node A reports redis down", func() bool { return readyzState(t, a) == "down" })
	publishOutage(t, pub, 2)
	for _, c := range []*siotest.Client{stay, during, late} {
		ev := next(t, c)
		if ev.Name != "m" || string(ev.Args[0]) != "2" || !strings.Contains(ev.Offset, ":") {
			t.Fatalf("client %s: got %s %s offset %q, want m [2] with a local offset", c.ID, ev.Name, ev.Args, ev.Offset)
		}
	}
	dropOn(t, a, during)
	dropOn(t, a, late)
	publishOutage(t, pub, 3)
	publishOutage(t, pub, 4)
	expect(t, stay, "m", "3")
	expect(t, stay, "m", "4")

	// Back during the outage: its CONNECT waits for Redis.
	type dialed struct {
		c   *siotest.Client
		err error
	}
	back := make(chan dialed, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cl, err := siotest.Dial(ctx, a.url, "/", map[string]string{"pid": during.PID, "offset": during.LastOffset()})
		back <- dialed{cl, err}
	}()
	time.Sleep(500 * time.Millisecond)
	if err := rs.restart(); err != nil {
		t.Fatal(err)
	}
	d := <-back
	if d.err != nil {
		t.Fatal(d.err)
	}
	t.Cleanup(d.c.Close)
	if !d.c.Recovered || d.c.ID != during.ID {
		t.Fatalf("dropped during the outage: recovered %v id %s, want %s", d.c.Recovered, d.c.ID, during.ID)
	}
	expect(t, d.c, "m", "3")
	expect(t, d.c, "m", "4")
	waitServerCount(t, 2, a, b)
	publish(t, pub, "room", "m", 5)

	// Back after the outage, after a stream entry that came after the local ones.
	l := dialAuth(t, a.url, map[string]string{"pid": late.PID, "offset": late.LastOffset()})
	if !l.Recovered || l.ID != late.ID {
		t.Fatalf("dropped during the outage, back after it: recovered %v", l.Recovered)
	}
	e := dialAuth(t, a.url, map[string]string{"pid": early.PID, "offset": earlyOffset})
	if !e.Recovered || e.ID != early.ID {
		t.Fatalf("dropped before the outage, back after it: recovered %v", e.Recovered)
	}
	for _, c := range []*siotest.Client{l, e} {
		if c == e {
			expect(t, c, "m", "2")
		}
		expect(t, c, "m", "3")
		expect(t, c, "m", "4")
		expect(t, c, "m", "5")
	}
	expect(t, stay, "m", "5")
	expect(t, d.c, "m", "5")
	expect(t, other, "m", "5") // not 2, 3, 4: they stayed on node A
	quiet(t, a, stay, d.c, l, e, other)
}

// A client that recovers on another node than the one its outage broadcasts came from gets what
// the stream holds after the local offset's stream part, and nothing twice.
func TestStreamsRecoveryFromLocalOffsetOnAnotherNode(t *testing.T) {
	t.Parallel()
	rs := startRedisPersistent(t)
	nodes, _ := streamsNodes(t, rs, 2, nil)
	a, b := nodes[0], nodes[1]
	c := dial(t, a.url)
	join(t, c, "room")
	pub := dial(t, a.url)
	publish(t, pub, "room", "m", 1)
	expect(t, c, "m", "1")
	rs.stop()
	waitFor(t, "node A reports redis down", func() bool { return readyzState(t, a) == "down" })
	publishOutage(t, pub, 2)
	expect(t, c, "m", "2")
	dropOn(t, a, c)
	if err := rs.restart(); err != nil {
		t.Fatal(err)
	}
	waitServerCount(t, 2, a, b)
	publish(t, pub, "room", "m", 3)
	r := dialAuth(t, b.url, map[string]string{"pid": c.PID, "offset": c.LastOffset()})
	if !r.Recovered || r.ID != c.ID {
		t.Fatalf("recovered %v id %s, want %s", r.Recovered, r.ID, c.ID)
	}
	expect(t, r, "m", "3")
	quiet(t, b, r)
}

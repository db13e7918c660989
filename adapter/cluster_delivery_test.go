package adapter_test

// Delivery guarantees across nodes: effectively-once publish with ids in Redis, and acknowledged
// emits from the HTTP API.

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/siotest"
)

// ackOf emits event with arg and returns the ack's first argument as JSON.
func ackOf(t *testing.T, c *siotest.Client, event string, arg any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := c.EmitWithAck(ctx, event, arg)
	if err != nil {
		t.Fatalf("%s: %v", event, err)
	}
	return string(ev.Args[0])
}

// TestClusterPublishDedup: an id published on node A is a duplicate on node B (a client's retry
// after reconnecting elsewhere), and the room's members on both nodes get the message once.
func TestClusterPublishDedup(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, sharedRedis(t).url(), 2)
	a, b := nodes[0], nodes[1]
	senderA, senderB, ra, rb := dial(t, a.url), dial(t, b.url), dial(t, a.url), dial(t, b.url)
	join(t, ra, "room")
	join(t, rb, "room")
	msg := func(n int, id string) map[string]any {
		return map[string]any{"room": "room", "event": "m", "data": n, "id": id}
	}
	for _, s := range []struct {
		from *siotest.Client
		req  map[string]any
		want string
	}{
		{senderA, msg(1, "x"), `{"ok":true}`},
		{senderB, msg(1, "x"), `{"ok":true,"duplicate":true}`},
		{senderA, msg(1, "x"), `{"ok":true,"duplicate":true}`},
		{senderB, msg(2, "y"), `{"ok":true}`},
		{senderA, msg(2, "y"), `{"ok":true,"duplicate":true}`},
	} {
		if got := ackOf(t, s.from, "publish", s.req); got != s.want {
			t.Fatalf("publish %v from %s: %s, want %s", s.req, s.from.ID, got, s.want)
		}
	}
	for _, c := range []*siotest.Client{ra, rb} {
		expect(t, c, "m", "1")
		expect(t, c, "m", "2")
	}
	quiet(t, a, ra, rb)
}

// TestClusterPublishDedupRedisDown: while Redis is unreachable, a publish with an id cannot be
// checked: it is refused with unavailable and nothing is delivered; a publish without an id is
// still delivered locally. When Redis is back, the refused id publishes normally.
func TestClusterPublishDedupRedisDown(t *testing.T) {
	t.Parallel()
	rs := startRedis(t)
	nodes := cluster(t, rs.url(), 2)
	a := nodes[0]
	sender, receiver := dial(t, a.url), dial(t, a.url)
	join(t, receiver, "room")
	rs.stop()
	waitFor(t, "node A reports redis down", func() bool { return readyzState(t, a) == "down" })

	var refused struct {
		OK    bool `json:"ok"`
		Error struct{ Code, Message string }
	}
	got := ackOf(t, sender, "publish", map[string]any{"room": "room", "event": "m", "data": 1, "id": "during"})
	if err := json.Unmarshal([]byte(got), &refused); err != nil || refused.OK || refused.Error.Code != "unavailable" || refused.Error.Message == "" {
		t.Fatalf("publish with an id while Redis is down: %s, want code unavailable", got)
	}
	request(t, sender, "publish", map[string]any{"room": "room", "event": "m", "data": 2})
	expect(t, receiver, "m", "2")

	if err := rs.restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node A reports redis up", func() bool { return readyzState(t, a) == "up" })
	if got := ackOf(t, sender, "publish", map[string]any{"room": "room", "event": "m", "data": 1, "id": "during"}); got != `{"ok":true}` {
		t.Fatalf("the refused publish once Redis is back: %s", got)
	}
	expect(t, receiver, "m", "1")
}

func readyzState(t *testing.T, n *node) string {
	t.Helper()
	_, state, _ := readyz(t, n)
	return state
}

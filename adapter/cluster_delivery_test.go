package adapter_test

// Delivery guarantees across nodes: effectively-once publish with ids in Redis, and acknowledged
// emits from the HTTP API.

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/config"
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
	type attempt struct {
		from *siotest.Client
		req  map[string]any
		want string
	}
	// Each message is awaited before the next is published: messages from two nodes are not
	// ordered with each other (1 from A crosses Redis to rb, 2 from B reaches rb directly).
	for _, step := range []struct {
		attempts []attempt
		data     string
	}{
		{[]attempt{
			{senderA, msg(1, "x"), `{"ok":true}`},
			{senderB, msg(1, "x"), `{"ok":true,"duplicate":true}`},
			{senderA, msg(1, "x"), `{"ok":true,"duplicate":true}`},
		}, "1"},
		{[]attempt{
			{senderB, msg(2, "y"), `{"ok":true}`},
			{senderA, msg(2, "y"), `{"ok":true,"duplicate":true}`},
		}, "2"},
	} {
		for _, s := range step.attempts {
			if got := ackOf(t, s.from, "publish", s.req); got != s.want {
				t.Fatalf("publish %v from %s: %s, want %s", s.req, s.from.ID, got, s.want)
			}
		}
		for _, c := range []*siotest.Client{ra, rb} {
			expect(t, c, "m", step.data)
		}
	}
	quiet(t, a, ra, rb)
}

// TestClusterPublishDedupRedisDown: while Redis is unreachable, a publish with an id cannot be
// checked: it is refused with unavailable and nothing is delivered; a publish without an id is
// still delivered locally, and acked {ok:true, local:true}. When Redis is back, the refused id
// publishes normally.
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
	publishLocal(t, sender, map[string]any{"room": "room", "event": "m", "data": 2})
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

// answerAfter acks the next event c receives with reply after delay (never if reply is nil).
func answerAfter(c *siotest.Client, delay time.Duration, reply any) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ev, err := c.Next(ctx)
		if err != nil || !ev.HasAck || reply == nil {
			return
		}
		time.Sleep(delay) // a client that takes its time to answer
		c.Ack(ev.AckID, reply)
	}()
}

// TestClusterEmitWithAck: POST /api/v1/emit with ack_timeout on one node collects the acks of
// the recipients on every node, for as long as ack_timeout (here longer than the request
// timeout); a recipient that never acks is counted as timed out once ack_timeout has passed; a
// node that never reports makes the answer incomplete.
func TestClusterEmitWithAck(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	prefix := testPrefix(t)
	short := func(c *config.Config) { c.RedisRequestTimeout = 300 * time.Millisecond }
	a, b := newNode(t, "A", rs.url(), prefix, short), newNode(t, "B", rs.url(), prefix, short)
	waitServerCount(t, 2, a, b)
	a1, b1, b2 := dial(t, a.url), dial(t, b.url), dial(t, b.url)
	join(t, a1, "r")
	join(t, b1, "r")
	join(t, b2, "r", "slow")

	answerAfter(a1, 0, "a1")
	answerAfter(b1, 0, "b1")
	answerAfter(b2, time.Second, "b2") // past the 300ms request timeout, within ack_timeout
	code, res := api(t, a, "POST", "/api/v1/emit", `{"rooms":["r"],"event":"q","data":1,"ack_timeout":"10s"}`)
	var acks []string
	for _, v := range res["acks"].([]any) {
		acks = append(acks, v.(string))
	}
	slices.Sort(acks)
	if code != 200 || res["clients"] != 3.0 || !slices.Equal(acks, []string{"a1", "b1", "b2"}) || res["timed_out"] != 0.0 || res["complete"] != true {
		t.Fatalf("all ack: %d %v", code, res)
	}

	answerAfter(a1, 0, "a1")
	answerAfter(b1, 0, "b1")
	answerAfter(b2, 0, nil) // never acks
	start := time.Now()
	code, res = api(t, b, "POST", "/api/v1/emit", `{"rooms":["r"],"event":"q","ack_timeout":"700ms"}`)
	took := time.Since(start)
	if code != 200 || res["clients"] != 3.0 || len(res["acks"].([]any)) != 2 || res["timed_out"] != 1.0 || res["complete"] != true {
		t.Fatalf("one silent: %d %v", code, res)
	}
	if took < 700*time.Millisecond || took > 3*time.Second {
		t.Fatalf("one silent: answered after %s with a 700ms ack_timeout", took)
	}

	// A third subscriber that never answers counts as a node that never reports.
	muteSubscriber(t, rs, prefix+"-request#/#")
	waitServerCount(t, 3, a)
	answerAfter(a1, 0, "a1")
	answerAfter(b1, 0, "b1")
	answerAfter(b2, 0, "b2")
	start = time.Now()
	code, res = api(t, a, "POST", "/api/v1/emit", `{"rooms":["r"],"event":"q","ack_timeout":"500ms"}`)
	if took := time.Since(start); code != 200 || res["clients"] != 3.0 || len(res["acks"].([]any)) != 3 || res["timed_out"] != 0.0 || res["complete"] != false || took < 500*time.Millisecond {
		t.Fatalf("mute node: %d %v after %s", code, res, took)
	}
}

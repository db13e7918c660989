package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// rawAck emits event with arg and returns the ack's first argument as JSON.
func rawAck(t *testing.T, c *siotest.Client, event string, arg any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := c.EmitWithAck(ctx, event, arg)
	if err != nil {
		t.Fatalf("%s: %v", event, err)
	}
	return string(ev.Args[0])
}

// expectEvents checks that c receives exactly these events (name:arg) and then nothing before
// a marker published by from.
func expectEvents(t *testing.T, from, c *siotest.Client, room string, want ...string) {
	t.Helper()
	if got := rawAck(t, from, "publish", map[string]any{"room": room, "event": "marker", "data": 0}); got != `{"ok":true}` {
		t.Fatalf("marker publish: %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("client %s got %v, then: %v", c.ID, got, err)
		}
		if ev.Name == "marker" {
			break
		}
		got = append(got, ev.Name+":"+string(ev.Args[0]))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("client %s got %v, want %v", c.ID, got, want)
	}
}

func pub(room, event string, data any, id any) map[string]any {
	m := map[string]any{"room": room, "event": event, "data": data}
	if id != nil {
		m["id"] = id
	}
	return m
}

// TestPublishID: a publish with an id seen before in the same namespace and room is acked as a
// duplicate and not broadcast, whoever sends it; other rooms and publishes without an id are not
// concerned; ids that are not strings of 1-64 bytes are refused with invalid_id.
func TestPublishID(t *testing.T) {
	t.Parallel()
	url := serve(t, nil)
	sender, other, r1, r2 := dial(t, url, "/"), dial(t, url, "/"), dial(t, url, "/"), dial(t, url, "/")
	for _, c := range []*siotest.Client{sender, other, r1} {
		request(t, c, "join", "r1")
	}
	request(t, r2, "join", "r2")

	steps := []struct {
		name string
		from *siotest.Client
		req  map[string]any
		want string
	}{
		{"first", sender, pub("r1", "m", 1, "a"), `{"ok":true}`},
		{"retry", sender, pub("r1", "m", 1, "a"), `{"ok":true,"duplicate":true}`},
		{"retry from another socket", other, pub("r1", "m", 1, "a"), `{"ok":true,"duplicate":true}`},
		{"retry with other data is still the same message", sender, pub("r1", "m", 99, "a"), `{"ok":true,"duplicate":true}`},
		{"same id, another room", sender, pub("r2", "m", 2, "a"), `{"ok":true}`},
		{"another id", sender, pub("r1", "m", 3, "b"), `{"ok":true}`},
		{"64 bytes", sender, pub("r1", "m", 4, strings.Repeat("x", 64)), `{"ok":true}`},
		{"no id", sender, pub("r1", "m", 5, nil), `{"ok":true}`},
		{"no id again", sender, pub("r1", "m", 5, nil), `{"ok":true}`},
		{"null id", sender, map[string]any{"room": "r1", "event": "m", "data": 6, "id": nil}, `{"ok":true}`},
	}
	for _, s := range steps {
		if got := rawAck(t, s.from, "publish", s.req); got != s.want {
			t.Fatalf("%s: ack %s, want %s", s.name, got, s.want)
		}
	}
	for _, bad := range []any{"", strings.Repeat("x", 65), 42, true, map[string]any{}, []string{"a"}} {
		a := request(t, sender, "publish", pub("r1", "m", 7, bad))
		if a.OK || code(a) != "invalid_id" || a.Error.Message == "" {
			t.Errorf("id %#v: ack %+v, want invalid_id", bad, a)
		}
	}
	expectEvents(t, sender, r1, "r1", "m:1", "m:3", "m:4", "m:5", "m:5", "m:6")
	expectEvents(t, sender, other, "r1", "m:1", "m:3", "m:4", "m:5", "m:5", "m:6")
	request(t, sender, "join", "r2")
	expectEvents(t, sender, r2, "r2", "m:2")
}

// TestPublishIDWindow: once the window has passed, an id is new again.
func TestPublishIDWindow(t *testing.T) {
	t.Parallel()
	const window = 300 * time.Millisecond
	url := serve(t, func(c *config.Config) { c.DedupWindow = window })
	sender, receiver := dial(t, url, "/"), dial(t, url, "/")
	request(t, receiver, "join", "r")
	start := time.Now()
	if got := rawAck(t, sender, "publish", pub("r", "m", 1, "x")); got != `{"ok":true}` {
		t.Fatal(got)
	}
	// Retry until the id is forgotten (a duplicate delivers nothing, so retrying is harmless).
	for rawAck(t, sender, "publish", pub("r", "m", 2, "x")) != `{"ok":true}` {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the id is still remembered 5s into a 300ms window")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if took := time.Since(start); took < window {
		t.Fatalf("the id was forgotten after %s, before the %s window", took, window)
	}
	expectEvents(t, sender, receiver, "r", "m:1", "m:2")
}

// TestPublishIDConcurrentRetries: many sockets publish the same id at once (a retry arriving
// while the first attempt is still being handled): exactly one is broadcast.
func TestPublishIDConcurrentRetries(t *testing.T) {
	t.Parallel()
	url := serve(t, nil)
	receiver := dial(t, url, "/")
	request(t, receiver, "join", "r")
	senders := make([]*siotest.Client, 8)
	for i := range senders {
		senders[i] = dial(t, url, "/")
	}
	for round := range 20 {
		id := "m-" + jsonInt(round)
		acks := make([]string, len(senders))
		var wg sync.WaitGroup
		for i, s := range senders {
			wg.Go(func() { acks[i] = rawAck(t, s, "publish", pub("r", "m", round, id)) })
		}
		wg.Wait()
		firsts := 0
		for _, a := range acks {
			switch a {
			case `{"ok":true}`:
				firsts++
			case `{"ok":true,"duplicate":true}`:
			default:
				t.Fatalf("round %d: ack %s", round, a)
			}
		}
		if firsts != 1 {
			t.Fatalf("round %d: %d publishes of one id were broadcast: %v", round, firsts, acks)
		}
	}
	want := make([]string, 20)
	for i := range want {
		want[i] = "m:" + jsonInt(i)
	}
	expectEvents(t, senders[0], receiver, "r", want...)
}

// apiCall posts body to /api/v1/emit and returns the status and the decoded JSON answer.
func apiCall(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/emit", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer secret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("POST %s: %v", body, err)
	}
	return res.StatusCode, out
}

// answer acks the next event c receives with reply (nothing if reply is nil), in the background.
func answer(t *testing.T, c *siotest.Client, reply any) {
	t.Helper()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ev, err := c.Next(ctx)
		if err == nil && ev.HasAck && reply != nil {
			c.Ack(ev.AckID, reply)
		}
	}()
}

// TestEmitWithAck: POST /api/v1/emit with ack_timeout waits for the recipients' acks and answers
// 200 {clients, acks, timed_out, complete}: at once when everyone has acked, after the timeout
// when someone has not; invalid timeouts are refused with 400 invalid_ack_timeout.
func TestEmitWithAck(t *testing.T) {
	t.Parallel()
	url := serve(t, nil)
	a, b, silent, outside := dial(t, url, "/"), dial(t, url, "/"), dial(t, url, "/"), dial(t, url, "/")
	for _, c := range []*siotest.Client{a, b, silent} {
		request(t, c, "join", "r")
	}
	request(t, silent, "join", "silent")

	t.Run("everyone acks", func(t *testing.T) {
		answer(t, a, map[string]any{"from": "a"})
		answer(t, b, "b")
		start := time.Now()
		status, res := apiCall(t, url, `{"rooms":["r"],"except":["silent"],"event":"q","data":{"n":1},"ack_timeout":"30s"}`)
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("took %s although every recipient acked", took)
		}
		acks, _ := json.Marshal(res["acks"])
		if status != 200 || res["clients"] != 2.0 || res["timed_out"] != 0.0 || res["complete"] != true ||
			(string(acks) != `[{"from":"a"},"b"]` && string(acks) != `["b",{"from":"a"}]`) {
			t.Fatalf("%d %v", status, res)
		}
	})

	t.Run("one never acks", func(t *testing.T) {
		answer(t, a, 1)
		answer(t, b, 2)
		answer(t, silent, nil)
		const timeout = 400 * time.Millisecond
		start := time.Now()
		status, res := apiCall(t, url, `{"rooms":["r"],"event":"q","ack_timeout":"400ms"}`)
		took := time.Since(start)
		if status != 200 || res["clients"] != 3.0 || len(res["acks"].([]any)) != 2 || res["timed_out"] != 1.0 || res["complete"] != true {
			t.Fatalf("%d %v", status, res)
		}
		if took < timeout || took > timeout+2*time.Second {
			t.Fatalf("answered after %s with a %s ack_timeout", took, timeout)
		}
	})

	// Acks are taken as they arrive: those of sockets sent the event after silent ones count too.
	t.Run("acks behind silent sockets", func(t *testing.T) {
		var silents []*siotest.Client
		for range 4 {
			c := dial(t, url, "/")
			request(t, c, "join", "mixed")
			silents = append(silents, c)
		}
		request(t, a, "join", "mixed")
		request(t, b, "join", "mixed")
		answer(t, a, "a")
		answer(t, b, "b")
		for _, c := range silents {
			answer(t, c, nil)
		}
		before := scrape(t, url)
		status, res := apiCall(t, url, `{"rooms":["mixed"],"event":"q","ack_timeout":"300ms"}`)
		if status != 200 || res["clients"] != 6.0 || len(res["acks"].([]any)) != 2 || res["timed_out"] != 4.0 {
			t.Fatalf("%d %v", status, res)
		}
		// The metrics count the event sent to each of the six, and time the two acks that came.
		const ns = `{namespace="/"}`
		waitMetric(t, url, "chorus_events_sent_total"+ns, before["chorus_events_sent_total"+ns]+6)
		waitMetric(t, url, "chorus_ack_round_trip_seconds_count"+ns, before["chorus_ack_round_trip_seconds_count"+ns]+2)
	})

	t.Run("nobody selected", func(t *testing.T) {
		status, res := apiCall(t, url, `{"rooms":["nobody"],"event":"q","ack_timeout":"1m"}`)
		if status != 200 || res["clients"] != 0.0 || len(res["acks"].([]any)) != 0 || res["timed_out"] != 0.0 {
			t.Fatalf("%d %v", status, res)
		}
	})

	t.Run("without ack_timeout", func(t *testing.T) {
		status, res := apiCall(t, url, `{"rooms":["silent"],"event":"plain","ack_timeout":null}`)
		if status != 202 || res["ok"] != true {
			t.Fatalf("%d %v", status, res)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if ev, err := silent.Next(ctx); err != nil || ev.Name != "plain" || ev.HasAck {
			t.Fatalf("silent got %+v, %v; want plain without an ack id", ev, err)
		}
	})

	for _, bad := range []string{`"abc"`, `"0s"`, `"-1s"`, `"61s"`, `"1h"`, `5`, `true`, `{}`, `""`} {
		status, res := apiCall(t, url, `{"rooms":["r"],"event":"q","ack_timeout":`+bad+`}`)
		e, _ := res["error"].(map[string]any)
		if status != 400 || e == nil || e["code"] != "invalid_ack_timeout" || e["message"] == "" {
			t.Errorf("ack_timeout %s: %d %v, want 400 invalid_ack_timeout", bad, status, res)
		}
	}
	// None of the refused requests reached a client.
	expectEvents(t, outside, a, "r")
}

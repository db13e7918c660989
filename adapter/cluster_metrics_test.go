package adapter_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/adapter"
)

// scrapeMetrics reads a node's /metrics: series (name{labels} as exposed) → value.
func scrapeMetrics(t *testing.T, n *node) map[string]float64 {
	t.Helper()
	res, err := http.Get(n.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// waitMetric waits until a node's series satisfies ok.
func waitMetric(t *testing.T, n *node, series string, ok func(float64) bool) {
	t.Helper()
	waitFor(t, fmt.Sprintf("node %s: %s as wanted", n.name, series), func() bool {
		v, present := scrapeMetrics(t, n)[series]
		return present && ok(v)
	})
}

func atLeast(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }
func equal(want float64) func(float64) bool  { return func(v float64) bool { return v == want } }

// publishRaw publishes payload on channel with a connection of its own (RESP by hand).
func publishRaw(t *testing.T, rs *redisServer, channel, payload string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", rs.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(channel), channel, len(payload), payload)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
}

// The Redis adapter's metrics: the link is up and counts both nodes; broadcasts count as published
// on the sender and received on the other node; a message that does not decode and a request some
// node leaves unanswered are counted; and the link going down shows.
func TestClusterMetrics(t *testing.T) {
	t.Parallel()
	rs := startRedis(t) // its own: the test stops it
	nodes := cluster(t, rs.url(), 2)
	a, b := nodes[0], nodes[1]
	waitMetric(t, a, "chorus_redis_up", equal(1))
	waitMetric(t, a, "chorus_cluster_nodes", equal(2))

	a1, b1 := dial(t, a.url), dial(t, b.url)
	join(t, b1, "r")
	request(t, a1, "publish", map[string]any{"room": "r", "event": "m", "data": 1})
	expect(t, b1, "m", "1")
	// counted once the pipeline returns, which may be after B got the message
	waitMetric(t, a, "chorus_adapter_published_total", atLeast(1))
	m := scrapeMetrics(t, b)
	if m["chorus_adapter_received_total"] < 1 || m[`chorus_broadcasts_total{namespace="/"}`] != 1 {
		t.Errorf("B received %v messages and delivered %v broadcasts, want ≥ 1 and 1",
			m["chorus_adapter_received_total"], m[`chorus_broadcasts_total{namespace="/"}`])
	}

	rs.stop()
	waitMetric(t, a, "chorus_redis_up", equal(0))
	if _, ok := scrapeMetrics(t, a)["chorus_cluster_nodes"]; ok {
		t.Error("chorus_cluster_nodes is still reported while Redis is down")
	}
}

// A request a mute node never answers counts as a timeout, and a message that does not decode as a
// decode error.
func TestClusterMetricsErrors(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	prefix := testPrefix(t)
	a := newNode(t, "A", rs.url(), prefix, nil)
	muteSubscriber(t, rs, prefix+"-request#/#")
	waitServerCount(t, 2, a)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := a.root().FetchSockets(ctx, adapter.BroadcastOptions{}); !errors.Is(err, adapter.ErrTimeout) {
		t.Fatalf("FetchSockets: %v, want ErrTimeout", err)
	}
	waitMetric(t, a, "chorus_adapter_request_timeouts_total", equal(1))

	publishRaw(t, rs, prefix+"#/#", "not msgpack")
	waitMetric(t, a, "chorus_adapter_decode_errors_total", equal(1))
}

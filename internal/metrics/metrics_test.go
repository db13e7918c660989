package metrics_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chorus-rt/chorus/internal/metrics"
)

func newMetrics(t testing.TB, namespaces ...string) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{Namespaces: namespaces})
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// A namespace a client created from a pattern is labelled with the pattern, never with the name
// the client chose; configured and built-in names keep theirs.
func TestNamespaceLabels(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t, "/chat", "/tenant-*")
	for _, name := range []string{"/", "/chat", "/tenant-acme", "/tenant-evil\"} 1", "/admin"} {
		m.Namespace(name).Connected("websocket")
	}
	want := `
# HELP chorus_sockets Connected sockets, by namespace and transport.
# TYPE chorus_sockets gauge
chorus_sockets{namespace="/",transport="polling"} 0
chorus_sockets{namespace="/",transport="websocket"} 1
chorus_sockets{namespace="/admin",transport="polling"} 0
chorus_sockets{namespace="/admin",transport="websocket"} 1
chorus_sockets{namespace="/chat",transport="polling"} 0
chorus_sockets{namespace="/chat",transport="websocket"} 1
chorus_sockets{namespace="/tenant-*",transport="polling"} 0
chorus_sockets{namespace="/tenant-*",transport="websocket"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "chorus_sockets"); err != nil {
		t.Fatal(err)
	}
}

// Whatever strings reach a label, it never holds more than 64 values: the rest count as "other".
func TestLabelsAreBounded(t *testing.T) {
	t.Parallel()
	m, reg := newMetrics(t)
	for i := range 200 {
		m.SessionClosed("websocket", fmt.Sprintf("reason %d", i))
		m.HandshakeRefused(fmt.Sprintf("code %d", i))
	}
	if n := testutil.CollectAndCount(reg, "chorus_sessions_closed_total"); n != 65 {
		t.Errorf("chorus_sessions_closed_total has %d series, want 64 + other", n)
	}
	if n := testutil.CollectAndCount(reg, "chorus_handshakes_refused_total"); n != 65 {
		t.Errorf("chorus_handshakes_refused_total has %d series, want 64 + other", n)
	}
}

// The calls made on the hot path allocate nothing.
func TestHotPathAllocatesNothing(t *testing.T) {
	m, _ := newMetrics(t, "/tenant-*")
	n := m.Namespace("/tenant-a")
	allocs := testing.AllocsPerRun(1000, func() {
		m.Received(120)
		n.EventReceived()
		n.Broadcast(500)
		m.Sent(500, 60000)
		n.EventsSent(1)
		n.AckRoundTrip(3 * time.Millisecond)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message, want 0", allocs)
	}
}

// Sessions and sockets move between transports on upgrade, and Totals reads them back.
func TestSessionsAndTotals(t *testing.T) {
	t.Parallel()
	m, _ := newMetrics(t)
	n := m.Namespace("/")
	m.SessionOpened("polling")
	n.Connected("polling")
	m.SessionOpened("websocket")
	m.SessionUpgraded("polling", "websocket")
	n.Upgraded("polling", "websocket")
	m.SessionOpened("polling")
	m.SessionClosed("polling", "ping timeout")
	m.Received(10)
	m.Sent(3, 30)
	got := m.Totals()
	if got.Sessions != 2 || got.PollingSessions != 0 || got.Opened != 3 || got.Closed["ping timeout"] != 1 ||
		got.MessagesIn != 1 || got.BytesIn != 10 || got.MessagesOut != 3 || got.BytesOut != 30 {
		t.Fatalf("Totals = %+v", got)
	}
}

func TestNewRefusesATakenRegistry(t *testing.T) {
	t.Parallel()
	_, reg := newMetrics(t)
	if _, err := metrics.New(reg, metrics.Options{}); err == nil {
		t.Fatal("a second New on the same registry succeeded")
	}
}

// What a broadcast and a received message cost in metrics, from many goroutines at once.
func BenchmarkBroadcast(b *testing.B) {
	m, _ := newMetrics(b)
	n := m.Namespace("/")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Broadcast(100)
			m.Sent(100, 12000)
		}
	})
}

func BenchmarkReceived(b *testing.B) {
	m, _ := newMetrics(b)
	n := m.Namespace("/")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Received(120)
			n.EventReceived()
		}
	})
}

// Package metrics is chorus's Prometheus instrumentation: it implements sio.Metrics (sessions,
// sockets, events, bytes, broadcasts, acks, recoveries), counts the HTTP API's requests, and reads
// the Redis adapter's counters at scrape time. Every metric is called chorus_* and registered on the
// registerer it is given, never on the global default one.
//
// No label takes its value from a client: namespaces are labelled with their configured name or
// pattern (a namespace a client created from "/tenant-*" counts as "/tenant-*"), reasons and codes
// are chorus's own constants, routes are the API's fixed list, and each label accepts at most
// maxLabelValues distinct values anyway (beyond, "other"). Rooms and event names are never labels.
//
// The hot path costs an atomic add or two per message received, per emit and per broadcast (not per
// recipient), and allocates nothing: each namespace's counters are resolved once, when the namespace
// is created.
package metrics

import (
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// Namespace is the prefix of every chorus metric.
const Namespace = "chorus"

// maxLabelValues bounds the distinct values of each label; later ones are counted as "other".
const maxLabelValues = 64

// Options configures New.
type Options struct {
	// Namespaces are the configured namespace names and patterns (with '*'); a namespace created
	// from a pattern is labelled with the pattern. Other namespaces ("/", "/admin") keep their name.
	Namespaces []string
}

// Metrics holds chorus's collectors. It implements sio.Metrics; the zero value is not usable (New).
type Metrics struct {
	opts Options
	reg  prometheus.Registerer

	sessions       *prometheus.GaugeVec
	sessionsOpened *prometheus.CounterVec
	sessionsClosed *prometheus.CounterVec
	upgrades       prometheus.Counter
	refused        *prometheus.CounterVec
	msgsIn         prometheus.Counter
	bytesIn        prometheus.Counter
	msgsOut        prometheus.Counter
	bytesOut       prometheus.Counter

	sockets        *prometheus.GaugeVec
	connections    *prometheus.CounterVec
	disconnections *prometheus.CounterVec
	eventsIn       *prometheus.CounterVec
	eventsOut      *prometheus.CounterVec
	broadcasts     *prometheus.CounterVec
	fanout         *prometheus.HistogramVec
	ackRTT         *prometheus.HistogramVec
	recoveries     *prometheus.CounterVec

	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec

	// per-transport children of the session metrics, resolved once (index: transportIndex)
	sessionGauge  [2]prometheus.Gauge
	sessionOpened [2]prometheus.Counter

	labelsMu sync.Mutex
	labels   map[string]map[string]bool // label name → values seen (bounded)
}

// NewRegistry returns a registry with the Go runtime and process collectors and
// chorus_build_info{version, goversion} already registered: what a chorus process exposes besides
// New's metrics.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info", Help: "Always 1; the labels say which chorus this is.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), info)
	return reg
}

// New creates chorus's metrics and registers them on reg. It fails only if reg already holds
// metrics of the same names.
func New(reg prometheus.Registerer, opts Options) (*Metrics, error) {
	m := &Metrics{opts: opts, reg: reg, labels: make(map[string]map[string]bool)}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
	}
	plain := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	}

	m.sessions = gauge("sessions", "Open Engine.IO sessions (client connections), by transport.", "transport")
	m.sessionsOpened = counter("sessions_opened_total", "Engine.IO sessions opened, by the transport they started on.", "transport")
	m.sessionsClosed = counter("sessions_closed_total", "Engine.IO sessions closed, by reason.", "reason")
	m.upgrades = plain("upgrades_total", "Sessions upgraded from HTTP long-polling to WebSocket.")
	m.refused = counter("handshakes_refused_total", "Refused handshakes (new sessions and namespace connections), by reason.", "reason")
	m.msgsIn = plain("received_messages_total", "Engine.IO messages received from clients (heartbeats excluded).")
	m.bytesIn = plain("received_bytes_total", "Bytes of the Engine.IO messages received from clients (payloads, without transport framing).")
	m.msgsOut = plain("sent_messages_total", "Engine.IO messages queued for clients, counted per recipient.")
	m.bytesOut = plain("sent_bytes_total", "Bytes of the Engine.IO messages queued for clients, counted per recipient (payloads, without transport framing).")

	m.sockets = gauge("sockets", "Connected sockets, by namespace and transport.", "namespace", "transport")
	m.connections = counter("connections_total", "Sockets connected to a namespace, by namespace and transport.", "namespace", "transport")
	m.disconnections = counter("disconnections_total", "Sockets disconnected from a namespace, by namespace and reason.", "namespace", "reason")
	m.eventsIn = counter("events_received_total", "Events received from sockets, by namespace.", "namespace")
	m.eventsOut = counter("events_sent_total", "Events sent to sockets, counted per recipient, by namespace.", "namespace")
	m.broadcasts = counter("broadcasts_total", "Broadcasts delivered to this node's sockets (local or from another node), by namespace.", "namespace")
	m.fanout = histogram("broadcast_recipients", "Local recipients per broadcast, by namespace.",
		[]float64{0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000}, "namespace")
	m.ackRTT = histogram("ack_round_trip_seconds", "Time from sending an event that asks for an ack to the socket's ack, by namespace.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "namespace")
	m.recoveries = counter("recoveries_total", "Connection state recoveries asked for by reconnecting sockets, by namespace and result (success, failure).", "namespace", "result")

	m.apiRequests = counter("http_requests_total", "HTTP API requests, by route and status code.", "route", "code")
	m.apiDuration = histogram("http_request_duration_seconds", "HTTP API request duration, by route.", prometheus.DefBuckets, "route")

	for i, t := range transports {
		m.sessionGauge[i] = m.sessions.WithLabelValues(t)
		m.sessionOpened[i] = m.sessionsOpened.WithLabelValues(t)
	}
	for _, c := range []prometheus.Collector{
		m.sessions, m.sessionsOpened, m.sessionsClosed, m.upgrades, m.refused, m.msgsIn, m.bytesIn, m.msgsOut, m.bytesOut,
		m.sockets, m.connections, m.disconnections, m.eventsIn, m.eventsOut, m.broadcasts, m.fanout, m.ackRTT, m.recoveries,
		m.apiRequests, m.apiDuration,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var transports = [2]string{"polling", "websocket"}

// transportIndex maps a transport to its slot; anything but "websocket" is polling.
func transportIndex(t string) int {
	if t == "websocket" {
		return 1
	}
	return 0
}

// bound returns v if the label name has not seen maxLabelValues other values yet, "other" if it has.
func (m *Metrics) bound(name, v string) string {
	m.labelsMu.Lock()
	defer m.labelsMu.Unlock()
	seen := m.labels[name]
	if seen == nil {
		seen = make(map[string]bool)
		m.labels[name] = seen
	}
	if seen[v] {
		return v
	}
	if len(seen) >= maxLabelValues {
		return "other"
	}
	seen[v] = true
	return v
}

// namespaceLabel is the label of namespace name: its configured name or pattern.
func (m *Metrics) namespaceLabel(name string) string {
	if slices.Contains(m.opts.Namespaces, name) {
		return name
	}
	for _, p := range m.opts.Namespaces {
		if rooms.IsPattern(p) && rooms.Match(p, name) {
			return p
		}
	}
	return name
}

// SessionOpened implements sio.Metrics.
func (m *Metrics) SessionOpened(transport string) {
	i := transportIndex(transport)
	m.sessionGauge[i].Inc()
	m.sessionOpened[i].Inc()
}

// SessionUpgraded implements sio.Metrics.
func (m *Metrics) SessionUpgraded(from, to string) {
	m.sessionGauge[transportIndex(from)].Dec()
	m.sessionGauge[transportIndex(to)].Inc()
	m.upgrades.Inc()
}

// SessionClosed implements sio.Metrics.
func (m *Metrics) SessionClosed(transport, reason string) {
	m.sessionGauge[transportIndex(transport)].Dec()
	m.sessionsClosed.WithLabelValues(m.bound("reason", reason)).Inc()
}

// HandshakeRefused implements sio.Metrics.
func (m *Metrics) HandshakeRefused(reason string) {
	m.refused.WithLabelValues(m.bound("refused", reason)).Inc()
}

// Received implements sio.Metrics.
func (m *Metrics) Received(bytes int) {
	m.msgsIn.Inc()
	m.bytesIn.Add(float64(bytes))
}

// Sent implements sio.Metrics.
func (m *Metrics) Sent(messages, bytes int) {
	m.msgsOut.Add(float64(messages))
	m.bytesOut.Add(float64(bytes))
}

// APIRequest counts one HTTP API request; route is one of the API's routes (or "other").
func (m *Metrics) APIRequest(route string, status int, d time.Duration) {
	route = m.bound("route", route)
	m.apiRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.apiDuration.WithLabelValues(route).Observe(d.Seconds())
}

// Namespace implements sio.Metrics.
func (m *Metrics) Namespace(name string) sio.NamespaceMetrics {
	l := m.bound("namespace", m.namespaceLabel(name))
	n := &namespace{m: m, label: l}
	for i, t := range transports {
		n.sockets[i] = m.sockets.WithLabelValues(l, t)
		n.connections[i] = m.connections.WithLabelValues(l, t)
	}
	n.eventsIn = m.eventsIn.WithLabelValues(l)
	n.eventsOut = m.eventsOut.WithLabelValues(l)
	n.broadcasts = m.broadcasts.WithLabelValues(l)
	n.fanout = m.fanout.WithLabelValues(l)
	n.ackRTT = m.ackRTT.WithLabelValues(l)
	n.recovered = m.recoveries.WithLabelValues(l, "success")
	n.notRecovered = m.recoveries.WithLabelValues(l, "failure")
	return n
}

// namespace is one namespace's metrics, its children resolved once.
type namespace struct {
	m     *Metrics
	label string

	sockets      [2]prometheus.Gauge
	connections  [2]prometheus.Counter
	eventsIn     prometheus.Counter
	eventsOut    prometheus.Counter
	broadcasts   prometheus.Counter
	fanout       prometheus.Observer
	ackRTT       prometheus.Observer
	recovered    prometheus.Counter
	notRecovered prometheus.Counter
}

func (n *namespace) Connected(transport string) {
	i := transportIndex(transport)
	n.sockets[i].Inc()
	n.connections[i].Inc()
}

func (n *namespace) Upgraded(from, to string) {
	n.sockets[transportIndex(from)].Dec()
	n.sockets[transportIndex(to)].Inc()
}

func (n *namespace) Disconnected(transport, reason string) {
	n.sockets[transportIndex(transport)].Dec()
	n.m.disconnections.WithLabelValues(n.label, n.m.bound("reason", reason)).Inc()
}

func (n *namespace) EventReceived()   { n.eventsIn.Inc() }
func (n *namespace) EventsSent(k int) { n.eventsOut.Add(float64(k)) }

func (n *namespace) Broadcast(recipients int) {
	n.broadcasts.Inc()
	n.fanout.Observe(float64(recipients))
	if recipients > 0 {
		n.eventsOut.Add(float64(recipients))
	}
}

func (n *namespace) AckRoundTrip(d time.Duration) { n.ackRTT.Observe(d.Seconds()) }

func (n *namespace) Recovered(ok bool) {
	if ok {
		n.recovered.Inc()
	} else {
		n.notRecovered.Inc()
	}
}

// Totals are running totals of this node's Engine.IO traffic, for the Admin UI's charts.
type Totals struct {
	// Sessions and PollingSessions are the sessions open now, and those on long-polling.
	Sessions, PollingSessions int
	// Opened counts sessions opened; Closed, sessions closed by reason.
	Opened float64
	Closed map[string]float64
	// Messages and bytes received and sent (see the chorus_received_* and chorus_sent_* metrics).
	MessagesIn, BytesIn, MessagesOut, BytesOut float64
}

// Totals reads the running totals.
func (m *Metrics) Totals() Totals {
	t := Totals{
		Sessions:        int(value(m.sessionGauge[0]) + value(m.sessionGauge[1])),
		PollingSessions: int(value(m.sessionGauge[0])),
		Opened:          value(m.sessionOpened[0]) + value(m.sessionOpened[1]),
		Closed:          make(map[string]float64),
		MessagesIn:      value(m.msgsIn),
		BytesIn:         value(m.bytesIn),
		MessagesOut:     value(m.msgsOut),
		BytesOut:        value(m.bytesOut),
	}
	ch := make(chan prometheus.Metric, maxLabelValues+1) // one per reason: Collect never waits
	m.sessionsClosed.Collect(ch)
	close(ch)
	for mt := range ch {
		var d dto.Metric
		if mt.Write(&d) == nil && len(d.Label) == 1 {
			t.Closed[d.Label[0].GetValue()] += d.GetCounter().GetValue()
		}
	}
	return t
}

// value reads a counter's or a gauge's value.
func value(c prometheus.Metric) float64 {
	var d dto.Metric
	if c.Write(&d) != nil {
		return 0
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

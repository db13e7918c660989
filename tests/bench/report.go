package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
)

// figKey names one figure of the table.
type figKey string

const (
	figConnRate         figKey = "conn-rate"
	figConnCPU          figKey = "conn-cpu"
	figPollRate         figKey = "poll-rate"
	figRSSFresh         figKey = "rss-fresh"
	figIdleSmall        figKey = "idle-small"
	figIdleLarge        figKey = "idle-large"
	figRSSLeft          figKey = "rss-left"
	figEchoP50          figKey = "echo-p50"
	figEchoP99          figKey = "echo-p99"
	figEchoMax          figKey = "echo-max"
	figEchoCPU          figKey = "echo-cpu"
	figEchoPerCPU       figKey = "echo-per-cpu"
	figFanLowRate       figKey = "fan-low-rate"
	figFanLowP50        figKey = "fan-low-p50"
	figFanLowP99        figKey = "fan-low-p99"
	figFanLowCPU        figKey = "fan-low-cpu"
	figFanLowLost       figKey = "fan-low-lost"
	figFanHighRate      figKey = "fan-high-rate"
	figFanHighP50       figKey = "fan-high-p50"
	figFanHighP99       figKey = "fan-high-p99"
	figFanHighCPU       figKey = "fan-high-cpu"
	figFanHighLost      figKey = "fan-high-lost"
	figRSSFan           figKey = "rss-fan"
	figLostAcks         figKey = "lost-acks"
	figOutOfOrder       figKey = "out-of-order"
	figDuoLowRate       figKey = "duo-low-rate"
	figDuoLowP50        figKey = "duo-low-p50"
	figDuoLowP99        figKey = "duo-low-p99"
	figDuoLowCPU        figKey = "duo-low-cpu"
	figDuoLowLost       figKey = "duo-low-lost"
	figDuoHighRate      figKey = "duo-high-rate"
	figDuoHighP50       figKey = "duo-high-p50"
	figDuoHighP99       figKey = "duo-high-p99"
	figDuoHighCPU       figKey = "duo-high-cpu"
	figDuoHighLost      figKey = "duo-high-lost"
	figDuoRSS           figKey = "duo-rss"
	figConnBusy         figKey = "conn-busy"
	figConnOthers       figKey = "conn-others"
	figConnGenBusy      figKey = "conn-gen-busy"
	figConnGenOthers    figKey = "conn-gen-others"
	figEchoBusy         figKey = "echo-busy"
	figEchoOthers       figKey = "echo-others"
	figEchoGenBusy      figKey = "echo-gen-busy"
	figEchoGenOthers    figKey = "echo-gen-others"
	figFanHighBusy      figKey = "fan-high-busy"
	figFanHighOthers    figKey = "fan-high-others"
	figFanHighGenBusy   figKey = "fan-high-gen-busy"
	figFanHighGenOthers figKey = "fan-high-gen-others"
	figDuoHighBusy      figKey = "duo-high-busy"
	figDuoHighOthers    figKey = "duo-high-others"
	figDuoHighGenBusy   figKey = "duo-high-gen-busy"
	figDuoHighGenOthers figKey = "duo-high-gen-others"
)

// figure is a row of the table.
type figure struct {
	key    figKey
	label  string
	format string // for one value
}

// largeIdle is the connection count of the second idle figure, also when a quick run skips it.
func largeIdle(p plan) int {
	if p.IdleN == 0 {
		return 10000
	}
	return p.IdleN
}

func figures(p plan) []figure {
	return []figure{
		{key: figConnRate, label: fmt.Sprintf("connections/s, opening %s over WebSocket (%d in flight)", thousands(p.ConnN), p.DialConcurrency), format: "%.0f"},
		{key: figConnCPU, label: "server CPU per connection (µs)", format: "%.0f"},
		{key: figPollRate, label: fmt.Sprintf("polling sessions/s: open, connect, close (%s)", thousands(p.PollN)), format: "%.0f"},
		{key: figRSSFresh, label: "RSS of the fresh server (MB)", format: "%.1f"},
		{key: figIdleSmall, label: fmt.Sprintf("idle RSS per connection at %s (kB)", thousands(p.ConnN)), format: "%.1f"},
		{key: figIdleLarge, label: fmt.Sprintf("idle RSS per connection at %s (kB)", thousands(largeIdle(p))), format: "%.1f"},
		{key: figRSSLeft, label: fmt.Sprintf("RSS %s after the last of them left (MB)", p.Settle), format: "%.1f"},
		{key: figEchoP50, label: fmt.Sprintf("echo-with-ack p50 at %s req/s, %s conns (ms)", thousands(p.EchoRate), thousands(p.EchoConns)), format: "%.2f"},
		{key: figEchoP99, label: fmt.Sprintf("echo-with-ack p99 at %s req/s (ms)", thousands(p.EchoRate)), format: "%.2f"},
		{key: figEchoMax, label: fmt.Sprintf("max ack throughput, closed loop, %d outstanding per conn (req/s)", p.EchoWindow), format: "%.0f"},
		{key: figEchoPerCPU, label: "… per second of server CPU: the ack rate of a whole core (req/s)", format: "%.0f"},
		{key: figEchoCPU, label: "server CPU per request at max (µs)", format: "%.1f"},
		{key: figFanLowRate, label: fmt.Sprintf("fan-out low: delivered msg/s (%d publishes/s × %s members)", p.FanLow, thousands(p.FanMembers)), format: "%.0f"},
		{key: figFanLowP50, label: "fan-out low: p50 latency (ms)", format: "%.2f"},
		{key: figFanLowP99, label: "fan-out low: p99 latency (ms)", format: "%.2f"},
		{key: figFanLowCPU, label: "fan-out low: server CPU per delivered message (µs)", format: "%.2f"},
		{key: figFanLowLost, label: "fan-out low: lost", format: "%.0f"},
		{key: figFanHighRate, label: fmt.Sprintf("fan-out high: delivered msg/s (%d publishes/s × %s members)", p.FanHigh, thousands(p.FanMembers)), format: "%.0f"},
		{key: figFanHighP50, label: "fan-out high: p50 latency (ms)", format: "%.2f"},
		{key: figFanHighP99, label: "fan-out high: p99 latency (ms)", format: "%.2f"},
		{key: figFanHighCPU, label: "fan-out high: server CPU per delivered message (µs)", format: "%.2f"},
		{key: figFanHighLost, label: "fan-out high: lost", format: "%.0f"},
		{key: figRSSFan, label: "RSS after the fan-out phases (MB)", format: "%.1f"},
		{key: figDuoLowRate, label: fmt.Sprintf("two nodes through Redis, low: delivered msg/s (%d publishes/s × %s members, half on each node)", p.FanLow, thousands(p.FanMembers)), format: "%.0f"},
		{key: figDuoLowP50, label: "two nodes, low: p50 latency (ms)", format: "%.2f"},
		{key: figDuoLowP99, label: "two nodes, low: p99 latency (ms)", format: "%.2f"},
		{key: figDuoLowCPU, label: "two nodes, low: CPU of both nodes per delivered message (µs)", format: "%.2f"},
		{key: figDuoLowLost, label: "two nodes, low: lost", format: "%.0f"},
		{key: figDuoHighRate, label: fmt.Sprintf("two nodes through Redis, high: delivered msg/s (%d publishes/s × %s members)", p.FanHigh, thousands(p.FanMembers)), format: "%.0f"},
		{key: figDuoHighP50, label: "two nodes, high: p50 latency (ms)", format: "%.2f"},
		{key: figDuoHighP99, label: "two nodes, high: p99 latency (ms)", format: "%.2f"},
		{key: figDuoHighCPU, label: "two nodes, high: CPU of both nodes per delivered message (µs)", format: "%.2f"},
		{key: figDuoHighLost, label: "two nodes, high: lost", format: "%.0f"},
		{key: figDuoRSS, label: "RSS of both nodes after the two-node phases (MB)", format: "%.1f"},
		{key: figLostAcks, label: "acks lost or refused, all phases", format: "%.0f"},
		{key: figOutOfOrder, label: "deliveries out of order, all phases", format: "%.0f"},
	}
}

// loadFigures say who had the cores during the throughput figures. A throughput figure measures
// the server only if its core was near 100 % busy with it; other processes on a shared machine
// take from it, and a generator near 100 % may be the limit instead.
func loadFigures() []figure {
	var figs []figure
	for _, l := range []struct {
		when string
		load
	}{
		{"opening connections", connLoad},
		{"max ack throughput", echoLoad},
		{"fan-out high", fanLoad},
		{"two nodes, high (both nodes on the server core)", duoLoad},
	} {
		figs = append(figs,
			figure{key: l.server, label: l.when + ": server core, % used by the server", format: "%.0f"},
			figure{key: l.others, label: l.when + ": server core, % used by anything else", format: "%.0f"},
			figure{key: l.gen, label: l.when + ": generator core, % used by the generator", format: "%.0f"},
			figure{key: l.genOthers, label: l.when + ": generator core, % used by anything else", format: "%.0f"},
		)
	}
	return figs
}

var targetNames = []string{"bare", "node", "chorus"}

// results holds every figure of every round, and notes on anything unexpected.
type results struct {
	mu    sync.Mutex
	round int // 1-based; the round values are recorded for
	vals  map[figKey]map[string][]float64
	notes map[string][]string
}

func newResults() *results {
	return &results{vals: make(map[figKey]map[string][]float64), notes: make(map[string][]string)}
}

// startRound makes the values recorded from now on those of round n (1-based).
func (r *results) startRound(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.round = n
}

// slot returns where the current round's value of fig for target is kept; NaN until recorded.
func (r *results) slot(fig figKey, target string) *float64 {
	if r.vals[fig] == nil {
		r.vals[fig] = make(map[string][]float64)
	}
	v := r.vals[fig][target]
	for len(v) < r.round {
		v = append(v, math.NaN())
	}
	r.vals[fig][target] = v
	return &v[r.round-1]
}

// add records the value of fig for target in the current round.
func (r *results) add(fig figKey, target string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.slot(fig, target) = v
}

// addTo adds v to the value of fig for target in the current round.
func (r *results) addTo(fig figKey, target string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.slot(fig, target)
	if math.IsNaN(*p) {
		*p = 0
	}
	*p += v
}

func (r *results) note(target, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes[target] = append(r.notes[target], text)
}

// values returns the recorded values of fig for target, sorted.
func (r *results) values(fig figKey, target string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []float64
	for _, v := range r.vals[fig][target] {
		if !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func (r *results) median(fig figKey, target string) (float64, bool) {
	v := r.values(fig, target)
	if len(v) == 0 {
		return 0, false
	}
	return median(v), true
}

func (r *results) cell(f figure, target string) string {
	v := r.values(f.key, target)
	switch len(v) {
	case 0:
		return "n/a"
	case 1:
		return fmt.Sprintf(f.format, v[0])
	}
	return fmt.Sprintf(f.format+" ("+f.format+"–"+f.format+")", median(v), v[0], v[len(v)-1])
}

func (r *results) ratio(fig figKey) (float64, bool) {
	c, ok1 := r.median(fig, "chorus")
	n, ok2 := r.median(fig, "node")
	if !ok1 || !ok2 || n == 0 {
		return 0, false
	}
	return c / n, true
}

func (r *results) writeTable(w io.Writer, figs []figure) {
	fmt.Fprintln(w, "| figure | bare | Node socket.io | chorus | chorus ÷ Node |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, f := range figs {
		ratio := "–"
		if x, ok := r.ratio(f.key); ok {
			ratio = fmt.Sprintf("%.2f×", x)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", f.label, r.cell(f, "bare"), r.cell(f, "node"), r.cell(f, "chorus"), ratio)
	}
}

// goal is one target of issue 3.
type goal struct {
	name string
	// check returns what was measured, as text, and whether the target is met; ok is false when
	// the figures are missing.
	check func(r *results) (measured string, met, ok bool)
}

func ratioGoal(fig figKey, le bool, bound float64) func(r *results) (string, bool, bool) {
	return func(r *results) (string, bool, bool) {
		x, ok := r.ratio(fig)
		if !ok {
			return "", false, false
		}
		if le {
			return fmt.Sprintf("%.2f×", x), x <= bound, true
		}
		return fmt.Sprintf("%.2f×", x), x >= bound, true
	}
}

func goals(p plan) []goal {
	return []goal{
		{"broadcast CPU per delivered message, low rate ≤ 0.5× Node", ratioGoal(figFanLowCPU, true, 0.5)},
		{"broadcast CPU per delivered message, high rate ≤ 0.5× Node", ratioGoal(figFanHighCPU, true, 0.5)},
		{"broadcast CPU per delivered message, two nodes through Redis, low rate ≤ 0.5× Node", ratioGoal(figDuoLowCPU, true, 0.5)},
		{"broadcast CPU per delivered message, two nodes through Redis, high rate ≤ 0.5× Node", ratioGoal(figDuoHighCPU, true, 0.5)},
		{"max ack throughput ≥ 2× Node", ratioGoal(figEchoMax, false, 2)},
		{"max ack throughput ≥ 2× Node, per second of server CPU (steadier on a shared machine)", ratioGoal(figEchoPerCPU, false, 2)},
		{fmt.Sprintf("idle memory per connection at %s ≤ 0.6× Node", thousands(largeIdle(p))), ratioGoal(figIdleLarge, true, 0.6)},
		{fmt.Sprintf("idle memory per connection at %s ≤ 12 kB", thousands(largeIdle(p))), func(r *results) (string, bool, bool) {
			v, ok := r.median(figIdleLarge, "chorus")
			return fmt.Sprintf("%.1f kB", v), v <= 12, ok
		}},
		{"connection rate ≥ 3× Node", ratioGoal(figConnRate, false, 3)},
		{fmt.Sprintf("echo p99 at %s req/s ≤ 0.5× Node", thousands(p.EchoRate)), ratioGoal(figEchoP99, true, 0.5)},
		{"zero lost messages in every phase (chorus, every round)", func(r *results) (string, bool, bool) {
			total, seen := 0.0, false
			for _, fig := range []figKey{figFanLowLost, figFanHighLost, figDuoLowLost, figDuoHighLost, figLostAcks} {
				for _, v := range r.values(fig, "chorus") {
					total += v
					seen = true
				}
			}
			return fmt.Sprintf("%.0f lost", total), total == 0, seen
		}},
	}
}

func (r *results) writeGoals(w io.Writer, p plan) {
	fmt.Fprintln(w, "| target (issue 3) | chorus | met? |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, g := range goals(p) {
		measured, met, ok := g.check(r)
		verdict := "missed"
		switch {
		case !ok:
			measured, verdict = "n/a", "not measured"
		case met:
			verdict = "met"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", g.name, measured, verdict)
	}
}

func (r *results) writeNotes(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	header := false
	for _, t := range targetNames {
		for _, n := range r.notes[t] {
			if !header {
				fmt.Fprintln(w, "\nObservations:")
				header = true
			}
			fmt.Fprintf(w, "- %s: %s\n", t, n)
		}
	}
}

// thousands writes n with a thin space between groups of three digits: 10 000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	return b.String()
}

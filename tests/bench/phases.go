package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chorus-rt/chorus/tests/bench/loadgen"
)

// connectPhase: the rate of opening ConnN WebSocket connections and the server CPU per connection,
// then the rate of polling sessions. A warm-up opens and closes as many first, so that every
// attempt, the first included, measures a server in its steady state (Node compiles its hot paths
// and sizes its heap on first use). Each is measured again, on the same server, if other
// processes disturbed it.
func (b *bench) connectPhase(ctx context.Context, t target, s nodes, g *loadgen.Generator) error {
	p := b.plan
	warm, err := g.DialMany(ctx, p.ConnN, p.DialConcurrency)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := g.Close(ctx, warm); err != nil {
		return err
	}
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	err = b.calmest(ctx, "connection rate", func(attempt int) (trial, error) {
		m, err := b.startMeter(s)
		if err != nil {
			return trial{}, err
		}
		conns, err := g.DialMany(ctx, p.ConnN, p.DialConcurrency)
		if err != nil {
			return trial{}, err
		}
		r, err := m.read()
		if err != nil {
			return trial{}, err
		}
		rate, cpu := float64(p.ConnN)/r.elapsed, r.serverCPU/float64(p.ConnN)*1e6
		progress("    %d connections in %.2fs: %.0f/s, %.0f µs CPU each (generator %.0f µs); %s",
			p.ConnN, r.elapsed, rate, cpu, r.genCPU/float64(p.ConnN)*1e6, r)
		if err := g.Close(ctx, conns); err != nil {
			return trial{}, err
		}
		return trial{r: r, record: func() {
			b.res.add(figConnRate, t.name, rate)
			b.res.add(figConnCPU, t.name, cpu)
			b.addLoad(connLoad, t, r)
		}}, sleep(ctx, time.Second) // let the server take the disconnects
	})
	if err != nil || !t.polling {
		return err
	}
	poller := loadgen.NewPoller(s[0].addr, p.DialConcurrency)
	defer poller.Close()
	if _, err := poller.HandshakeMany(ctx, p.PollN/4, p.DialConcurrency); err != nil {
		return fmt.Errorf("polling warm-up: %w", err)
	}
	return b.calmest(ctx, "polling rate", func(int) (trial, error) {
		m, err := b.startMeter(s)
		if err != nil {
			return trial{}, err
		}
		if _, err := poller.HandshakeMany(ctx, p.PollN, p.DialConcurrency); err != nil {
			return trial{}, err
		}
		r, err := m.read()
		rate := float64(p.PollN) / r.elapsed
		progress("    %d polling sessions: %.0f/s; %s", p.PollN, rate, r)
		return trial{r: r, record: func() { b.res.add(figPollRate, t.name, rate) }}, err
	})
}

// idlePhase: idle RSS per connection at ConnN and at IdleN connections, against the RSS of the
// fresh server; then the RSS once they have all left.
func (b *bench) idlePhase(ctx context.Context, t target, s nodes, g *loadgen.Generator) error {
	p := b.plan
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	fresh, err := s.rss()
	if err != nil {
		return err
	}
	b.res.add(figRSSFresh, t.name, fresh/1e6)
	idle := func(fig figKey, n int) error {
		if _, err := g.DialMany(ctx, n-g.Open(), p.DialConcurrency); err != nil {
			return err
		}
		if err := sleep(ctx, p.Settle); err != nil {
			return err
		}
		if open := g.Open(); open != n {
			return fmt.Errorf("%d connections open, want %d", open, n)
		}
		rss, err := s.rss()
		if err != nil {
			return err
		}
		perConn := (rss - fresh) / float64(n) / 1e3
		b.res.add(fig, t.name, perConn)
		progress("    idle at %d: RSS %.1f MB, %.1f kB per connection", n, rss/1e6, perConn)
		return nil
	}
	if err := idle(figIdleSmall, p.ConnN); err != nil {
		return err
	}
	if p.IdleN > p.ConnN {
		if err := idle(figIdleLarge, p.IdleN); err != nil {
			return err
		}
	}
	if err := g.CloseAll(ctx); err != nil {
		return err
	}
	if err := sleep(ctx, p.Settle); err != nil {
		return err
	}
	rss, err := s.rss()
	if err != nil {
		return err
	}
	b.res.add(figRSSLeft, t.name, rss/1e6)
	progress("    all left: RSS %.1f MB", rss/1e6)
	return nil
}

// echoPhase: ack latency at a fixed total rate, then the closed-loop ack throughput.
func (b *bench) echoPhase(ctx context.Context, t target, s nodes, g *loadgen.Generator) error {
	p := b.plan
	const room = "echo"
	conns, err := g.DialMany(ctx, p.EchoConns, p.DialConcurrency)
	if err != nil {
		return err
	}
	if err := b.joinAll(ctx, g, conns, room); err != nil {
		return err
	}
	err = b.calmest(ctx, "echo latency", func(int) (trial, error) { return b.echoFixed(ctx, t, s, g, conns, room) })
	if err != nil {
		return err
	}

	// Closed loop: EchoWindow requests outstanding on every connection, measured after a warm-up.
	st := g.ResetStats()
	if err := g.StartLoop(conns, room, p.EchoWindow); err != nil {
		g.StopLoop()
		return fmt.Errorf("start closed loop: %w", err)
	}
	err = sleep(ctx, p.Warmup)
	if err == nil {
		err = b.calmest(ctx, "ack throughput", func(int) (trial, error) { return b.echoLoop(ctx, t, s, st) })
	}
	g.StopLoop()
	b.checkAcks(ctx, t, "echo closed loop", g, conns)
	return err
}

// echoFixed sends joins round robin over conns at plan.EchoRate, each timed from when it was due.
func (b *bench) echoFixed(ctx context.Context, t target, s nodes, g *loadgen.Generator, conns []*loadgen.Conn, room string) (trial, error) {
	p := b.plan
	st := g.ResetStats()
	st.MeasureFrom.Store(g.Now() + int64(p.Warmup))
	n := int(float64(p.EchoRate) * (p.Warmup + p.EchoFixed).Seconds())
	m, err := b.startMeter(s)
	if err != nil {
		return trial{}, err
	}
	var sendErr error
	pace(ctx, g, float64(p.EchoRate), n, func(k int, due int64) {
		if _, err := conns[k%len(conns)].JoinAt(room, due); err != nil && sendErr == nil {
			sendErr = err
		}
	})
	r, err := m.read()
	if err := errors.Join(sendErr, err); err != nil {
		return trial{}, fmt.Errorf("echo at a fixed rate: %w", err)
	}
	b.checkAcks(ctx, t, "echo at a fixed rate", g, conns)
	p50, p99 := ms(st.AckLatency.Quantile(0.50)), ms(st.AckLatency.Quantile(0.99))
	progress("    %d req/s: p50 %.2f ms, p99 %.2f ms (%d timed); %s", p.EchoRate, p50, p99, st.AckLatency.Count(), r)
	if bl := st.Backlogged.Load(); bl > 0 {
		b.res.note(t.name, fmt.Sprintf("round %d echo at %d req/s: %d requests not sent: their connection had %d outstanding",
			b.round, p.EchoRate, bl, loadgen.MaxOutstanding))
	}
	return trial{r: r, record: func() {
		b.res.add(figEchoP50, t.name, p50)
		b.res.add(figEchoP99, t.name, p99)
	}}, nil
}

// echoLoop measures the closed loop running on st for plan.EchoMax.
func (b *bench) echoLoop(ctx context.Context, t target, s nodes, st *loadgen.Stats) (trial, error) {
	before := st.AcksOK.Load() + st.AcksFailed.Load()
	m, err := b.startMeter(s)
	if err != nil {
		return trial{}, err
	}
	if err := sleep(ctx, b.plan.EchoMax); err != nil {
		return trial{}, err
	}
	acks := float64(st.AcksOK.Load() + st.AcksFailed.Load() - before)
	r, err := m.read()
	if err != nil {
		return trial{}, err
	}
	if acks == 0 || r.serverCPU == 0 {
		return trial{}, errors.New("closed loop: no acks")
	}
	progress("    closed loop ×%d: %.0f acks/s, %.1f µs server CPU each; %s", b.plan.EchoWindow, acks/r.elapsed, r.serverCPU/acks*1e6, r)
	return trial{r: r, record: func() {
		b.res.add(figEchoMax, t.name, acks/r.elapsed)
		b.res.add(figEchoPerCPU, t.name, acks/r.serverCPU)
		b.res.add(figEchoCPU, t.name, r.serverCPU/acks*1e6)
		b.addLoad(echoLoad, t, r)
	}}, nil
}

// joinAll has every connection join room and waits for the acks.
func (b *bench) joinAll(ctx context.Context, g *loadgen.Generator, conns []*loadgen.Conn, room string) error {
	st := g.ResetStats()
	for _, c := range conns {
		if err := c.Join(room); err != nil {
			return fmt.Errorf("join: %w", err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if left := loadgen.WaitAcked(waitCtx, conns); left > 0 {
		return fmt.Errorf("join: %d of %d acks missing after 20s", left, len(conns))
	}
	if f := st.AcksFailed.Load(); f > 0 {
		return fmt.Errorf("join: %d of %d refused", f, len(conns))
	}
	return nil
}

// checkAcks waits for the acks of the requests sent on conns and records those lost or refused.
func (b *bench) checkAcks(ctx context.Context, t target, phase string, g *loadgen.Generator, conns []*loadgen.Conn) {
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	missing := loadgen.WaitAcked(waitCtx, conns)
	failed := g.Stats().AcksFailed.Load()
	b.res.addTo(figLostAcks, t.name, float64(missing)+float64(failed))
	if missing > 0 || failed > 0 {
		b.res.note(t.name, fmt.Sprintf("round %d %s: %d acks missing after 10s, %d refused", b.round, phase, missing, failed))
	}
}

// fanRate names the figures of one fan-out rate.
type fanRate struct {
	rate                           int
	delivered, p50, p99, cpu, lost figKey
	load                           *load // nil when not recorded
}

// fanoutPhase: FanMembers sockets in one room, one publisher at a low and a high rate. These run
// once per round: a fan-out with its drain is too long to repeat when disturbed, and the CPU per
// delivered message hardly depends on it. On two nodes (the cluster group) the generator spreads
// the members and the publisher over both, so half of every publish crosses Redis, and CPU and RSS
// are both nodes' together.
func (b *bench) fanoutPhase(ctx context.Context, t target, s nodes, g *loadgen.Generator, rates []fanRate, rssFig figKey) error {
	p := b.plan
	const room = "fan"
	members, err := g.DialMany(ctx, p.FanMembers, p.DialConcurrency)
	if err != nil {
		return err
	}
	pub, err := g.Dial(ctx)
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	if err := b.joinAll(ctx, g, members, room); err != nil {
		return err
	}
	seq := int64(0)
	for _, fr := range rates {
		if err := b.fanout(ctx, t, s, g, pub, room, len(members), fr, &seq); err != nil {
			return err
		}
		b.checkAcks(ctx, t, fmt.Sprintf("publish at %d/s", fr.rate), g, []*loadgen.Conn{pub})
	}
	rss, err := s.rss()
	if err != nil {
		return err
	}
	b.res.add(rssFig, t.name, rss/1e6)
	return nil
}

// oneNodeRates and twoNodeRates are the fan-out rates of the fanout and the cluster groups.
func (b *bench) oneNodeRates() []fanRate {
	return []fanRate{
		{rate: b.plan.FanLow, delivered: figFanLowRate, p50: figFanLowP50, p99: figFanLowP99, cpu: figFanLowCPU, lost: figFanLowLost},
		{rate: b.plan.FanHigh, delivered: figFanHighRate, p50: figFanHighP50, p99: figFanHighP99, cpu: figFanHighCPU, lost: figFanHighLost, load: &fanLoad},
	}
}

func (b *bench) twoNodeRates() []fanRate {
	return []fanRate{
		{rate: b.plan.FanLow, delivered: figDuoLowRate, p50: figDuoLowP50, p99: figDuoLowP99, cpu: figDuoLowCPU, lost: figDuoLowLost},
		{rate: b.plan.FanHigh, delivered: figDuoHighRate, p50: figDuoHighP50, p99: figDuoHighP99, cpu: figDuoHighCPU, lost: figDuoHighLost, load: &duoLoad},
	}
}

// fanout publishes at fr.rate for plan.FanDuration and waits for the deliveries.
func (b *bench) fanout(ctx context.Context, t target, s nodes, g *loadgen.Generator, pub *loadgen.Conn, room string, members int, fr fanRate, seq *int64) error {
	p := b.plan
	st := g.ResetStats()
	st.MeasureFrom.Store(g.Now() + int64(p.Warmup))
	m, err := b.startMeter(s)
	if err != nil {
		return err
	}
	start := g.Now()
	n := int(float64(fr.rate) * p.FanDuration.Seconds())
	var sendErr error
	pace(ctx, g, float64(fr.rate), n, func(int, int64) {
		if err := pub.Publish(room, "m", *seq); err != nil && sendErr == nil {
			sendErr = err
		}
		*seq++
	})
	if sendErr != nil {
		return fmt.Errorf("publish: %w", sendErr)
	}
	expected := uint64(n) * uint64(members)
	outcome := b.drain(ctx, st, expected)
	r, err := m.read()
	if err != nil {
		return err
	}
	got := st.Events.Load()
	secs := float64(st.LastEvent.Load()-start) / 1e9
	if got == 0 || secs <= 0 {
		return fmt.Errorf("fan-out at %d/s: nothing delivered", fr.rate)
	}
	delivered, cpu := float64(got)/secs, r.serverCPU/float64(got)*1e6
	p50, p99 := ms(st.EventDelay.Quantile(0.50)), ms(st.EventDelay.Quantile(0.99))
	b.res.add(fr.delivered, t.name, delivered)
	b.res.add(fr.p50, t.name, p50)
	b.res.add(fr.p99, t.name, p99)
	b.res.add(fr.cpu, t.name, cpu)
	missing := float64(expected) - float64(got)
	switch outcome {
	case drained, stalled:
		// Nothing arrived for DrainIdle: what is missing is lost.
		b.res.add(fr.lost, t.name, missing)
		if missing != 0 {
			b.res.note(t.name, fmt.Sprintf("round %d fan-out at %d/s: expected %d deliveries, got %d", b.round, fr.rate, expected, got))
		}
	case stillArriving:
		b.res.note(t.name, fmt.Sprintf("round %d fan-out at %d/s: %.0f of %d deliveries still arriving %s after the last publish; not counted as lost",
			b.round, fr.rate, missing, expected, p.DrainMax))
	}
	if ooo := st.OutOfOrder.Load(); ooo > 0 {
		b.res.note(t.name, fmt.Sprintf("round %d fan-out at %d/s: %d deliveries out of order", b.round, fr.rate, ooo))
	}
	b.res.addTo(figOutOfOrder, t.name, float64(st.OutOfOrder.Load()))
	if fr.load != nil {
		b.addLoad(*fr.load, t, r)
	}
	progress("    fan-out %d/s × %d: %.0f delivered/s, p50 %.2f ms, p99 %.2f ms, %.2f µs CPU each, missing %.0f; %s",
		fr.rate, members, delivered, p50, p99, cpu, missing, r)
	return nil
}

type drainOutcome int

const (
	drained       drainOutcome = iota // everything arrived
	stalled                           // nothing arrived for plan.DrainIdle
	stillArriving                     // plan.DrainMax passed while deliveries were still coming
)

// drain waits until expected events have arrived, nothing arrived for plan.DrainIdle, or
// plan.DrainMax passed.
func (b *bench) drain(ctx context.Context, st *loadgen.Stats, expected uint64) drainOutcome {
	deadline := time.Now().Add(b.plan.DrainMax)
	last, lastChange := st.Events.Load(), time.Now()
	for {
		got := st.Events.Load()
		switch {
		case got >= expected:
			return drained
		case got != last:
			last, lastChange = got, time.Now()
		case time.Since(lastChange) > b.plan.DrainIdle:
			return stalled
		}
		if time.Now().After(deadline) || sleep(ctx, 20*time.Millisecond) != nil {
			return stillArriving
		}
	}
}

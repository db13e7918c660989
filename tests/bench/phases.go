package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/chorus-rt/chorus/tests/bench/loadgen"
)

// plan is what one run does: sizes, rates and durations of every phase.
type plan struct {
	Rounds          int
	DialConcurrency int           // handshakes in flight while opening connections
	Settle          time.Duration // pause before an idle RSS reading
	GroupTimeout    time.Duration // bound on one phase group, server start to stop

	ConnN int // connections opened for the rate figure and the first idle figure
	IdleN int // connections for the second idle figure; 0 skips it
	PollN int // polling sessions opened and closed

	EchoConns  int
	EchoRate   int           // fixed total rate of the latency figure, requests/s
	EchoWindow int           // outstanding requests per connection in the throughput figure
	Warmup     time.Duration // run before measuring, in the echo and fan-out phases
	EchoFixed  time.Duration // measured part of the fixed-rate run
	EchoMax    time.Duration // measured part of the closed-loop run

	FanMembers  int
	FanLow      int // publishes/s
	FanHigh     int
	FanDuration time.Duration // publishing time per rate, warm-up included
	DrainMax    time.Duration // longest wait for deliveries after the last publish
	DrainIdle   time.Duration // stop waiting after this long without a delivery
}

func defaultPlan() plan {
	return plan{
		Rounds: 3, DialConcurrency: 16, Settle: 3 * time.Second, GroupTimeout: 3 * time.Minute,
		ConnN: 2000, IdleN: 10000, PollN: 500,
		EchoConns: 1000, EchoRate: 5000, EchoWindow: 4, Warmup: time.Second, EchoFixed: 8 * time.Second, EchoMax: 6 * time.Second,
		FanMembers: 2000, FanLow: 10, FanHigh: 50, FanDuration: 8 * time.Second, DrainMax: 40 * time.Second, DrainIdle: 5 * time.Second,
	}
}

// quickPlan is a smoke run: one round, the same sizes but no 10 000-connection figure, short phases.
func quickPlan() plan {
	p := defaultPlan()
	p.Rounds = 1
	p.IdleN = 0
	p.PollN = 200
	p.Settle = time.Second
	p.EchoFixed, p.EchoMax = 3*time.Second, 3*time.Second
	p.FanDuration = 4 * time.Second
	p.DrainMax = 20 * time.Second
	return p
}

// bench runs the phases and keeps their figures.
type bench struct {
	cfg     config
	plan    plan
	sources []net.IP
	res     *results
	round   int
}

// group runs one phase group against a fresh server process: start, fn, close the connections,
// stop. It is bounded by plan.GroupTimeout.
func (b *bench) group(ctx context.Context, t target, name string, fn func(ctx context.Context, s *server, g *loadgen.Generator) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.plan.GroupTimeout)
	defer cancel()
	s, err := startServer(ctx, t, b.cfg.serverCPU)
	if err != nil {
		return err
	}
	g, err := loadgen.New(loadgen.Config{Addr: s.addr, Sources: b.sources})
	if err != nil {
		s.stop()
		return err
	}
	progress("round %d  %-6s  %s", b.round, t.name, name)
	err = fn(ctx, s, g)

	closeCtx, cancelClose := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelClose()
	if err := g.CloseAll(closeCtx); err != nil {
		b.res.note(t.name, fmt.Sprintf("round %d %s: %v", b.round, name, err))
	}
	time.Sleep(time.Second) // let the server see the disconnects before it is asked to stop
	if !s.stop() {
		b.res.note(t.name, fmt.Sprintf("round %d %s: still running 5s after SIGTERM; killed", b.round, name))
	}
	if n, samples := s.log.Warnings(); n > 0 {
		b.res.note(t.name, fmt.Sprintf("round %d %s: the server logged %d warnings/errors, first: %q", b.round, name, n, samples))
	}
	if d := g.Disconnects(); d > 0 {
		b.res.note(t.name, fmt.Sprintf("round %d %s: %d connections closed by the server unasked", b.round, name, d))
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", t.name, name, err)
	}
	return nil
}

// meter measures an interval: the server's CPU time, the generator's own, and how much of the
// server's core went to anything else (other processes on a shared machine).
type meter struct {
	s          *server
	serverCore int // -1 when the server is not pinned to one core
	start      sample
}

// sample is what the meter reads at each end of the interval.
type sample struct {
	at          time.Time
	server, gen float64 // CPU seconds
	core        float64 // busy seconds of the server's core
	coreOK      bool
}

// reading is what a meter measured.
type reading struct {
	elapsed   float64 // seconds
	serverCPU float64 // seconds
	genCPU    float64 // seconds
	// others is the percentage of the server's core used by anything but the server: other
	// processes, and kernel work done outside the server's context; negative when unknown.
	others float64
}

func (b *bench) startMeter(s *server) (meter, error) {
	m := meter{s: s, serverCore: singleCPU(b.cfg.serverCPU)}
	var err error
	m.start, err = m.sample()
	return m, err
}

func (m meter) sample() (sample, error) {
	now := sample{at: time.Now()}
	var err1, err2 error
	now.server, err1 = m.s.cpuSeconds()
	now.gen, err2 = procCPU("self")
	now.core, now.coreOK = coreBusy(m.serverCore)
	return now, errors.Join(err1, err2)
}

// read returns what was measured since the meter started.
func (m meter) read() (reading, error) {
	end, err := m.sample()
	r := reading{elapsed: end.at.Sub(m.start.at).Seconds(), serverCPU: end.server - m.start.server, genCPU: end.gen - m.start.gen, others: -1}
	if end.coreOK && m.start.coreOK {
		r.others = max(0, (end.core-m.start.core-r.serverCPU)/r.elapsed*100)
	}
	return r, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// connectPhase: connection rate and CPU per connection opening ConnN; idle RSS per connection at
// ConnN and IdleN; then the polling handshake rate.
func (b *bench) connectPhase(ctx context.Context, t target, s *server, g *loadgen.Generator) error {
	p := b.plan
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	fresh, err := s.rss()
	if err != nil {
		return err
	}
	b.res.add(figRSSFresh, t.name, fresh/1e6)

	m, err := b.startMeter(s)
	if err != nil {
		return err
	}
	if _, err := g.DialMany(ctx, p.ConnN, p.DialConcurrency); err != nil {
		return err
	}
	r, err := m.read()
	if err != nil {
		return err
	}
	rate, cpu := float64(p.ConnN)/r.elapsed, r.serverCPU/float64(p.ConnN)*1e6
	b.res.add(figConnRate, t.name, rate)
	b.res.add(figConnCPU, t.name, cpu)
	b.addLoad(connLoad, t, r)
	progress("    %d connections in %.2fs: %.0f/s, %.0f µs CPU each; %s", p.ConnN, r.elapsed, rate, cpu, r)

	idle := func(fig figKey, n int) error {
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
		if _, err := g.DialMany(ctx, p.IdleN-p.ConnN, p.DialConcurrency); err != nil {
			return err
		}
		if err := idle(figIdleLarge, p.IdleN); err != nil {
			return err
		}
	}
	if err := g.CloseAll(ctx); err != nil {
		return err
	}
	if !t.polling {
		return nil
	}
	if err := sleep(ctx, time.Second); err != nil { // let the server take the disconnects
		return err
	}
	poller := loadgen.NewPoller(s.addr, p.DialConcurrency)
	defer poller.Close()
	start := time.Now()
	if _, err := poller.HandshakeMany(ctx, p.PollN, p.DialConcurrency); err != nil {
		return err
	}
	rate = float64(p.PollN) / time.Since(start).Seconds()
	b.res.add(figPollRate, t.name, rate)
	progress("    %d polling sessions: %.0f/s", p.PollN, rate)
	return nil
}

// load names the figures of who had the cores during one measurement.
type load struct{ server, others, gen figKey }

var (
	connLoad = load{figConnBusy, figConnOthers, figConnGenBusy}
	echoLoad = load{figEchoBusy, figEchoOthers, figEchoGenBusy}
	fanLoad  = load{figFanHighBusy, figFanHighOthers, figFanHighGenBusy}
)

// addLoad records how the server's core was shared between the server and everything else, and
// how busy the generator was.
func (b *bench) addLoad(l load, t target, r reading) {
	b.res.add(l.server, t.name, r.serverCPU/r.elapsed*100)
	b.res.add(l.gen, t.name, r.genCPU/r.elapsed*100)
	if r.others >= 0 {
		b.res.add(l.others, t.name, r.others)
	}
}

func (r reading) String() string {
	return fmt.Sprintf("server core: server %.0f%%, others %.0f%%; generator core: generator %.0f%%",
		r.serverCPU/r.elapsed*100, r.others, r.genCPU/r.elapsed*100)
}

// echoPhase: ack latency at a fixed total rate, then the closed-loop ack throughput.
func (b *bench) echoPhase(ctx context.Context, t target, s *server, g *loadgen.Generator) error {
	p := b.plan
	const room = "echo"
	conns, err := g.DialMany(ctx, p.EchoConns, p.DialConcurrency)
	if err != nil {
		return err
	}
	if err := b.joinAll(ctx, g, conns, room); err != nil {
		return err
	}

	// Fixed rate: requests spread round robin over the connections, each timed from when it was due.
	st := g.ResetStats()
	st.MeasureFrom.Store(g.Now() + int64(p.Warmup))
	n := int(float64(p.EchoRate) * (p.Warmup + p.EchoFixed).Seconds())
	var sendErr error
	pace(ctx, g, float64(p.EchoRate), n, func(k int, due int64) {
		if _, err := conns[k%len(conns)].JoinAt(room, due); err != nil && sendErr == nil {
			sendErr = err
		}
	})
	if sendErr != nil {
		return fmt.Errorf("send: %w", sendErr)
	}
	b.checkAcks(ctx, t, "echo at fixed rate", g, conns)
	p50, p99 := st.AckLatency.Quantile(0.50), st.AckLatency.Quantile(0.99)
	b.res.add(figEchoP50, t.name, ms(p50))
	b.res.add(figEchoP99, t.name, ms(p99))
	progress("    %d req/s: p50 %.2f ms, p99 %.2f ms (%d timed)", p.EchoRate, ms(p50), ms(p99), st.AckLatency.Count())
	if bl := st.Backlogged.Load(); bl > 0 {
		b.res.note(t.name, fmt.Sprintf("round %d echo at %d req/s: %d requests not sent: their connection had %d outstanding",
			b.round, p.EchoRate, bl, loadgen.MaxOutstanding))
	}

	// Closed loop: EchoWindow requests outstanding on every connection.
	st = g.ResetStats()
	if err := g.StartLoop(conns, room, p.EchoWindow); err != nil {
		g.StopLoop()
		return fmt.Errorf("start closed loop: %w", err)
	}
	err = b.measureLoop(ctx, t, s, st)
	g.StopLoop()
	if err != nil {
		return err
	}
	b.checkAcks(ctx, t, "echo closed loop", g, conns)
	return nil
}

// measureLoop measures the closed loop running on st after a warm-up.
func (b *bench) measureLoop(ctx context.Context, t target, s *server, st *loadgen.Stats) error {
	if err := sleep(ctx, b.plan.Warmup); err != nil {
		return err
	}
	before := st.AcksOK.Load() + st.AcksFailed.Load()
	m, err := b.startMeter(s)
	if err != nil {
		return err
	}
	if err := sleep(ctx, b.plan.EchoMax); err != nil {
		return err
	}
	acks := float64(st.AcksOK.Load() + st.AcksFailed.Load() - before)
	r, err := m.read()
	if err != nil {
		return err
	}
	if acks == 0 {
		return errors.New("closed loop: no acks")
	}
	b.res.add(figEchoMax, t.name, acks/r.elapsed)
	b.res.add(figEchoCPU, t.name, r.serverCPU/acks*1e6)
	b.addLoad(echoLoad, t, r)
	progress("    closed loop ×%d: %.0f acks/s, %.1f µs server CPU each; %s", b.plan.EchoWindow, acks/r.elapsed, r.serverCPU/acks*1e6, r)
	return nil
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

// fanoutPhase: FanMembers sockets in one room, one publisher at a low and a high rate.
func (b *bench) fanoutPhase(ctx context.Context, t target, s *server, g *loadgen.Generator) error {
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
	for _, fr := range []fanRate{
		{rate: p.FanLow, delivered: figFanLowRate, p50: figFanLowP50, p99: figFanLowP99, cpu: figFanLowCPU, lost: figFanLowLost},
		{rate: p.FanHigh, delivered: figFanHighRate, p50: figFanHighP50, p99: figFanHighP99, cpu: figFanHighCPU, lost: figFanHighLost, load: &fanLoad},
	} {
		if err := b.fanout(ctx, t, s, g, pub, room, len(members), fr, &seq); err != nil {
			return err
		}
		b.checkAcks(ctx, t, fmt.Sprintf("publish at %d/s", fr.rate), g, []*loadgen.Conn{pub})
	}
	rss, err := s.rss()
	if err != nil {
		return err
	}
	b.res.add(figRSSFan, t.name, rss/1e6)
	return nil
}

// fanout publishes at fr.rate for plan.FanDuration and waits for the deliveries.
func (b *bench) fanout(ctx context.Context, t target, s *server, g *loadgen.Generator, pub *loadgen.Conn, room string, members int, fr fanRate, seq *int64) error {
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
	case stillArriving:
		b.res.note(t.name, fmt.Sprintf("round %d fan-out at %d/s: %.0f of %d deliveries still arriving %s after the last publish; not counted as lost",
			b.round, fr.rate, missing, expected, p.DrainMax))
	}
	if missing != 0 && outcome != stillArriving {
		b.res.note(t.name, fmt.Sprintf("round %d fan-out at %d/s: expected %d deliveries, got %d", b.round, fr.rate, expected, got))
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

// pace calls send n times at rate per second from now, passing the index and the generator clock
// at which each call was due. It stops early when ctx is done.
func pace(ctx context.Context, g *loadgen.Generator, rate float64, n int, send func(k int, due int64)) {
	start := g.Now()
	interval := 1e9 / rate
	due := func(k int) int64 { return start + int64(float64(k)*interval) }
	for k := 0; k < n && ctx.Err() == nil; {
		now := g.Now()
		for ; k < n && due(k) <= now; k++ {
			send(k, due(k))
		}
		if k < n {
			time.Sleep(time.Duration(min(due(k)-g.Now(), int64(time.Millisecond))))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

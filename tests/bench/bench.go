package main

import (
	"context"
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
	// Attempts bounds how often a throughput or latency measurement is taken when other processes
	// took more than Calm % of the server's or the generator's core; the calmest attempt is kept.
	Attempts int
	Calm     float64

	ConnN int // connections opened for the rate figure and the first idle figure
	IdleN int // connections for the second idle figure; 0 skips it
	PollN int // polling sessions opened and closed

	EchoConns  int
	EchoRate   int           // fixed total rate of the latency figure, requests/s
	EchoWindow int           // outstanding requests per connection in the throughput figure
	Warmup     time.Duration // run before measuring, in the echo and fan-out phases
	EchoFixed  time.Duration // measured part of a fixed-rate run
	EchoMax    time.Duration // measured part of a closed-loop run

	FanMembers  int
	FanLow      int // publishes/s
	FanHigh     int
	FanDuration time.Duration // publishing time per rate, warm-up included
	DrainMax    time.Duration // longest wait for deliveries after the last publish
	DrainIdle   time.Duration // stop waiting after this long without a delivery
}

func defaultPlan() plan {
	return plan{
		Rounds: 3, DialConcurrency: 16, Settle: 3 * time.Second, GroupTimeout: 3 * time.Minute, Attempts: 3, Calm: 10,
		ConnN: 2000, IdleN: 10000, PollN: 500,
		EchoConns: 1000, EchoRate: 5000, EchoWindow: 4, Warmup: time.Second, EchoFixed: 5 * time.Second, EchoMax: 4 * time.Second,
		FanMembers: 2000, FanLow: 10, FanHigh: 50, FanDuration: 8 * time.Second, DrainMax: 40 * time.Second, DrainIdle: 5 * time.Second,
	}
}

// quickPlan is a smoke run: one round, the same sizes but no 10 000-connection figure, short phases,
// no second attempts.
func quickPlan() plan {
	p := defaultPlan()
	p.Rounds = 1
	p.Attempts = 1
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

// phaseGroups are the groups of a round, in order; each runs against a fresh server process.
// The cluster group runs two nodes of the server sharing one redis-server.
var phaseGroups = []string{"connect", "idle", "echo", "fanout", "cluster"}

func (b *bench) phase(name string, t target) func(context.Context, nodes, *loadgen.Generator) error {
	return func(ctx context.Context, s nodes, g *loadgen.Generator) error {
		switch name {
		case "connect":
			return b.connectPhase(ctx, t, s, g)
		case "idle":
			return b.idlePhase(ctx, t, s, g)
		case "echo":
			return b.echoPhase(ctx, t, s, g)
		case "fanout":
			return b.fanoutPhase(ctx, t, s, g, b.oneNodeRates(), figRSSFan)
		default:
			return b.fanoutPhase(ctx, t, s, g, b.twoNodeRates(), figDuoRSS)
		}
	}
}

// group runs one phase group against fresh server processes: start (for the cluster group a
// redis-server and two nodes), fn, close the connections, stop. It is bounded by plan.GroupTimeout.
func (b *bench) group(ctx context.Context, t target, name string, fn func(ctx context.Context, s nodes, g *loadgen.Generator) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.plan.GroupTimeout)
	defer cancel()
	count, env := 1, []string(nil)
	if name == "cluster" {
		// Redis shares the generator's core: it carries one PUBLISH per broadcast for either
		// server, the same work whichever is measured.
		r, err := startRedis(ctx, b.cfg.genCPU)
		if err != nil {
			return err
		}
		defer r.stop()
		count = 2
		env = []string{"CHORUS_REDIS_URL=redis://" + r.addr, fmt.Sprintf("CHORUS_REDIS_PREFIX=bench-%d-%s", b.round, t.name)}
	}
	var s nodes
	defer func() {
		for _, n := range s {
			if !n.stop() {
				b.res.note(t.name, fmt.Sprintf("round %d %s: still running 5s after SIGTERM; killed", b.round, name))
			}
			if w, samples := n.log.Warnings(); w > 0 {
				b.res.note(t.name, fmt.Sprintf("round %d %s: the server logged %d warnings/errors, first: %q", b.round, name, w, samples))
			}
		}
	}()
	for range count {
		n, err := startServer(ctx, t, b.cfg.serverCPU, env...)
		if err != nil {
			return err
		}
		s = append(s, n)
	}
	cfg := loadgen.Config{Addr: s[0].addr, Sources: b.sources}
	for _, n := range s[1:] {
		cfg.Others = append(cfg.Others, n.addr)
	}
	g, err := loadgen.New(cfg)
	if err != nil {
		return err
	}
	progress("round %d  %-6s  %s", b.round, t.name, name)
	err = fn(ctx, s, g)

	closeCtx, cancelClose := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelClose()
	if err := g.CloseAll(closeCtx); err != nil {
		b.res.note(t.name, fmt.Sprintf("round %d %s: %v", b.round, name, err))
	}
	time.Sleep(time.Second) // let the servers see the disconnects before they are asked to stop
	if d := g.Disconnects(); d > 0 {
		b.res.note(t.name, fmt.Sprintf("round %d %s: %d connections closed by the server unasked", b.round, name, d))
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", t.name, name, err)
	}
	return nil
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

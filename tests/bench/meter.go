package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// meter measures an interval: the server's CPU time, the generator's own, and how much of either
// core went to anything else (other processes on a shared machine).
type meter struct {
	s     nodes
	cores [2]int // the server's and the generator's core; -1 when not pinned to one
	start sample
}

// sample is what the meter reads at each end of the interval.
type sample struct {
	at          time.Time
	server, gen float64    // CPU seconds
	cores       [2]float64 // busy seconds of the two cores
	coresOK     [2]bool
}

// reading is what a meter measured.
type reading struct {
	elapsed   float64 // seconds
	serverCPU float64 // seconds
	genCPU    float64 // seconds
	// others and genOthers are the percentage of the server's and of the generator's core used by
	// anything but the server and the generator: other processes, and kernel work done outside
	// their context; negative when unknown.
	others, genOthers float64
}

func (b *bench) startMeter(s nodes) (meter, error) {
	m := meter{s: s, cores: [2]int{singleCPU(b.cfg.serverCPU), singleCPU(b.cfg.genCPU)}}
	var err error
	m.start, err = m.sample()
	return m, err
}

func (m meter) sample() (sample, error) {
	now := sample{at: time.Now()}
	var err1, err2 error
	now.server, err1 = m.s.cpuSeconds()
	now.gen, err2 = procCPU("self")
	for i, core := range m.cores {
		now.cores[i], now.coresOK[i] = coreBusy(core)
	}
	return now, errors.Join(err1, err2)
}

// read returns what was measured since the meter started.
func (m meter) read() (reading, error) {
	end, err := m.sample()
	r := reading{elapsed: end.at.Sub(m.start.at).Seconds(), serverCPU: end.server - m.start.server, genCPU: end.gen - m.start.gen}
	others := func(i int, own float64) float64 {
		if !end.coresOK[i] || !m.start.coresOK[i] {
			return -1
		}
		return max(0, (end.cores[i]-m.start.cores[i]-own)/r.elapsed*100)
	}
	r.others = others(0, r.serverCPU)
	r.genOthers = others(1, r.genCPU)
	return r, err
}

// interference is the larger share of a core that anything else took during the reading, in %.
func (r reading) interference() float64 { return max(r.others, r.genOthers, 0) }

func (r reading) String() string {
	return fmt.Sprintf("server core: server %.0f%%, others %.0f%%; generator core: generator %.0f%%, others %.0f%%",
		r.serverCPU/r.elapsed*100, r.others, r.genCPU/r.elapsed*100, r.genOthers)
}

// load names the figures of who had the cores during one measurement.
type load struct{ server, others, gen, genOthers figKey }

var (
	connLoad = load{figConnBusy, figConnOthers, figConnGenBusy, figConnGenOthers}
	echoLoad = load{figEchoBusy, figEchoOthers, figEchoGenBusy, figEchoGenOthers}
	fanLoad  = load{figFanHighBusy, figFanHighOthers, figFanHighGenBusy, figFanHighGenOthers}
	duoLoad  = load{figDuoHighBusy, figDuoHighOthers, figDuoHighGenBusy, figDuoHighGenOthers}
)

// addLoad records how each core was shared between its process and anything else.
func (b *bench) addLoad(l load, t target, r reading) {
	b.res.add(l.server, t.name, r.serverCPU/r.elapsed*100)
	b.res.add(l.gen, t.name, r.genCPU/r.elapsed*100)
	if r.others >= 0 {
		b.res.add(l.others, t.name, r.others)
	}
	if r.genOthers >= 0 {
		b.res.add(l.genOthers, t.name, r.genOthers)
	}
}

// trial is one attempt at a measurement: what the meter read, and how to record its figures.
type trial struct {
	r      reading
	record func()
}

// calmest runs try up to plan.Attempts times, until an attempt ran with at most plan.Calm % of
// either core taken by anything else, and records the calmest attempt's figures. attempt counts
// from 0.
func (b *bench) calmest(ctx context.Context, what string, try func(attempt int) (trial, error)) error {
	var best trial
	for i := range b.plan.Attempts {
		tr, err := try(i)
		if err != nil {
			return err
		}
		if i == 0 || tr.r.interference() < best.r.interference() {
			best = tr
		}
		if tr.r.interference() <= b.plan.Calm || ctx.Err() != nil {
			break
		}
		if i+1 < b.plan.Attempts {
			progress("    %s disturbed: %.0f%% of a core went to other processes; measuring again", what, tr.r.interference())
		}
	}
	best.record()
	return ctx.Err()
}

package loadgen

import (
	"sync/atomic"
	"time"
)

// Stats are the counters of one measurement; the generator swaps in a fresh set per phase
// (Generator.ResetStats). All fields are updated atomically by the connections' readers.
type Stats struct {
	// MeasureFrom is the generator clock (Generator.Now) from which latencies are recorded;
	// requests and messages sent earlier (the warm-up) are counted but not timed.
	MeasureFrom atomic.Int64

	AcksSent   atomic.Uint64 // requests sent with an ack id
	AcksOK     atomic.Uint64 // acks answering {ok:true}
	AcksFailed atomic.Uint64 // acks answering anything else
	Backlogged atomic.Uint64 // paced requests skipped because the connection had too many outstanding
	AckLatency Histogram

	Events     atomic.Uint64 // events received
	OutOfOrder atomic.Uint64 // events whose sequence number was not above the previous one on that connection
	LastEvent  atomic.Int64  // generator clock of the last event received
	EventDelay Histogram     // send → receive of events carrying a timestamp

	Pings atomic.Uint64 // Engine.IO pings answered
}

// Now is the generator clock: monotonic nanoseconds since the generator was created. Timestamps
// embedded in published messages use it, so send → receive delays need no clock agreement.
func (g *Generator) Now() int64 { return int64(time.Since(g.base)) }

// Disconnects is how many connections the server closed, or that failed, without being closed by
// the generator, since it was created.
func (g *Generator) Disconnects() uint64 { return g.disconnects.Load() }

// Stats returns the current counters.
func (g *Generator) Stats() *Stats { return g.stats.Load() }

// ResetStats starts a fresh set of counters, timing from now on, and returns it.
func (g *Generator) ResetStats() *Stats {
	s := new(Stats)
	s.MeasureFrom.Store(g.Now())
	g.stats.Store(s)
	return s
}

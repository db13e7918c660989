package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// What a failed soak needs to be explained: when connections were lost, which reason chorus gave,
// and whether the processes were being scheduled at all then. A shared 2-core machine under other
// load can stall a process for seconds, longer than the ping timeout; the lag probe tells such a
// stall from a defect in chorus.

// lagProbe measures scheduling lag: how late a 100 ms ticker fires. Max returns the worst lag
// since the previous call.
type lagProbe struct {
	worst atomic.Int64 // nanoseconds
	stop  context.CancelFunc
}

const lagTick = 100 * time.Millisecond

func startLagProbe() *lagProbe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &lagProbe{stop: cancel}
	go func() {
		t := time.NewTicker(lagTick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// A ticker drops ticks it could not deliver, so the gap since this goroutine last
				// ran is what it waited beyond the period.
				now := time.Now()
				if lag := int64(now.Sub(last) - lagTick); lag > p.worst.Load() {
					p.worst.Store(lag)
				}
				last = now
			}
		}
	}()
	return p
}

// Max returns the worst lag since the last call and starts a new period.
func (p *lagProbe) Max() time.Duration { return time.Duration(p.worst.Swap(0)) }

// disconnectLog records chorus's "disconnect" log lines (reason and time since the start) and
// counts warnings and errors, which it passes on to next.
type disconnectLog struct {
	next   slog.Handler // warnings and errors
	start  time.Time
	warned *atomic.Int64
	mu     *sync.Mutex
	events *[]disconnectEvent
	attrs  []slog.Attr
}

type disconnectEvent struct {
	at     time.Duration
	reason string
}

func newDisconnectLog(next slog.Handler) disconnectLog {
	return disconnectLog{next: next, start: time.Now(), warned: new(atomic.Int64), mu: new(sync.Mutex), events: new([]disconnectEvent)}
}

func (h disconnectLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h disconnectLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warned.Add(1)
		return h.next.Handle(ctx, r)
	}
	if r.Message != "disconnect" {
		return nil
	}
	reason := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			reason = a.Value.String()
			return false
		}
		return true
	})
	h.mu.Lock()
	*h.events = append(*h.events, disconnectEvent{time.Since(h.start), reason})
	h.mu.Unlock()
	return nil
}

func (h disconnectLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	h.next = h.next.WithAttrs(attrs)
	return h
}

func (h disconnectLog) WithGroup(name string) slog.Handler {
	h.next = h.next.WithGroup(name)
	return h
}

// Since returns the disconnects after t (from the start), as "reason: count" in minute buckets.
func (h disconnectLog) Since(t time.Duration) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	counts := map[string]int{}
	for _, e := range *h.events {
		if e.at >= t {
			counts[fmt.Sprintf("minute %3d after the warm-up: %s", int((e.at-t).Minutes()), e.reason)]++
		}
	}
	out := make([]string, 0, len(counts))
	for k, n := range counts {
		out = append(out, fmt.Sprintf("%s × %d", k, n))
	}
	sort.Strings(out)
	return out
}

// Newer returns the reasons of the disconnects logged after the first `from` ones, with counts,
// and how many have been logged in all.
func (h disconnectLog) Newer(from int) (string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	counts := map[string]int{}
	for _, e := range (*h.events)[min(from, len(*h.events)):] {
		counts[e.reason]++
	}
	parts := make([]string, 0, len(counts))
	for reason, n := range counts {
		parts = append(parts, fmt.Sprintf("%s × %d", reason, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", "), len(*h.events)
}

// runQueueWait returns how long this process's threads have waited, in all, on a CPU run queue:
// ready to run, but the kernel ran something else (/proc/<pid>/task/*/schedstat, second field).
// It grows with the scheduling lag when the lag comes from other processes on the machine, and
// stays flat when it comes from inside the process.
func runQueueWait() time.Duration {
	tasks, _ := filepath.Glob("/proc/self/task/*/schedstat")
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			total += ns
		}
	}
	return time.Duration(total)
}

package reliability

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/tests/bench/loadgen"
)

var churnCycles = flag.Int("churn-cycles", 5000, "connect/disconnect cycles of TestChurn (the long form runs 50 000)")

// TestChurn opens and closes sessions over and over, on both transports, against chorus running
// in this process while 1 000 other clients stay connected, and checks that it gives back
// everything: the goroutine count returns to its baseline exactly, the heap after GC is within 10 %
// of its baseline, no file descriptor is left open, and none of the steady clients was disturbed.
// Half of the cycles are WebSocket sessions that connect and join a room, half are long-polling
// sessions that open, connect and close.
func TestChurn(t *testing.T) {
	// Heartbeats would wake the steady clients' readers at random moments and move the goroutine
	// count; zombie detection has its own test.
	cfg := config.Default()
	cfg.PingInterval = 10 * time.Minute
	// Every connection comes from 127.0.0.1: the per-address limits would refuse most of them.
	cfg.MaxConnsPerIP, cfg.HandshakeRate, cfg.MaxConns = 0, 0, 0
	// The churning clients drop their connections without a disconnect packet, so with recovery on
	// each would leave a session kept, by design, for the recovery window (2 minutes): retention,
	// not a leak, and its expiry has its own tests (adapter). This test is about what a connection
	// holds.
	cfg.Recovery = false
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, h := app.New(cfg, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	defer func() {
		srv.Close()
		hs.Close()
	}()
	addr := ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cycle := func(n int) {
		t.Helper()
		g, err := loadgen.New(loadgen.Config{Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		poller := loadgen.NewPoller(addr, 16)
		defer poller.Close()
		for done := 0; done < n; {
			batch := min(500, n-done)
			conns, err := g.DialMany(ctx, batch/2, 16)
			if err != nil {
				t.Fatalf("websocket cycle: %v", err)
			}
			for _, c := range conns {
				if err := c.Join("churn"); err != nil {
					t.Fatalf("join: %v", err)
				}
			}
			if left := loadgen.WaitAcked(ctx, conns); left > 0 {
				t.Fatalf("%d joins not acked", left)
			}
			if err := g.Close(ctx, conns); err != nil {
				t.Fatal(err)
			}
			if _, err := poller.HandshakeMany(ctx, batch-batch/2, 16); err != nil {
				t.Fatalf("polling cycle: %v", err)
			}
			done += batch
		}
		if err := g.CloseAll(ctx); err != nil {
			t.Fatal(err)
		}
		if d := g.Disconnects(); d > 0 {
			t.Fatalf("%d connections closed by the server unasked", d)
		}
	}
	// settle waits until chorus has no session left but the keep steady ones, and the goroutine count stops moving, and
	// returns it with the heap in use after a GC and the open descriptors.
	settle := func(keep int) (goroutines int, heap uint64, fds int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for srv.Sessions() > keep {
			if time.Now().After(deadline) {
				t.Fatalf("%d sessions still open 30s after the last cycle", srv.Sessions())
			}
			time.Sleep(20 * time.Millisecond)
		}
		last, stable := -1, 0
		for stable < 10 && time.Now().Before(deadline) { // the same count for 10 × 100 ms
			n := runtime.NumGoroutine()
			if n == last {
				stable++
			} else {
				last, stable = n, 0
			}
			time.Sleep(100 * time.Millisecond)
		}
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return last, ms.HeapAlloc, openFDs(t)
	}

	steadyGen, err := loadgen.New(loadgen.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer steadyGen.CloseAll(context.Background())
	steady, err := steadyGen.DialMany(ctx, 1000, 16)
	if err != nil {
		t.Fatalf("steady clients: %v", err)
	}
	// Warm-up: pools, maps, the runtime's poll descriptor cache and timers reach the size the
	// steady churn needs (closed polling sessions linger a second, so about a second's worth of
	// sessions is in the table at once). Those do not shrink; growth past them would be a leak.
	cycle(2000)
	g0, heap0, fd0 := settle(len(steady))
	start := time.Now()
	cycle(*churnCycles)
	took := time.Since(start)
	g1, heap1, fd1 := settle(len(steady))
	if open, d := steadyGen.Open(), steadyGen.Disconnects(); open != len(steady) || d > 0 {
		t.Errorf("steady clients: %d of %d still open, %d closed by the server", open, len(steady), d)
	}
	t.Logf("%d cycles in %v beside %d steady clients: goroutines %d → %d, live heap after GC %.1f → %.1f MB, open descriptors %d → %d",
		*churnCycles, took.Round(time.Millisecond), len(steady), g0, g1, float64(heap0)/1e6, float64(heap1)/1e6, fd0, fd1)
	if g1 != g0 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines %d after the cycles, %d before:\n%s", g1, g0, buf[:runtime.Stack(buf, true)])
	}
	if float64(heap1) > float64(heap0)*1.10 {
		t.Errorf("live heap after GC grew from %d to %d bytes (more than 10 %%)", heap0, heap1)
	}
	if fd1 != fd0 {
		t.Errorf("%d descriptors open after the cycles, %d before", fd1, fd0)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count open descriptors: %v", err)
	}
	return len(entries)
}

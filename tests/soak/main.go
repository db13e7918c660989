// Command soak holds many idle WebSocket connections on chorus for a long time with a short ping
// interval and reports whether anything drifts: unexpected disconnects, RSS, goroutines, heap. After
// the connections leave, goroutines must be back to their count before any connection.
//
// It runs chorus in this process (so that goroutines and heap can be read exactly) and starts
// itself again as a child process that holds the connections with the bench load generator, so the
// RSS measured is the server's alone. `make soak` runs 10 000 connections for 10 minutes.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chorus-rt/chorus/internal/app"
	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/tests/bench/loadgen"
)

func main() {
	conns := flag.Int("conns", 10000, "connections to hold")
	duration := flag.Duration("duration", 10*time.Minute, "how long to hold them")
	ping := flag.Duration("ping-interval", 2*time.Second, "server ping interval")
	every := flag.Duration("every", 30*time.Second, "sampling period")
	client := flag.String("client", "", "internal: hold connections to this address (child mode)")
	flag.Parse()
	var err error
	if *client != "" {
		err = hold(*client, *conns)
	} else {
		err = soak(*conns, *duration, *ping, *every)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// warmUp comes before the first sample.
const warmUp = 60 * time.Second

type sample struct {
	at         time.Duration
	rssKB      int
	goroutines int
	heapKB     uint64
}

func soak(n int, duration, ping, every time.Duration) error {
	cfg := config.Default()
	cfg.PingInterval, cfg.PingTimeout = ping, 5*time.Second
	// Every connection comes from 127.0.0.1: the per-address limits would refuse most of them.
	cfg.MaxConnsPerIP, cfg.HandshakeRate, cfg.MaxConns = 0, 0, 0
	srv, h := app.New(cfg, slog.New(slog.DiscardHandler))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	defer hs.Close()

	runtime.GC()
	baseKB := rssKB() // the server before any connection
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	baseG := runtime.NumGoroutine()
	child := exec.CommandContext(ctx, os.Args[0], "-client", ln.Addr().String(), "-conns", strconv.Itoa(n))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer child.Process.Kill()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "connected") {
		return fmt.Errorf("the client did not connect: %q", lines.Text())
	}
	fmt.Printf("soak: %d connections held, ping interval %v, for %v after a %v warm-up\n", n, ping, duration, warmUp)
	// Steady state first: the first pings allocate each connection's timeout timer, and connections
	// that answer keep a goroutine for a moment, so RSS climbs for a few ping intervals.
	select {
	case <-time.After(warmUp):
	case <-ctx.Done():
		return ctx.Err()
	}

	var samples []sample
	begin := time.Now()
	take := func() sample {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		s := sample{time.Since(begin).Round(time.Second), rssKB(), runtime.NumGoroutine(), m.HeapInuse / 1024}
		fmt.Printf("  %6v  sessions %5d  RSS %7d kB  heap %7d kB  goroutines %d\n", s.at, srv.Sessions(), s.rssKB, s.heapKB, s.goroutines)
		return s
	}
	samples = append(samples, take())
	tick := time.NewTicker(every)
	defer tick.Stop()
	deadline := time.After(duration)
loop:
	for {
		select {
		case <-tick.C:
			samples = append(samples, take())
		case <-deadline:
			break loop
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	samples = append(samples, take())
	child.Process.Signal(syscall.SIGTERM)
	var disconnects uint64 = ^uint64(0)
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "disconnects "); ok {
			disconnects, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	child.Wait()
	// Every connection is gone: the goroutines must come back to what the server had before any
	// (a connection that was just active keeps a goroutine for up to 200 ms, so the count while
	// connections are held moves; this is the exact check).
	leftG := runtime.NumGoroutine()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end) && (srv.Sessions() > 0 || leftG != baseG); leftG = runtime.NumGoroutine() {
		time.Sleep(100 * time.Millisecond)
	}

	first, last := samples[0], samples[len(samples)-1]
	maxRSS := first.rssKB
	for _, s := range samples {
		maxRSS = max(maxRSS, s.rssKB)
	}
	fmt.Printf("\nunexpected disconnects: %d\n", disconnects)
	fmt.Printf("RSS: %d kB with no connection; %d kB at start, %d kB at end (%+.1f%%), %d kB at most; %.1f kB per connection\n",
		baseKB, first.rssKB, last.rssKB, pct(first.rssKB, last.rssKB), maxRSS, float64(last.rssKB-baseKB)/float64(n))
	maxG := first.goroutines
	for _, s := range samples {
		maxG = max(maxG, s.goroutines)
	}
	fmt.Printf("goroutines: %d before any connection, %d at start, %d at end, %d at most, %d after they left\n",
		baseG, first.goroutines, last.goroutines, maxG, leftG)
	fmt.Printf("heap in use: %d kB at start, %d kB at end (%+.1f%%)\n", first.heapKB, last.heapKB, pct(int(first.heapKB), int(last.heapKB)))
	var problems []error
	if disconnects != 0 {
		problems = append(problems, fmt.Errorf("%d unexpected disconnects", disconnects))
	}
	if leftG != baseG {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1) // which ones stayed
		problems = append(problems, fmt.Errorf("goroutines: %d before the connections, %d after they left", baseG, leftG))
	}
	if limit := first.goroutines + n/10 + 10; maxG > limit {
		problems = append(problems, fmt.Errorf("goroutines grew from %d to %d while connections were held", first.goroutines, maxG))
	}
	if pct(first.rssKB, last.rssKB) > 10 {
		problems = append(problems, fmt.Errorf("RSS grew %.1f%%", pct(first.rssKB, last.rssKB)))
	}
	if err := errors.Join(problems...); err != nil {
		return err
	}
	fmt.Println("PASS")
	return nil
}

func pct(a, b int) float64 { return 100 * float64(b-a) / float64(a) }

// hold is the child: it opens n connections, answers pings, and reports how many the server closed.
func hold(addr string, n int) error {
	g, err := loadgen.New(loadgen.Config{Addr: addr})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	_, err = g.DialMany(ctx, n, 64)
	cancel()
	if err != nil {
		return err
	}
	fmt.Println("connected")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	fmt.Printf("disconnects %d\n", g.Disconnects())
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return g.CloseAll(ctx)
}

func rssKB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

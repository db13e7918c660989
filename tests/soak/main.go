// Command soak holds many WebSocket connections on chorus for a long time with a short ping
// interval, optionally with a share of them publishing to rooms of the others, and reports whether
// anything drifts: unexpected disconnects, lost or reordered messages, failed acks, RSS,
// goroutines, heap, warnings or errors logged. After the connections leave, goroutines must be
// back to their count before any connection. -plot draws RSS and goroutines over time into a PNG.
//
// It runs chorus in this process (so that goroutines and heap can be read exactly) and starts
// itself again as a child process that holds the connections with the bench load generator, so the
// RSS measured is the server's alone. `make soak` runs 10 000 idle connections for 10 minutes;
// `make soak-long` 10 000 for 30 minutes with 1 % of them publishing once a second.
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
	"sync/atomic"
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
	var w workload
	flag.IntVar(&w.rooms, "rooms", 100, "rooms the connections are spread over (connection i joins room i mod rooms)")
	flag.Float64Var(&w.publishers, "publishers", 0, "share of the connections that publish once a second to their room (0.01: 1 %)")
	flag.DurationVar(&warmUp, "warm-up", warmUp, "steady-state time before the first sample")
	plot := flag.String("plot", "", "write RSS and goroutines over time to this PNG file")
	client := flag.String("client", "", "internal: hold connections to this address (child mode)")
	flag.Parse()
	var err error
	if *client != "" {
		err = hold(*client, *conns, w)
	} else {
		err = soak(*conns, *duration, *ping, *every, w, *plot)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// warmUp comes before the first sample (-warm-up).
var warmUp = 60 * time.Second

// workload is what the held connections do besides answering heartbeats.
type workload struct {
	rooms      int
	publishers float64
}

func (w workload) args() []string {
	return []string{"-rooms", strconv.Itoa(w.rooms), "-publishers", strconv.FormatFloat(w.publishers, 'f', -1, 64)}
}

type sample struct {
	at         time.Duration
	rssKB      int
	goroutines int
	heapKB     uint64
}

func soak(n int, duration, ping, every time.Duration, w workload, plotFile string) error {
	cfg := config.Default()
	cfg.PingInterval, cfg.PingTimeout = ping, 5*time.Second
	// Every connection comes from 127.0.0.1: the per-address limits would refuse most of them.
	cfg.MaxConnsPerIP, cfg.HandshakeRate, cfg.MaxConns = 0, 0, 0
	// chorus logs warnings and errors to stderr; each one counts against the run.
	logged := countingHandler{Handler: slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), count: new(atomic.Int64)}
	srv, h := app.New(cfg, slog.New(logged))
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
	child := exec.CommandContext(ctx, os.Args[0], append([]string{"-client", ln.Addr().String(), "-conns", strconv.Itoa(n)}, w.args()...)...)
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
	fmt.Printf("soak: %d connections held in %d rooms, %.1f %% of them publishing once a second, ping interval %v, for %v after a %v warm-up\n",
		n, w.rooms, 100*w.publishers, ping, duration, warmUp)
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
	var traffic string
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "disconnects "); ok {
			disconnects, _ = strconv.ParseUint(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(lines.Text(), "traffic "); ok {
			traffic = v
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
	early, late := halfMeans(samples)
	fmt.Printf("goroutines: %d before any connection, %d at start, %d at end, %d at most, %.0f and %.0f on average in the first and second half, %d after they left\n",
		baseG, first.goroutines, last.goroutines, maxG, early, late, leftG)
	fmt.Printf("heap in use: %d kB at start, %d kB at end (%+.1f%%)\n", first.heapKB, last.heapKB, pct(int(first.heapKB), int(last.heapKB)))
	fmt.Printf("warnings and errors logged: %d\n", logged.count.Load())
	var problems []error
	if w.publishers > 0 {
		fmt.Printf("traffic: %s\n", traffic)
		if !strings.HasSuffix(traffic, " ok") {
			problems = append(problems, fmt.Errorf("traffic: %s", traffic))
		}
	}
	if disconnects != 0 {
		problems = append(problems, fmt.Errorf("%d unexpected disconnects", disconnects))
	}
	if c := logged.count.Load(); c > 0 {
		problems = append(problems, fmt.Errorf("%d warnings or errors logged", c))
	}
	if plotFile != "" {
		if err := plotSamples(plotFile, samples, n, w); err != nil {
			problems = append(problems, err)
		} else {
			fmt.Printf("plot: %s\n", plotFile)
		}
	}
	if leftG != baseG {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1) // which ones stayed
		problems = append(problems, fmt.Errorf("goroutines: %d before the connections, %d after they left", baseG, leftG))
	}
	// While connections are held the count moves with the traffic: a connection that was just
	// read keeps its reader goroutine for up to 200 ms, so a sample catches however many were
	// active in that instant. What must not happen is a drift: the second half of the run holding
	// more goroutines on average than the first.
	if early, late := halfMeans(samples); late > 1.5*early+100 {
		problems = append(problems, fmt.Errorf("goroutines drifted: %.0f on average in the first half of the run, %.0f in the second", early, late))
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

// halfMeans returns the mean goroutine count of the first and of the second half of the samples.
func halfMeans(samples []sample) (early, late float64) {
	mean := func(ss []sample) float64 {
		sum := 0
		for _, s := range ss {
			sum += s.goroutines
		}
		return float64(sum) / float64(max(len(ss), 1))
	}
	h := len(samples) / 2
	return mean(samples[:h]), mean(samples[h:])
}

func pct(a, b int) float64 { return 100 * float64(b-a) / float64(a) }

// hold is the child: it opens n connections, has connection i join room i mod rooms, has a share
// of them (the first ones, one per room at most… then two…) publish once a second to their room
// until told to stop, and reports how many connections the server closed and what the traffic did.
func hold(addr string, n int, w workload) error {
	g, err := loadgen.New(loadgen.Config{Addr: addr})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	conns, err := g.DialMany(ctx, n, 64)
	if err == nil && w.publishers > 0 {
		for i, c := range conns {
			if err = c.Join(fmt.Sprintf("soak-%d", i%w.rooms)); err != nil {
				break
			}
		}
		if left := loadgen.WaitAcked(ctx, conns); left > 0 && err == nil {
			err = fmt.Errorf("%d joins not acked", left)
		}
	}
	cancel()
	if err != nil {
		return err
	}
	st := g.ResetStats()
	fmt.Println("connected")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)

	// Publishers: conns[0:p], each once a second, spread evenly over the second. With at most one
	// publisher per room, every member can check that its room's sequence numbers only increase.
	p := int(float64(n) * w.publishers)
	var published, sendErrs uint64
	if p > 0 {
		tick := time.NewTicker(time.Second / time.Duration(p))
		defer tick.Stop()
		seq := make([]int64, p)
	publish:
		for k := 0; ; k++ {
			select {
			case <-sig:
				break publish
			case <-tick.C:
				i := k % p
				if err := conns[i].Publish(fmt.Sprintf("soak-%d", i%w.rooms), "m", seq[i]); err != nil {
					sendErrs++
				}
				seq[i]++
				published++
			}
		}
	} else {
		<-sig
	}
	fmt.Printf("disconnects %d\n", g.Disconnects())
	if p > 0 {
		waitCtx, cancelWait := context.WithTimeout(context.Background(), 10*time.Second)
		missing := loadgen.WaitAcked(waitCtx, conns[:p])
		cancelWait()
		// Each publish reaches the other members of its room: n/rooms − 1 of them (the sender is
		// left out, as socket.to(room) leaves it out in Node).
		perRoom := make([]int, w.rooms)
		for i := range n {
			perRoom[i%w.rooms]++
		}
		var want uint64
		for i := range p {
			want += (uint64(perRoom[i%w.rooms]) - 1) * (published / uint64(p))
		}
		for i := range int(published % uint64(p)) {
			want += uint64(perRoom[i%w.rooms]) - 1
		}
		deadline := time.Now().Add(10 * time.Second)
		for st.Events.Load() < want && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		got, ooo, failed := st.Events.Load(), st.OutOfOrder.Load(), st.AcksFailed.Load()
		verdict := "ok"
		if got != want || ooo > 0 || failed > 0 || missing > 0 || sendErrs > 0 {
			verdict = "FAILED"
		}
		fmt.Printf("traffic published %d, acks missing %d, refused %d, send errors %d; deliveries %d of %d, out of order %d, delivery p50 %.1f ms, p99 %.1f ms; %s\n",
			published, missing, failed, sendErrs, got, want, ooo,
			float64(st.EventDelay.Quantile(0.5))/1e6, float64(st.EventDelay.Quantile(0.99))/1e6, verdict)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return g.CloseAll(ctx)
}

// countingHandler counts the records it handles, its derived handlers' (With, WithGroup) included
// (the soak logs only warnings and errors).
type countingHandler struct {
	slog.Handler
	count *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.count.Add(1)
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(attrs), h.count}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.count}
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

// Command bench measures chorus side by side with Node socket.io (tests/reference/server.mjs) and a
// bare WebSocket server (tests/bench/bare), each on its own core with the load generator on another,
// in alternating rounds, and prints a markdown table of medians with their range and the chorus ÷
// Node ratio, and the targets of issue 3. See tests/bench/README.md.
//
//	go run ./tests/bench [-quick] [-rounds 3] [-out /tmp/chorus-bench/latest.md]
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

type config struct {
	quick      bool
	rounds     int
	out        string
	chorusBin  string
	bareBin    string
	nodeBin    string
	nodeScript string
	serverCPU  string
	genCPU     string
	sources    int
	only       []string
	phases     []string
	cpuProfile string
	dialConc   int
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&cfg.quick, "quick", false, "smoke run: one round, no 10 000-connection figure, short phases (2–3 minutes)")
	fs.IntVar(&cfg.rounds, "rounds", 0, "rounds (default 3, or 1 with -quick)")
	fs.StringVar(&cfg.out, "out", "/tmp/chorus-bench/latest.md", "also write the report to this file")
	fs.StringVar(&cfg.chorusBin, "chorus", "./chorus", "chorus binary (make build)")
	fs.StringVar(&cfg.bareBin, "bare", "", "bare server binary; empty builds ./tests/bench/bare into a temporary directory")
	fs.StringVar(&cfg.nodeBin, "node", "node", "Node.js binary")
	fs.StringVar(&cfg.nodeScript, "node-script", "tests/reference/server.mjs", "the Node socket.io reference server")
	fs.StringVar(&cfg.serverCPU, "server-cpu", "0", "CPU the servers are pinned to (taskset -c)")
	fs.StringVar(&cfg.genCPU, "gen-cpu", "1", "CPU this process, the load generator, pins itself to; empty: no pinning")
	fs.IntVar(&cfg.sources, "sources", 1, "loopback source addresses connections are spread over (127.0.0.1, 127.0.0.2, …), should ephemeral ports run short")
	only := fs.String("only", "bare,node,chorus", "servers to measure, comma-separated")
	fs.IntVar(&cfg.dialConc, "dial-concurrency", 0, "handshakes in flight while opening connections (default 64)")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the load generator's CPU profile to this file")
	phases := fs.String("phases", strings.Join(phaseGroups, ","), "phase groups to run, comma-separated")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.only = strings.Split(*only, ",")
	cfg.phases = strings.Split(*phases, ",")
	var errs []error
	for _, o := range cfg.only {
		if !slices.Contains(targetNames, o) {
			errs = append(errs, fmt.Errorf("-only: unknown server %q", o))
		}
	}
	for _, p := range cfg.phases {
		if !slices.Contains(phaseGroups, p) {
			errs = append(errs, fmt.Errorf("-phases: unknown phase group %q", p))
		}
	}
	if cfg.sources < 1 || cfg.sources > 250 {
		errs = append(errs, errors.New("-sources: between 1 and 250"))
	}
	return cfg, errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	p := defaultPlan()
	if cfg.quick {
		p = quickPlan()
	}
	if cfg.rounds > 0 {
		p.Rounds = cfg.rounds
	}
	if cfg.dialConc > 0 {
		p.DialConcurrency = cfg.dialConc
	}
	if err := raiseFileLimit(p); err != nil {
		return err
	}
	if cfg.genCPU != "" {
		if err := pinSelf(cfg.genCPU); err != nil {
			return err
		}
	}
	if cfg.bareBin == "" {
		dir, err := os.MkdirTemp("", "chorus-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.bareBin = filepath.Join(dir, "bare")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", cfg.bareBin, "./tests/bench/bare").CombinedOutput(); err != nil {
			return fmt.Errorf("build the bare server: %w\n%s", err, out)
		}
	}
	for _, bin := range []string{cfg.chorusBin, cfg.bareBin, cfg.nodeScript} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (run from the repository root after `make build`, or use make bench)", err)
		}
	}

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	b := &bench{cfg: cfg, plan: p, res: newResults()}
	if cfg.sources > 1 { // one source: let the kernel choose, which saves a bind per connection
		for i := range cfg.sources {
			b.sources = append(b.sources, net.IPv4(127, 0, 0, byte(i+1)))
		}
	}
	var selected []target
	for _, t := range targets(cfg) {
		if slices.Contains(cfg.only, t.name) {
			selected = append(selected, t)
		}
	}

	start := time.Now()
	b.runRounds(ctx, selected)
	took := time.Since(start)

	var report bytes.Buffer
	b.writeReport(&report, took)
	stdout.Write(report.Bytes())
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; the report above has the figures measured so far: %w", ctx.Err())
	}
	if cfg.out != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(cfg.out, report.Bytes(), 0o644); err != nil {
			return err
		}
		progress("report written to %s", cfg.out)
	}
	return nil
}

// runRounds runs every round until done or ctx is cancelled. Servers alternate: each round starts
// with a different one, and they take turns within each phase group. A failed group is noted and
// the run goes on.
func (b *bench) runRounds(ctx context.Context, selected []target) {
	for round := 1; round <= b.plan.Rounds; round++ {
		b.round = round
		b.res.startRound(round)
		first := (round - 1) % len(selected)
		order := append(slices.Clone(selected[first:]), selected[:first]...)
		for _, phase := range b.cfg.phases {
			for _, t := range order {
				if phase == "cluster" && !t.cluster {
					continue
				}
				err := b.group(ctx, t, phase, b.phase(phase, t))
				if ctx.Err() != nil {
					b.res.note(t.name, fmt.Sprintf("round %d %s: interrupted", round, phase))
					return
				}
				if err != nil {
					progress("    FAILED: %v", err)
					b.res.note(t.name, fmt.Sprintf("round %d %s failed: %v", round, phase, err))
				}
			}
		}
	}
}

// raiseFileLimit raises the open-file limit to the hard limit, for this process and the servers it
// starts (setting it explicitly stops Go restoring the original soft limit in child processes), and
// checks it is enough.
func raiseFileLimit(p plan) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the open-file limit: %w", err)
	}
	need := uint64(max(p.IdleN, p.ConnN, p.FanMembers) + 1000)
	if lim.Cur < need {
		return fmt.Errorf("open-file limit %d is below the %d this run needs: raise it (ulimit -n) or use tests/bench/run.sh", lim.Cur, need)
	}
	return nil
}

// pinSelf pins every thread of this process to cpus, and runs Go on as many threads as CPUs.
func pinSelf(cpus string) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pin the generator to CPU %s: %w: %s", cpus, err, out)
	}
	n := 0
	for part := range strings.SplitSeq(cpus, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, _ := strconv.Atoi(lo)
		c := a
		if isRange {
			c, _ = strconv.Atoi(hi)
		}
		n += c - a + 1
	}
	runtime.GOMAXPROCS(max(n, 1))
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (b *bench) writeReport(w io.Writer, took time.Duration) {
	p := b.plan
	fmt.Fprintf(w, "# chorus benchmark, %s\n\n", time.Now().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "- machine: %s\n", machine())
	fmt.Fprintf(w, "- servers on CPU %s, load generator on CPU %s (taskset); loopback; %s\n", b.cfg.serverCPU, b.cfg.genCPU, versions(b.cfg))
	fmt.Fprintf(w, "- %d round(s), servers alternating, a fresh server per phase group; cells: median (min–max) over rounds; run took %s\n",
		p.Rounds, took.Round(time.Second))
	fmt.Fprintf(w, "- command: `%s`\n\n", strings.Join(append([]string{"tests/bench"}, os.Args[1:]...), " "))
	b.res.writeTable(w, figures(p))
	fmt.Fprintln(w, "\nWho had the cores (a throughput figure measures the server only if its core was near 100 % busy with it):")
	fmt.Fprintln(w)
	b.res.writeTable(w, loadFigures())
	fmt.Fprintln(w)
	b.res.writeGoals(w, p)
	b.res.writeNotes(w)
}

func machine() string {
	model, cores := "unknown CPU", 0
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "model name"); ok && model == "unknown CPU" {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
			}
			if strings.HasPrefix(line, "processor") {
				cores++
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
				mem = fmt.Sprintf(", %.0f GiB", kb/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d CPUs%s, Linux %s", model, cores, mem, strings.TrimSpace(string(kernel)))
}

func versions(cfg config) string {
	node, _ := exec.Command(cfg.nodeBin, "--version").Output()
	chorus := os.Getenv("BENCH_CHORUS_VERSION") // make bench passes the version it built
	if chorus == "" {
		out, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
		chorus = cmp.Or(strings.TrimSpace(string(out)), "unknown")
	}
	return fmt.Sprintf("Go %s, Node %s, socket.io 4.8.4, chorus %s",
		strings.TrimPrefix(runtime.Version(), "go"), strings.TrimSpace(string(node)), chorus)
}

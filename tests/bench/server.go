package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// target is a server under test.
type target struct {
	name    string
	polling bool // serves Engine.IO long-polling
	cluster bool // joins a cluster through Redis (CHORUS_REDIS_URL, CHORUS_REDIS_PREFIX)
	// command returns the command line and extra environment that serve on addr (host:port).
	command func(addr string) (argv, env []string)
}

func targets(cfg config) []target {
	return []target{
		{name: "bare", command: func(addr string) ([]string, []string) {
			return []string{cfg.bareBin, "-addr", addr}, nil
		}},
		{name: "node", polling: true, cluster: true, command: func(addr string) ([]string, []string) {
			return []string{cfg.nodeBin, cfg.nodeScript}, []string{"CHORUS_ADDR=" + addr, "CHORUS_API_KEY=bench"}
		}},
		{name: "chorus", polling: true, cluster: true, command: func(addr string) ([]string, []string) {
			// The load comes from one address: the per-address connection limits are off.
			return []string{cfg.chorusBin, "-addr", addr, "-log-format", "json", "-log-level", "warn",
				"-max-conns-per-ip", "0", "-handshake-rate", "0", "-max-conns", "0"}, []string{"CHORUS_API_KEY=bench"}
		}},
	}
}

// server is a running server process, pinned to its core, in its own process group.
type server struct {
	name   string
	addr   string
	pid    int
	cmd    *exec.Cmd
	exited chan struct{}
	log    *logTail
}

// nodes are the server processes of one phase group: one, or two sharing a redis-server.
type nodes []*server

// cpuSeconds is the CPU time all of them used.
func (ns nodes) cpuSeconds() (float64, error) {
	total := 0.0
	for _, s := range ns {
		v, err := s.cpuSeconds()
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// rss is their resident set sizes added up, in bytes.
func (ns nodes) rss() (float64, error) {
	total := 0.0
	for _, s := range ns {
		v, err := s.rss()
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// startServer starts t on a free loopback port under `taskset -c cpu`, with env added to its
// environment, and waits until /healthz answers 200.
func startServer(ctx context.Context, t target, cpu string, env ...string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	argv, targetEnv := t.command(addr)
	cmd := exec.Command("taskset", append([]string{"-c", cpu}, argv...)...)
	cmd.Env = append(append(os.Environ(), targetEnv...), env...)
	s := &server{name: t.name, addr: addr, cmd: cmd, exited: make(chan struct{}), log: &logTail{}}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// Own process group, so stop reaches whatever the server starts; killed if we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", t.name, err)
	}
	s.pid = cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitHealthy(ctx, 20*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s did not come up: %w\n%s", t.name, err, s.log.String())
	}
	return s, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *server) waitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/healthz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return nil
			}
		}
		select {
		case <-s.exited:
			return errors.New("process exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to the server's process group, then SIGKILL if it is still there after 5s,
// and reaps it. It reports whether the server exited on SIGTERM.
func (s *server) stop() bool {
	syscall.Kill(-s.pid, syscall.SIGTERM)
	graceful := true
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		graceful = false
	}
	syscall.Kill(-s.pid, syscall.SIGKILL) // anything left in the group
	<-s.exited
	return graceful
}

// cpuSeconds is the user + system CPU time the server has used, all threads.
func (s *server) cpuSeconds() (float64, error) { return procCPU(strconv.Itoa(s.pid)) }

// rss is the server's resident set size in bytes.
func (s *server) rss() (float64, error) { return procRSS(strconv.Itoa(s.pid)) }

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on every Linux we run on.
const clockTicks = 100

// procCPU reads utime + stime of a process ("self" for this one) from /proc/PID/stat.
func procCPU(pid string) (float64, error) {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may hold spaces and parentheses: fields are counted after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%s/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%s/stat", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(utime+stime) / clockTicks, nil
}

// procRSS reads VmRSS from /proc/PID/status, in bytes.
func procRSS(pid string) (float64, error) {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseFloat(f[0], 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%s/status", pid)
}

// coreBusy returns the time, in seconds, core has spent on anything but idling, from /proc/stat;
// ok is false when unknown.
func coreBusy(core int) (busy float64, ok bool) {
	if core < 0 {
		return 0, false
	}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	prefix := "cpu" + strconv.Itoa(core) + " "
	for line := range strings.Lines(string(data)) {
		rest, found := strings.CutPrefix(line, prefix)
		if !found {
			continue
		}
		// user nice system idle iowait irq softirq steal …
		f := strings.Fields(rest)
		if len(f) < 8 {
			return 0, false
		}
		var ticks uint64
		for i, v := range f[:8] {
			if i == 3 || i == 4 {
				continue // idle, iowait
			}
			n, _ := strconv.ParseUint(v, 10, 64)
			ticks += n
		}
		return float64(ticks) / clockTicks, true
	}
	return 0, false
}

// singleCPU returns the CPU number of a taskset list naming exactly one CPU, or -1.
func singleCPU(list string) int {
	n, err := strconv.Atoi(list)
	if err != nil {
		return -1
	}
	return n
}

// logTail keeps the last lines a server wrote and counts its warnings and errors.
type logTail struct {
	mu       sync.Mutex
	lines    []string
	partial  []byte
	warnings int
	samples  []string // the first few warnings and errors
}

const keepLines = 40

func (t *logTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		line := string(t.partial[:i])
		t.partial = t.partial[i+1:]
		if len(t.lines) == keepLines {
			t.lines = t.lines[1:]
		}
		t.lines = append(t.lines, line)
		if isWarning(line) {
			t.warnings++
			if len(t.samples) < 5 {
				t.samples = append(t.samples, line)
			}
		}
	}
	if len(t.partial) > 64<<10 {
		t.partial = t.partial[:0]
	}
	return len(p), nil
}

// isWarning reports whether a log line is a warning or an error worth reporting; the startup
// notice that the HTTP API is disabled is not.
func isWarning(line string) bool {
	l := strings.ToLower(line)
	if strings.Contains(l, `"msg":"listening"`) || strings.Contains(l, "http api disabled") {
		return false
	}
	return strings.Contains(l, `"level":"warn`) || strings.Contains(l, `"level":"error`) ||
		strings.Contains(l, "panic") || strings.Contains(l, "error")
}

func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// Warnings returns how many warnings and errors the server logged, with the first few.
func (t *logTail) Warnings() (int, []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.warnings, append([]string(nil), t.samples...)
}

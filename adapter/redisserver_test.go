package adapter_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server this test process started on a free 127.0.0.1 port, with no
// persistence, in a temporary directory.
type redisServer struct {
	port int
	dir  string
	// persist: every write appended to an AOF, fsynced before Redis answers, so that a restart
	// finds it (startRedisPersistent)
	persist bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// startRedis starts a redis-server for t, killed at t's cleanup. A missing redis-server fails the
// test: these tests run against a real server, never a mock.
func startRedis(t testing.TB) *redisServer {
	t.Helper()
	s, err := newRedisServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// startRedisPersistent is startRedis with an fsynced AOF: a restart keeps every acknowledged write.
func startRedisPersistent(t testing.TB) *redisServer {
	t.Helper()
	s, err := newRedisServerWith(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

func newRedisServer(dir string) (*redisServer, error) { return newRedisServerWith(dir, false) }

func newRedisServerWith(dir string, persist bool) (*redisServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run installs it): the Redis adapter is tested against a real server: %w", err)
	}
	var lastErr error
	for range 5 { // a free port may be taken between choosing it and redis-server binding it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &redisServer{port: port, dir: dir, persist: persist}
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs redis-server on s.port and waits until it answers PING.
func (s *redisServer) start() error {
	aof := []string{"--appendonly", "no"}
	if s.persist {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", ""}, aof...)
	cmd := exec.Command("redis-server", append(args, "--dir", s.dir, "--loglevel", "warning")...)
	logf, err := os.Create(fmt.Sprintf("%s/redis-%d.log", s.dir, s.port))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	var exited atomic.Bool
	waitDone := make(chan struct{})
	go func() {
		cmd.Wait()
		exited.Store(true)
		close(waitDone)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !exited.Load() {
		if ping(s.addr()) == nil {
			s.mu.Lock()
			s.cmd, s.exited = cmd, waitDone
			s.mu.Unlock()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-waitDone
	out, _ := os.ReadFile(logf.Name())
	return fmt.Errorf("redis-server on port %d did not answer: %s", s.port, out)
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// url is the go-redis URL of the server.
func (s *redisServer) url() string { return "redis://" + s.addr() + "/0" }

// stop kills the server (SIGKILL: as a crash would) and waits until its port is closed.
func (s *redisServer) stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// restart starts the server again on the same port.
func (s *redisServer) restart() error {
	s.stop()
	var err error
	for range 50 { // the port may linger for a moment
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// redisClient is a go-redis client of the server at url, closed when the test ends.
func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

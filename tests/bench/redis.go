package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// redisServer is a redis-server of the bench's own: a free loopback port, no persistence, a
// temporary directory, pinned to a core.
type redisServer struct {
	addr   string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startRedis starts redis-server under `taskset -c cpu` and waits until it answers PING.
func startRedis(ctx context.Context, cpu string) (*redisServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server is not installed (Debian: apt-get install -y redis-server): the cluster group needs it")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "chorus-bench-redis-")
	if err != nil {
		return nil, err
	}
	r := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, exited: make(chan struct{})}
	args := []string{"redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--loglevel", "warning"}
	if cpu != "" {
		args = append([]string{"taskset", "-c", cpu}, args...)
	}
	r.cmd = exec.Command(args[0], args[1:]...)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		r.cmd.Wait()
		close(r.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !r.ping() {
		select {
		case <-r.exited:
			os.RemoveAll(dir)
			return nil, errors.New("redis-server exited at start")
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, errors.New("redis-server did not answer PING within 10s")
		}
	}
	return r, nil
}

func (r *redisServer) ping() bool {
	c, err := net.DialTimeout("tcp", r.addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// stop kills redis-server, waits for it and removes its directory.
func (r *redisServer) stop() {
	r.cmd.Process.Kill()
	<-r.exited
	os.RemoveAll(r.dir)
}

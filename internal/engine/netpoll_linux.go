//go:build linux

package engine

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// netpoll watches idle WebSocket connections for input with one epoll instance, so that an idle
// connection has no goroutine (and no stack or read buffer) of its own. When a connection becomes
// readable, a goroutine is started for it that reads what is there, delivers it, and re-arms the
// connection (EPOLLONESHOT: one reader at a time). The waiting goroutine runs only while some
// connection is registered.
type netpoll struct {
	epfd  int
	eprc  syscall.RawConn // epfd, registered with Go's own poller: the waiter parks there, not in a syscall
	wakeR int             // read end of a pipe that wakes the waiter so that it can stop
	wakeW int

	mu      sync.Mutex
	conns   map[int32]*pollHandle
	running bool
}

type pollHandle struct {
	p       *netpoll
	rc      syscall.RawConn
	fd      int32
	onReady func()
}

var (
	pollerOnce sync.Once
	poller     *netpoll // nil where epoll is not available: connections then get a reader goroutine
	pollFile   *os.File // keeps the epoll descriptor open for the life of the process
)

func getPoller() *netpoll {
	pollerOnce.Do(func() {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		var pipe [2]int
		if err := syscall.Pipe2(pipe[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
			syscall.Close(epfd)
			return
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(pipe[0])}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
			syscall.Close(epfd)
			return
		}
		// The epoll descriptor is itself pollable: handing it to Go's runtime poller lets the waiter
		// park like any goroutine waiting for input and be woken by the scheduler, instead of holding
		// a thread in epoll_wait and queueing for a P when it returns (which added seconds of latency
		// on a loaded machine).
		if err := syscall.SetNonblock(epfd, true); err != nil {
			syscall.Close(epfd)
			return
		}
		f := os.NewFile(uintptr(epfd), "chorus-netpoll")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return
		}
		poller = &netpoll{epfd: epfd, eprc: rc, wakeR: pipe[0], wakeW: pipe[1], conns: make(map[int32]*pollHandle)}
		pollFile = f
	})
	return poller
}

const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

func newPollHandle(p *netpoll, rc syscall.RawConn, onReady func()) *pollHandle {
	return &pollHandle{p: p, rc: rc, onReady: onReady}
}

// add registers the connection of h, armed: h.onReady runs on a new goroutine the first time it is
// readable, and again after each rearm. The caller keeps h where onReady can find it before calling
// add, since onReady may run before add returns.
func (p *netpoll) add(h *pollHandle) error {
	rc := h.rc
	var err error
	p.mu.Lock()
	defer p.mu.Unlock()
	cerr := rc.Control(func(fd uintptr) {
		h.fd = int32(fd)
		p.conns[h.fd] = h
		ev := syscall.EpollEvent{Events: pollEvents, Fd: h.fd}
		if err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			delete(p.conns, h.fd)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !p.running {
		p.running = true
		go p.wait()
	}
	return nil
}

// rearm asks for the next readiness of the connection. Done under Control so that the descriptor
// cannot be closed (and reused by another connection) meanwhile.
func (h *pollHandle) rearm() error {
	var err error
	cerr := h.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: pollEvents, Fd: h.fd}
		err = syscall.EpollCtl(h.p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	})
	if err == nil {
		err = cerr
	}
	return err
}

// remove unregisters the connection; it must run before the connection is closed (closing removes it
// from epoll anyway, but the map entry must go). The waiter stops when nothing is registered.
func (h *pollHandle) remove() {
	p := h.p
	h.rc.Control(func(fd uintptr) {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	p.mu.Lock()
	if p.conns[h.fd] == h {
		delete(p.conns, h.fd)
	}
	idle := len(p.conns) == 0 && p.running
	p.mu.Unlock()
	if idle {
		syscall.Write(p.wakeW, []byte{0})
	}
}

func (p *netpoll) wait() {
	events := make([]syscall.EpollEvent, 256)
	var drain [64]byte
	for {
		var n int
		var err error
		rerr := p.eprc.Read(func(fd uintptr) bool {
			n, err = syscall.EpollWait(int(fd), events, 0)
			if errors.Is(err, syscall.EINTR) {
				n, err = 0, nil
			}
			return n > 0 || err != nil
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			// Not expected; stop watching rather than spin. Registered connections keep their
			// state; a new registration starts a new waiter.
			p.mu.Lock()
			p.running = false
			p.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.wakeR {
				for {
					if m, _ := syscall.Read(p.wakeR, drain[:]); m <= 0 {
						break
					}
				}
				p.mu.Lock()
				if len(p.conns) == 0 {
					p.running = false
					p.mu.Unlock()
					return
				}
				p.mu.Unlock()
				continue
			}
			p.mu.Lock()
			h := p.conns[ev.Fd]
			p.mu.Unlock()
			if h != nil {
				go h.onReady()
			}
		}
	}
}

// readNonBlocking reads what the socket has without waiting: 0, nil means nothing was there.
func readNonBlocking(rc syscall.RawConn, b []byte) (n int, err error) {
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = syscall.Read(int(fd), b)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if errors.Is(err, syscall.EAGAIN) {
				n, err = 0, nil
			} else if err == nil && n == 0 {
				err = errEOF
			}
			return true
		}
	})
	if err == nil && cerr != nil {
		err = cerr
	}
	if n < 0 {
		n = 0
	}
	return n, err
}

// pendingInput returns the number of bytes in a socket's receive queue (FIONREAD), or -1.
func pendingInput(fd uintptr) int {
	var n int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); errno != 0 {
		return -1
	}
	return int(n)
}

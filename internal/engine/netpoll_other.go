//go:build !linux

package engine

import (
	"errors"
	"syscall"
)

// Without epoll every WebSocket connection gets a reader goroutine (see netpoll_linux.go).
type netpoll struct{}

type pollHandle struct{}

func getPoller() *netpoll { return nil }

func newPollHandle(*netpoll, syscall.RawConn, func()) *pollHandle { return nil }

func (p *netpoll) add(*pollHandle) error { return errors.New("netpoll: not supported") }
func (h *pollHandle) rearm() error       { return nil }
func (h *pollHandle) remove()            {}

func readNonBlocking(syscall.RawConn, []byte) (int, error) {
	return 0, errors.New("netpoll: not supported")
}

func pendingInput(uintptr) int { return -1 }

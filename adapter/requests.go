package adapter

import (
	"context"
	"sync"
)

// requests are this node's cluster requests (fetchSockets, serverSideEmit with ack, broadcast with
// ack) waiting for the other nodes' responses, by request id. M is how the adapter's mode decodes
// a message: *wireMessage in pub/sub mode, *clusterMessage in streams mode.
type requests[M any] struct {
	mu sync.Mutex
	m  map[string]*request[M]
}

// request is one request of this node waiting for responses.
type request[M any] struct {
	mu        sync.Mutex
	responses []M
	notify    chan struct{} // capacity 1: a response arrived
	acks      *ackCollector // broadcast with ack: responses go to it instead
}

// begin registers a request under a new id; end must follow.
func (rs *requests[M]) begin(acks *ackCollector) (string, *request[M]) {
	id := randomID()
	return id, rs.put(id, acks)
}

// put registers a request under id.
func (rs *requests[M]) put(id string, acks *ackCollector) *request[M] {
	r := &request[M]{notify: make(chan struct{}, 1), acks: acks}
	rs.mu.Lock()
	if rs.m == nil {
		rs.m = make(map[string]*request[M])
	}
	rs.m[id] = r
	rs.mu.Unlock()
	return r
}

func (rs *requests[M]) end(id string) {
	rs.mu.Lock()
	delete(rs.m, id)
	rs.mu.Unlock()
}

// get returns the request of this node with that id; nil for another node's, or one that has
// ended.
func (rs *requests[M]) get(id string) *request[M] {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.m[id]
}

// add hands the request a response; it never blocks.
func (r *request[M]) add(m M) {
	r.mu.Lock()
	r.responses = append(r.responses, m)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// collect waits for want responses, calling add for each, until ctx is done.
func (r *request[M]) collect(ctx context.Context, want int, add func(M)) error {
	got := 0
	for got < want {
		select {
		case <-r.notify:
		case <-ctx.Done():
			return timeoutError(ctx)
		}
		r.mu.Lock()
		batch := r.responses
		r.responses = nil
		r.mu.Unlock()
		for _, m := range batch {
			if got < want {
				add(m)
				got++
			}
		}
	}
	return nil
}

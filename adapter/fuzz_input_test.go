package adapter

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// fakeNamespace has sockets "s1" and "s2" that answer every ack and every server-side event.
type fakeNamespace struct{ delivered int }

func (f *fakeNamespace) Name() string { return "/" }
func (f *fakeNamespace) Deliver(p *protocol.Packet, ids []string, volatile bool) {
	f.delivered += len(ids)
	p.Encode()
}
func (f *fakeNamespace) DeliverWithAck(_ context.Context, p *protocol.Packet, ids []string, onAck func(Value)) int {
	for range ids {
		onAck(Value{JSON: json.RawMessage(`{"_placeholder":true,"num":0}`), Attachments: [][]byte{{1}}})
	}
	return len(ids)
}
func (f *fakeNamespace) DescribeLocal(ids []string) []SocketInfo {
	out := []SocketInfo{}
	for _, id := range ids {
		out = append(out, SocketInfo{ID: id, Handshake: json.RawMessage(`{}`), Rooms: []string{id}, Data: json.RawMessage(`{}`)})
	}
	return out
}
func (f *fakeNamespace) ReleaseSession(string)          {}
func (f *fakeNamespace) JoinLocal(_, _ []string)        {}
func (f *fakeNamespace) LeaveLocal(_, _ []string)       {}
func (f *fakeNamespace) DisconnectLocal([]string, bool) {}
func (f *fakeNamespace) OnServerSideEmit(_ string, _ []json.RawMessage, ack func(json.RawMessage)) {
	if ack != nil {
		ack(json.RawMessage(`"ok"`))
	}
}

// offlineRedis is a Redis adapter's state without connections: what it publishes stays queued.
func offlineRedis() *Redis {
	return &Redis{
		opts:  RedisOptions{Prefix: "p", RequestTimeout: DefaultRequestTimeout},
		log:   slog.New(slog.DiscardHandler),
		uid:   "me",
		ctx:   context.Background(),
		queue: make(chan outMsg, queueMessages),
	}
}

// FuzzAdapterInput feeds anything to the handlers of the three kinds of channel: nothing panics,
// and a message that does not decode is counted as malformed.
func FuzzAdapterInput(f *testing.F) {
	for _, m := range nodeMessages(f) {
		kind := map[string]uint8{"broadcast": 0, "request": 1, "response": 2}[m.kind]
		f.Add(kind, false, m.payload)
		if kind == 2 {
			f.Add(kind, true, m.payload)
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, ackRequest bool, payload []byte) {
		r := offlineRedis()
		nsp := &fakeNamespace{}
		a := newRedisAdapter(r, nsp)
		a.Join("s1", "s1", "room")
		a.Join("s2", "s2")
		var undecodable bool
		switch kind % 3 {
		case 0:
			_, _, _, err := decodeBroadcast(payload)
			undecodable = err != nil
			a.onBroadcast(payload)
		case 1:
			m, err := decodeMessage(payload)
			undecodable = err != nil || m.Type == nil
			a.onRequest(payload)
		default:
			m, err := decodeMessage(payload)
			undecodable = err != nil
			if err == nil && m.RequestID != nil {
				// A request of this node waits for it.
				var acks *ackCollector
				if ackRequest {
					acks = newAckCollector(2)
				}
				a.pending.put(*m.RequestID, acks)
			}
			a.onResponse(payload)
		}
		if undecodable && r.malformed.Load() != 1 {
			t.Fatalf("an undecodable message was counted %d times", r.malformed.Load())
		}
		for len(r.queue) > 0 { // what it answered must decode as what Node expects
			m := <-r.queue
			if _, err := decodeMessage(m.payload); err != nil {
				t.Fatalf("published %q on %s, which does not decode: %v", m.payload, m.channel, err)
			}
		}
	})
}

// FuzzDispatch feeds any channel and payload to the subscriber's dispatch, as Redis would deliver
// them to the namespace's pattern or channels.
func FuzzDispatch(f *testing.F) {
	for _, m := range nodeMessages(f) {
		ch := strings.Replace(m.channel, "seed", "p", 1)
		f.Add(m.kind == "broadcast", ch, m.payload)
	}
	f.Add(true, "p#/#", []byte{0x90})
	f.Add(true, "p#/#room", []byte{0x90})
	f.Add(true, "p#/##", []byte{0x90})
	f.Fuzz(func(t *testing.T, pattern bool, channel string, payload []byte) {
		r := offlineRedis()
		r.patterns = make(map[string]*redisAdapter)
		r.channels = make(map[string]route)
		a := newRedisAdapter(r, &fakeNamespace{})
		a.Join("s1", "s1", "room")
		r.patterns[a.pattern] = a
		r.channels[a.requestChannel] = route{a: a}
		r.channels[a.responseChannel] = route{a: a, response: true}
		m := &redis.Message{Channel: channel, Payload: string(payload)}
		if pattern {
			m.Pattern = a.pattern
		}
		r.dispatch(m)
		for len(r.queue) > 0 {
			<-r.queue
		}
	})
}

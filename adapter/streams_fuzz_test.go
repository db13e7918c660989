package adapter

import (
	"encoding/json"
	"testing"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// streamsSeeds are messages as the streams adapters write them (chorus's encoders, in Node's
// format: TestStreams* and the e2e suite check that Node reads them).
func streamsSeeds(f *testing.F) (pubsub [][]byte, entries []map[string]any) {
	p := &protocol.Packet{Type: protocol.Event, Nsp: "/", Data: json.RawMessage(`["m",{"_placeholder":true,"num":0},1.5]`), Attachments: [][]byte{{1, 2}}}
	text := &protocol.Packet{Type: protocol.Event, Nsp: "/", Data: json.RawMessage(`["m",{"a":[null,true]}]`)}
	opts := BroadcastOptions{Rooms: []string{"r"}, Except: []string{"x"}}
	add := func(b []byte, err error) {
		if err != nil {
			f.Fatal(err)
		}
		pubsub = append(pubsub, b)
	}
	add(encodeCluster("u", "/", msgBroadcast, 3, func(e *msgEncoder) {
		e.str("packet")
		e.packet("/", p)
		e.str("requestId")
		e.str("q")
		e.str("opts")
		e.opts(opts, 1000)
	}))
	add(encodeCluster("u", "/", msgFetchSockets, 2, func(e *msgEncoder) {
		e.str("opts")
		e.opts(opts, 0)
		e.str("requestId")
		e.str("q")
	}))
	add(encodeCluster("u", "/", msgServerSideEmit, 2, func(e *msgEncoder) {
		e.str("requestId")
		e.str("q")
		e.str("packet")
		ssePacket(e, "ev", []json.RawMessage{json.RawMessage(`{"k":1}`)})
	}))
	add(encodeCluster("u", "/", msgBroadcastAck, 2, func(e *msgEncoder) {
		e.str("requestId")
		e.str("q")
		e.str("packet")
		e.value(Value{JSON: json.RawMessage(`"ok"`)})
	}))
	add(encodeCluster("u", "/", msgReleaseSession, 1, func(e *msgEncoder) {
		e.str("pid")
		e.str("p")
	}))
	for _, pk := range []*protocol.Packet{p, text} {
		data, err := encodeStreamBroadcast("/", pk, opts)
		if err != nil {
			f.Fatal(err)
		}
		entries = append(entries, values(streamValues("u", "/", msgBroadcast, data)))
	}
	closeConn := true
	entries = append(entries, values(streamValues("u", "/", msgSocketsJoin, encodeStreamOps(opts, []string{"j"}, nil))))
	entries = append(entries, values(streamValues("u", "/", msgDisconnectSockets, encodeStreamOps(opts, nil, &closeConn))))
	return pubsub, entries
}

func values(l []string) map[string]any {
	m := make(map[string]any, len(l)/2)
	for i := 0; i+1 < len(l); i += 2 {
		m[l[i]] = l[i+1]
	}
	return m
}

// offlineStreams is a streams adapter of an offline Redis, with sockets s1 (in "r") and s2.
func offlineStreams() (*Redis, *streamsAdapter, *fakeNamespace) {
	r := offlineRedis()
	r.streams = newStreamState("p", DefaultStreamMaxLen)
	nsp := &fakeNamespace{}
	a := newStreamsAdapter(r, nsp)
	a.EnableRecovery(RecoveryOptions{})
	a.Join("s1", "s1", "r")
	a.Join("s2", "s2")
	return r, a, nsp
}

// FuzzStreamsPubSub feeds anything to a namespace's public and private channels: nothing panics,
// what does not decode is counted as malformed, and every answer decodes.
func FuzzStreamsPubSub(f *testing.F) {
	pubsub, _ := streamsSeeds(f)
	for _, b := range pubsub {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, a, _ := offlineStreams()
		_, err := decodeClusterMessage(payload)
		if m, err := decodeClusterMessage(payload); err == nil && m.Data.RequestID != nil {
			a.pending.put(*m.Data.RequestID, newAckCollector(2))
		}
		a.onPubSub(payload)
		if err != nil && r.malformed.Load() != 1 {
			t.Fatalf("an undecodable message was counted %d times", r.malformed.Load())
		}
		for len(r.queue) > 0 {
			m := <-r.queue
			if _, err := decodeClusterMessage(m.payload); err != nil {
				t.Fatalf("published %q, which does not decode: %v", m.payload, err)
			}
		}
	})
}

// FuzzStreamEntry feeds any fields to the handling of a stream entry.
func FuzzStreamEntry(f *testing.F) {
	_, entries := streamsSeeds(f)
	for _, e := range entries {
		f.Add(e["uid"].(string), e["nsp"].(string), e["type"].(string), e["data"].(string))
	}
	f.Add("u", "/", "3", "not base64!")
	f.Fuzz(func(t *testing.T, uid, nsp, typ, data string) {
		r, a, _ := offlineStreams()
		m, err := decodeStreamEntry(map[string]any{"uid": uid, "nsp": nsp, "type": typ, "data": data})
		if err != nil {
			return
		}
		a.onMessage(m, "1-1")
		for len(r.queue) > 0 {
			<-r.queue
		}
	})
}

// FuzzDecodeSession: a session key's value decodes or is refused, never a panic.
func FuzzDecodeSession(f *testing.F) {
	b, _ := encodeSession(Session{SID: "s", PID: "p", Rooms: []string{"s"}, Data: json.RawMessage(`{"a":1}`), From: "1-1"})
	f.Add(base64Std(b))
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		decodeSession(raw)
	})
}

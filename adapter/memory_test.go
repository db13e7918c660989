package adapter_test

import (
	"slices"
	"testing"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/protocol"
)

type recorder struct {
	nopLocal
	got []string
}

func (r *recorder) Name() string { return "/" }
func (r *recorder) Deliver(p *protocol.Packet, ids []string, volatile bool) {
	r.got = append(r.got, ids...)
}

func TestMemorySelection(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	m := adapter.NewMemory(rec)
	for _, id := range []string{"a", "b", "c", "d"} {
		m.Join(id, id) // every socket joins its own-id room on connect
	}
	m.Join("a", "red", "blue")
	m.Join("b", "red")
	m.Join("c", "blue")

	tests := []struct {
		name string
		opts adapter.BroadcastOptions
		want []string
	}{
		{"everyone", adapter.BroadcastOptions{}, []string{"a", "b", "c", "d"}},
		{"one room", adapter.BroadcastOptions{Rooms: []string{"red"}}, []string{"a", "b"}},
		{"two rooms, no duplicates", adapter.BroadcastOptions{Rooms: []string{"red", "blue"}}, []string{"a", "b", "c"}},
		{"room except a socket", adapter.BroadcastOptions{Rooms: []string{"red"}, Except: []string{"a"}}, []string{"b"}},
		{"everyone except a room", adapter.BroadcastOptions{Except: []string{"blue"}}, []string{"b", "d"}},
		{"a socket id as a room", adapter.BroadcastOptions{Rooms: []string{"d"}}, []string{"d"}},
		{"socket ids and a room", adapter.BroadcastOptions{Rooms: []string{"d", "red"}}, []string{"a", "b", "d"}},
		{"unknown room", adapter.BroadcastOptions{Rooms: []string{"green"}}, nil},
	}
	for _, tc := range tests {
		rec.got = nil
		m.Broadcast(&protocol.Packet{}, tc.opts)
		slices.Sort(rec.got)
		if !slices.Equal(rec.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, rec.got, tc.want)
		}
	}

	if got := m.Rooms("a"); !slices.Equal(sorted(got), []string{"a", "blue", "red"}) {
		t.Errorf("Rooms(a) = %v", got)
	}
	m.Leave("a", "red")
	m.LeaveAll("c")
	rec.got = nil
	m.Broadcast(&protocol.Packet{}, adapter.BroadcastOptions{Rooms: []string{"red", "blue", "c"}})
	if slices.Sort(rec.got); !slices.Equal(rec.got, []string{"a", "b"}) {
		t.Errorf("after leaving: %v", rec.got)
	}
	if got := m.Rooms("c"); got != nil {
		t.Errorf("Rooms of a gone socket = %v", got)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

// encoder is a namespace whose Deliver encodes the packet once, as sio's does.
type encoder struct{ nopLocal }

func (encoder) Name() string { return "/" }
func (encoder) Deliver(p *protocol.Packet, ids []string, volatile bool) {
	_ = p.Encode()
}

// BenchmarkMemoryBroadcast: a publish to a room of 10 with recovery off and on (stamped, kept,
// under the log's lock), from parallel goroutines.
func BenchmarkMemoryBroadcast(b *testing.B) {
	for _, recovery := range []bool{false, true} {
		b.Run(map[bool]string{false: "recovery-off", true: "recovery-on"}[recovery], func(b *testing.B) {
			m := adapter.NewMemory(encoder{})
			if recovery {
				m.EnableRecovery(adapter.RecoveryOptions{})
			}
			defer m.Close()
			for i := range 10 {
				id := string(rune('a' + i))
				m.Join(id, id, "room")
			}
			p := &protocol.Packet{Type: protocol.Event, Nsp: "/", Data: []byte(`["chat",{"text":"hello, world","n":12345}]`)}
			opts := adapter.BroadcastOptions{Rooms: []string{"room"}, Except: []string{"a"}}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					m.Broadcast(p, opts)
				}
			})
		})
	}
}

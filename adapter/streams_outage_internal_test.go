package adapter

import (
	"slices"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Offsets of the outage log: this node's are positions after a stream entry; another node's (or
// this node's before a restart) count as their stream id; anything else is refused.
func TestOutageOffsets(t *testing.T) {
	a := &streamsAdapter{r: &Redis{uid: "me"}}
	for _, c := range []struct {
		in   string
		want position
		ok   bool
	}{
		{"5-1", position{streamID{5, 1}, 0}, true},
		{"5-1:me:7", position{streamID{5, 1}, 7}, true},
		{"5-1:other:7", position{streamID{5, 1}, 0}, true},
		{"5-1:me:x", position{}, false},
		{"5-1:me", position{}, false},
		{"x:me:1", position{}, false},
		{"", position{}, false},
	} {
		got, ok := a.parseOffset(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("parseOffset(%q) = %v %v, want %v %v", c.in, got, ok, c.want, c.ok)
		}
	}
	if s := localOffset(position{streamID{5, 1}, 7}, "me"); s != "5-1:me:7" {
		t.Errorf("localOffset = %q", s)
	}
}

// The replay merges stream entries and local entries in delivery order: a local entry after the
// stream entry it followed, before any later one.
func TestOutageMerge(t *testing.T) {
	pk := func(s string) *protocol.Packet { return &protocol.Packet{Offset: s} }
	stream := []*protocol.Packet{pk("1-0"), pk("2-0"), pk("3-0")}
	ids := []streamID{{1, 0}, {2, 0}, {3, 0}}
	local := []localEntry{
		{pos: position{streamID{0, 0}, 1}, p: pk("L0")},
		{pos: position{streamID{2, 0}, 2}, p: pk("L2a")},
		{pos: position{streamID{2, 0}, 3}, p: pk("L2b")},
		{pos: position{streamID{3, 0}, 4}, p: pk("L3")},
	}
	var got []string
	for _, p := range mergeMissed(stream, ids, local) {
		got = append(got, p.Offset)
	}
	if want := []string{"L0", "1-0", "2-0", "L2a", "L2b", "3-0", "L3"}; !slices.Equal(got, want) {
		t.Fatalf("merged %v, want %v", got, want)
	}
}

// The log drops entries past KeepPackets or its bounds; a restore from before a dropped entry is
// refused, one after it gets the rest.
func TestOutageLogTrim(t *testing.T) {
	a := &streamsAdapter{r: &Redis{uid: "me"}}
	now := time.Now()
	for i := range 5 {
		a.outage.entries = append(a.outage.entries, localEntry{pos: position{streamID{1, 0}, uint64(i + 1)}, at: now.Add(time.Duration(i-10) * time.Second), p: &protocol.Packet{}})
	}
	a.trimOutageLocked(now, 8*time.Second) // drops the entries 10 and 9 s old
	if len(a.outage.entries) != 3 || a.outage.trimmed == nil || *a.outage.trimmed != (position{streamID{1, 0}, 2}) {
		t.Fatalf("after trim: %d entries, trimmed %v", len(a.outage.entries), a.outage.trimmed)
	}
	if _, ok := a.missedLocal(position{streamID{1, 0}, 1}, nil); ok {
		t.Error("a restore from before a dropped entry was not refused")
	}
	if got, ok := a.missedLocal(position{streamID{1, 0}, 2}, nil); !ok || len(got) != 3 {
		t.Errorf("a restore after the dropped entries got %d, %v", len(got), ok)
	}
}

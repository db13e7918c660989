package adapter

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// logClock is a settable clock for a recoveryLog.
type logClock struct{ t time.Time }

func (c *logClock) now() time.Time          { return c.t }
func (c *logClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTestLog(o RecoveryOptions) (*recoveryLog, *logClock) {
	l := newRecoveryLog(o)
	c := &logClock{t: time.Unix(1_700_000_000, 0)}
	l.now = c.now
	return l, c
}

func event(data string) *protocol.Packet {
	return &protocol.Packet{Type: protocol.Event, Nsp: "/", Data: json.RawMessage(`["m",` + data + `]`)}
}

// send broadcasts n events 0..n-1 (offset data) to rooms and returns their offsets.
func send(l *recoveryLog, rooms []string, from, n int) []string {
	var offs []string
	for i := from; i < from+n; i++ {
		l.broadcast(event(fmt.Sprint(i)), BroadcastOptions{Rooms: rooms}, func(q *protocol.Packet) { offs = append(offs, q.Offset) })
	}
	return offs
}

// restored restores pid from offset and returns the replayed events' data, or the error.
func restored(l *recoveryLog, pid, offset string) ([]string, Session, error) {
	var (
		got  []string
		sess Session
	)
	err := l.restore(pid, offset, func(s Session, missed []*protocol.Packet) {
		sess = s
		for _, p := range missed {
			var args []json.RawMessage
			json.Unmarshal(p.Data, &args)
			got = append(got, string(args[1]))
			if p.Offset == "" {
				got = append(got, "NO OFFSET")
			}
		}
	})
	return got, sess, err
}

func TestRecoveryLogRestore(t *testing.T) {
	t.Parallel()
	l, _ := newTestLog(RecoveryOptions{})
	from := l.head()
	offs := send(l, []string{"r"}, 0, 5)
	send(l, []string{"other"}, 100, 2)
	l.persist(Session{SID: "s", PID: "p", Rooms: []string{"s", "r"}, Data: json.RawMessage(`{}`), From: from})

	tests := []struct {
		name, offset string
		want         string
	}{
		{"the client's offset", offs[2], "3 4"},
		{"no offset: from the session's From", "", "0 1 2 3 4"},
		{"an offset of another process (or an app's string)", "zzz.1", "0 1 2 3 4"},
		{"an offset from the future", l.offset(999), "0 1 2 3 4"},
		{"the last offset", offs[4], ""},
	}
	for _, tc := range tests {
		l.persist(Session{SID: "s", PID: "p", Rooms: []string{"s", "r"}, From: from})
		got, s, err := restored(l, "p", tc.offset)
		if err != nil || strings.Join(got, " ") != tc.want || s.SID != "s" {
			t.Errorf("%s: replayed %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, _, err := restored(l, "p", ""); !errors.Is(err, ErrNoSession) {
		t.Errorf("a session restored twice: %v", err)
	}
	if _, _, err := restored(l, "unknown", ""); !errors.Is(err, ErrNoSession) {
		t.Errorf("unknown pid: %v", err)
	}
}

func TestRecoveryLogRoomsAndExcept(t *testing.T) {
	t.Parallel()
	l, _ := newTestLog(RecoveryOptions{})
	from := l.head()
	deliver := func(*protocol.Packet) {}
	l.broadcast(event("1"), BroadcastOptions{Rooms: []string{"a"}}, deliver)
	l.broadcast(event("2"), BroadcastOptions{}, deliver)                                            // everyone
	l.broadcast(event("3"), BroadcastOptions{Rooms: []string{"a"}, Except: []string{"s"}}, deliver) // its own id excluded
	l.broadcast(event("4"), BroadcastOptions{Rooms: []string{"b", "s"}}, deliver)                   // its id as a room
	l.broadcast(event("5"), BroadcastOptions{Rooms: []string{"a"}, Except: []string{"c"}}, deliver)
	l.broadcast(event("6"), BroadcastOptions{Rooms: []string{"a"}, Except: []string{"zzz"}}, deliver)
	l.persist(Session{SID: "s", PID: "p", Rooms: []string{"s", "a", "c"}, From: from})
	got, _, err := restored(l, "p", "")
	if err != nil || strings.Join(got, " ") != "1 2 4 6" {
		t.Fatalf("replayed %q, %v; want 1 2 4 6", got, err)
	}
}

func TestRecoveryLogBounds(t *testing.T) {
	t.Parallel()
	t.Run("packets", func(t *testing.T) {
		l, _ := newTestLog(RecoveryOptions{MaxPackets: 10})
		from := l.head()
		offs := send(l, []string{"r"}, 0, 25)
		if n, _, _ := l.stats(); n != 10 {
			t.Fatalf("kept %d packets, want 10", n)
		}
		l.persist(Session{SID: "s", PID: "p", Rooms: []string{"r"}, From: from})
		if _, _, err := restored(l, "p", ""); !errors.Is(err, ErrNoSession) {
			t.Errorf("restored though packets it missed were dropped: %v", err)
		}
		l.persist(Session{SID: "s", PID: "p", Rooms: []string{"r"}, From: from})
		if got, _, err := restored(l, "p", offs[14]); err != nil || strings.Join(got, " ") != "15 16 17 18 19 20 21 22 23 24" {
			t.Errorf("from the oldest kept: %q, %v", got, err)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		l, _ := newTestLog(RecoveryOptions{})
		l.maxBytes = 1 << 20
		big := `"` + strings.Repeat("x", 64<<10) + `"`
		for range 100 {
			l.broadcast(event(big), BroadcastOptions{}, func(*protocol.Packet) {})
		}
		if n, b, _ := l.stats(); b > l.maxBytes || n >= 16 || n < 10 {
			t.Fatalf("kept %d packets, %d bytes; want at most %d bytes", n, b, l.maxBytes)
		}
	})
	t.Run("time and sessions", func(t *testing.T) {
		l, clock := newTestLog(RecoveryOptions{MaxDisconnection: time.Minute, KeepPackets: 2 * time.Minute})
		from := l.head()
		send(l, []string{"r"}, 0, 3)
		l.persist(Session{SID: "s", PID: "late", Rooms: []string{"r"}, From: from})
		l.persist(Session{SID: "s2", PID: "kept", Rooms: []string{"r"}, From: from})
		clock.advance(61 * time.Second)
		l.sweep()
		if _, _, s := l.stats(); s != 0 {
			t.Errorf("%d sessions kept after the window", s)
		}
		if _, _, err := restored(l, "late", ""); !errors.Is(err, ErrNoSession) {
			t.Errorf("restored after the window: %v", err)
		}
		clock.advance(60 * time.Second)
		l.sweep()
		if n, b, _ := l.stats(); n != 0 || b != 0 {
			t.Errorf("kept %d packets (%d bytes) past KeepPackets", n, b)
		}
		l.close()
		if n, _, s := l.stats(); n != 0 || s != 0 {
			t.Errorf("closed log keeps %d packets, %d sessions", n, s)
		}
	})
}

// A session whose window has passed is not restored even before a sweep removes it.
func TestRecoveryLogExpiredBeforeSweep(t *testing.T) {
	t.Parallel()
	l, clock := newTestLog(RecoveryOptions{MaxDisconnection: time.Second})
	l.persist(Session{SID: "s", PID: "p", From: l.head()})
	clock.advance(time.Second)
	if _, _, err := restored(l, "p", ""); !errors.Is(err, ErrNoSession) {
		t.Fatalf("restored at the end of the window: %v", err)
	}
}

func TestShouldInclude(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rooms, except []string
		want          bool
	}{
		{nil, nil, true},
		{[]string{"a"}, nil, true},
		{[]string{"x"}, nil, false},
		{nil, []string{"id"}, false},
		{[]string{"a"}, []string{"b"}, false},
		{[]string{"x", "id"}, []string{"y"}, true},
	}
	for _, tc := range tests {
		if got := shouldInclude([]string{"id", "a", "b"}, tc.rooms, tc.except); got != tc.want {
			t.Errorf("rooms %v except %v: %v, want %v", tc.rooms, tc.except, got, tc.want)
		}
	}
}

func TestStreamIDs(t *testing.T) {
	t.Parallel()
	a, _ := newStreamID("1700000000000-9")
	b, _ := newStreamID("1700000000000-10")
	c, _ := newStreamID("1700000000001-0")
	if !a.less(b) || !b.less(c) || c.less(a) || a.next().String() != "1700000000000-10" {
		t.Fatal("stream id order")
	}
	for _, bad := range []string{"", "1", "a-1", "1-b", "-1", "1-"} {
		if _, ok := newStreamID(bad); ok {
			t.Errorf("%q parsed as a stream id", bad)
		}
	}
}

func TestSessionRoundTrip(t *testing.T) {
	t.Parallel()
	s := Session{SID: "sid", PID: "pid", Rooms: []string{"sid", "room"}, Data: json.RawMessage(`{"user":{"n":1}}`), From: "1-2"}
	b, err := encodeSession(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSession(base64Std(b))
	if err != nil || got.SID != s.SID || got.PID != s.PID || strings.Join(got.Rooms, ",") != "sid,room" || string(got.Data) != `{"user":{"n":1}}` || got.From != "1-2" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chorus-rt/chorus/tests/bench/loadgen"
)

// TestGeneratorAgainstBare runs the load generator against the bare server over the wire: connect,
// join with acks, a publish fanned out to the other members in order, and a closed loop of joins.
func TestGeneratorAgainstBare(t *testing.T) {
	defer goleak.VerifyNone(t) // runs last: every reader and server goroutine must have ended
	ts := httptest.NewServer(newServer(time.Minute).handler())
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	g, err := loadgen.New(loadgen.Config{Addr: strings.TrimPrefix(ts.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := g.CloseAll(ctx); err != nil {
			t.Error(err)
		}
	}()
	conns, err := g.DialMany(ctx, 5, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if c.SID() == "" {
			t.Fatal("connection without a socket id")
		}
	}

	st := g.ResetStats()
	for _, c := range conns {
		if err := c.Join("r"); err != nil {
			t.Fatal(err)
		}
	}
	if left := loadgen.WaitAcked(ctx, conns); left > 0 {
		t.Fatalf("%d join acks missing", left)
	}
	if ok := st.AcksOK.Load(); ok != 5 {
		t.Fatalf("join: %d acks ok, want 5", ok)
	}

	// The publisher is a member too: the other four receive each message.
	const publishes = 10
	for seq := range int64(publishes) {
		if err := conns[0].Publish("r", "m", seq); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(ctx, t, "deliveries", func() bool { return st.Events.Load() == 4*publishes })
	if left := loadgen.WaitAcked(ctx, conns); left > 0 {
		t.Fatalf("%d publish acks missing", left)
	}
	if n := st.OutOfOrder.Load(); n > 0 {
		t.Errorf("%d deliveries out of order", n)
	}
	if n := st.EventDelay.Count(); n != 4*publishes {
		t.Errorf("%d deliveries timed, want %d", n, 4*publishes)
	}

	st = g.ResetStats()
	if err := g.StartLoop(conns, "r", 3); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "closed-loop acks", func() bool { return st.AcksOK.Load() >= 500 })
	g.StopLoop()
	if left := loadgen.WaitAcked(ctx, conns); left > 0 {
		t.Fatalf("%d closed-loop acks missing", left)
	}
	if sent, ok := st.AcksSent.Load(), st.AcksOK.Load(); sent != ok || st.AcksFailed.Load() != 0 {
		t.Errorf("closed loop: %d sent, %d ok, %d failed", sent, ok, st.AcksFailed.Load())
	}
	if d := g.Disconnects(); d != 0 {
		t.Errorf("%d unexpected disconnects", d)
	}
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

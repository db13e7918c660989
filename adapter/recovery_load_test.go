package adapter_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// TestRecoveryUnderLoad drops a client again and again while three others publish to its room
// as fast as they can, and has it come back each time without waiting for the server to notice
// (on the same node, or on the other node in streams mode): every message reaches it exactly
// once, each publisher's in order.
func TestRecoveryUnderLoad(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"memory", "pubsub", "streams"} { // one after the other: it is heavy under -race
		t.Run(mode, func(t *testing.T) {
			var nodes []*node
			switch mode {
			case "memory":
				nodes = []*node{newNode(t, "A", "", "socket.io", nil)}
			case "pubsub":
				nodes = []*node{newNode(t, "A", sharedRedis(t).url(), testPrefix(t), nil)}
			default:
				nodes, _ = streamsNodes(t, sharedRedis(t), 2, func(c *config.Config) { c.RedisMode = "streams" })
			}
			const publishers, each = 3, 150
			c := dial(t, nodes[0].url)
			join(t, c, "load")
			var wg sync.WaitGroup
			for i := range publishers {
				p := dial(t, nodes[i%len(nodes)].url)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := range each {
						if err := p.Emit("publish", map[string]any{"room": "load", "event": fmt.Sprint("p", i), "data": n}); err != nil {
							t.Error(err)
							return
						}
						if n%50 == 0 {
							time.Sleep(time.Millisecond)
						}
					}
				}()
			}
			got := make(map[string][]string)
			total := 0
			offset := "" // of the last event read: what the client has processed (not what its reader buffered)
			read := func(c *siotest.Client, n int) {
				for range n {
					ev := next(t, c)
					got[ev.Name] = append(got[ev.Name], string(ev.Args[0]))
					total++
					offset = ev.Offset
				}
			}
			for round := range 5 {
				read(c, 30)
				c.Close()
				to := nodes[(round+1)%len(nodes)]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				back, err := siotest.Dial(ctx, to.url, "/", map[string]string{"pid": c.PID, "offset": offset})
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(back.Close)
				if !back.Recovered || back.ID != c.ID {
					t.Fatalf("round %d: recovered %v", round, back.Recovered)
				}
				c = back
			}
			wg.Wait()
			read(c, publishers*each-total)
			for i := range publishers {
				name := fmt.Sprint("p", i)
				if len(got[name]) != each {
					t.Fatalf("%s: %d messages, want %d", name, len(got[name]), each)
				}
				for n, v := range got[name] {
					if v != fmt.Sprint(n) {
						t.Fatalf("%s: message %d is %s (lost, repeated or out of order)", name, n, v)
					}
				}
			}
			quiet(t, nodes[0], c)
		})
	}
}

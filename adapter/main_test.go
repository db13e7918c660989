package adapter_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedRedisSrv != nil {
		sharedRedisSrv.stop()
	}
	if sharedRedisDir != "" {
		os.RemoveAll(sharedRedisDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// muteSubscriber subscribes a raw connection to channel and never reads from it again: a node that
// counts in PUBSUB NUMSUB but never answers.
func muteSubscriber(t *testing.T, rs *redisServer, channel string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", rs.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", len(channel), channel)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for range 6 { // *3, $9, subscribe, $n, channel, :1 (the confirmation, line by line)
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("subscribe %s: %v", channel, err)
		}
	}
}

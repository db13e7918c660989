package adapter_test

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/chorus-rt/chorus/internal/config"
	"github.com/chorus-rt/chorus/internal/siotest"
)

// TestClusterDynamicNamespacesLeaveNothing: a client connecting to dynamic namespaces it makes up
// cannot make the cluster's nodes subscribe to Redis channels without bound. A refused connect
// (here: no token) makes no namespace and no subscription; an admitted one subscribes, and its
// namespace's channels are unsubscribed once its last socket has gone.
func TestClusterDynamicNamespacesLeaveNothing(t *testing.T) {
	t.Parallel()
	rs := sharedRedis(t)
	prefix := testPrefix(t)
	const secret = "cluster-test-secret-0123456789abcdef"
	n := newNode(t, "A", rs.url(), prefix, func(c *config.Config) {
		c.JWTSecret = secret
		c.Namespaces = []config.Namespace{{Name: "/", Auth: "none"}, {Name: "/tenant-*"}}
	})
	rc := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rc.Close()
	channels := func() []string {
		l, err := rc.PubSubChannels(context.Background(), prefix+"*/tenant-x#*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := siotest.Dial(ctx, n.url, "/tenant-x", nil); err == nil {
		t.Fatal("a connect without a token was admitted")
	}
	if _, ok := n.srv.Lookup("/tenant-x"); ok {
		t.Error("a refused connect left its dynamic namespace behind")
	}
	if l := channels(); len(l) != 0 {
		t.Errorf("a refused connect subscribed to %q", l)
	}

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	c, err := siotest.Dial(ctx, n.url, "/tenant-x", map[string]string{"token": tok})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the namespace's channels subscribed", func() bool { return len(channels()) > 0 })
	c.Close()
	waitFor(t, "the namespace removed", func() bool { _, ok := n.srv.Lookup("/tenant-x"); return !ok })
	waitFor(t, "its channels unsubscribed", func() bool { return len(channels()) == 0 })
}

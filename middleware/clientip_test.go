package middleware_test

import (
	"net/http"
	"testing"

	"github.com/chorus-rt/chorus/middleware"
)

// Behind trusted proxies the client is the rightmost X-Forwarded-For entry that is not a proxy;
// without them, or from an untrusted peer, X-Forwarded-For is ignored. IPv6 counts per /64.
func TestClientIP(t *testing.T) {
	t.Parallel()
	trusting, err := middleware.NewClientIP([]string{"10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ip     middleware.ClientIP
		remote string
		xff    []string
		want   string
	}{
		{"no proxy trusted", middleware.ClientIP{}, "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"untrusted peer", trusting, "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"trusted peer", trusting, "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"forged entries to the left are ignored", trusting, "10.1.2.3:4000", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		{"a chain of proxies", trusting, "10.1.2.3:4000", []string{"198.51.100.1, 10.9.9.9", "10.0.0.2"}, "198.51.100.1"},
		{"only proxies", trusting, "10.1.2.3:4000", []string{"10.0.0.9"}, "10.0.0.9"},
		{"trusted peer without the header", trusting, "10.1.2.3:4000", nil, "10.1.2.3"},
		{"garbage in the header stops the walk", trusting, "10.1.2.3:4000", []string{"198.51.100.1, nonsense"}, "10.1.2.3"},
		{"IPv6 loopback proxy", trusting, "[::1]:4000", []string{"2001:db8:1:2:3:4:5:6"}, "2001:db8:1:2::/64"},
		{"IPv6 counts per /64", middleware.ClientIP{}, "[2001:db8:1:2:aaaa::1]:4000", nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6", middleware.ClientIP{}, "[::ffff:192.0.2.1]:4000", nil, "192.0.2.1"},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tt.ip.Key(r); got != tt.want {
			t.Errorf("%s: Key = %q, want %q", tt.name, got, tt.want)
		}
	}
	if _, err := middleware.NewClientIP([]string{"proxy.internal"}); err == nil {
		t.Error("a host name was accepted as a trusted proxy")
	}
}

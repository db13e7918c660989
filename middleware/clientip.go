package middleware

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP finds the address a request comes from, for the per-address limits. Behind a reverse
// proxy every request comes from the proxy: when the peer is one of the trusted proxies, the address
// is taken from X-Forwarded-For instead, the rightmost entry that is not itself a trusted proxy (the
// entries further left were written by the client and prove nothing). The zero ClientIP trusts no
// proxy.
type ClientIP struct {
	trusted []netip.Prefix
}

// NewClientIP returns a ClientIP trusting the proxies listed, each an address or a CIDR prefix.
func NewClientIP(trustedProxies []string) (ClientIP, error) {
	var c ClientIP
	for _, p := range trustedProxies {
		prefix, err := ParseProxy(p)
		if err != nil {
			return ClientIP{}, err
		}
		c.trusted = append(c.trusted, prefix)
	}
	return c, nil
}

// ParseProxy reads a trusted proxy: an address (10.0.0.5, ::1) or a CIDR prefix (10.0.0.0/8).
func ParseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("trusted proxy %q is not an address or CIDR prefix (e.g. 10.0.0.0/8)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("trusted proxy %q is not an address or CIDR prefix (e.g. 10.0.0.0/8)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c ClientIP) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr returns the client's address.
func (c ClientIP) Addr(r *http.Request) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if !peer.IsValid() || !c.isTrusted(peer) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	var last netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a := parseHostAddr(strings.TrimSpace(parts[j]))
			if !a.IsValid() {
				return peer // a forged or broken entry: no further entry can be believed
			}
			if !c.isTrusted(a) {
				return a
			}
			last = a
		}
	}
	if last.IsValid() {
		return last
	}
	return peer
}

// Key returns the key the per-address limits count the request under: the client's IPv4 address,
// or the /64 prefix of its IPv6 address (one host usually holds a whole /64).
func (c ClientIP) Key(r *http.Request) string { return addrKey(c.Addr(r)) }

func addrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// parseHostAddr reads "host:port", "[v6]:port" or a bare address.
func parseHostAddr(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

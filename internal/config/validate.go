package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chorus-rt/chorus/middleware"
)

// Validate reports every problem at once (errors.Join), one error per problem,
// each starting with the setting's env name (or "namespaces" for the
// file-only namespaces list).
func (c Config) Validate() error {
	var errs []error
	for _, s := range specs {
		if s.check == nil {
			continue
		}
		for _, err := range flatten(s.check(&c)) {
			errs = append(errs, fmt.Errorf("%s: %w", s.name(), err))
		}
	}
	return errors.Join(errs...)
}

func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. :3000 or 127.0.0.1:3000)", addr)
	}
	return checkPort(port)
}

// checkMetricsAddr: empty, or a host:port that is not the main address.
func checkMetricsAddr(addr, main string) error {
	if addr == "" {
		return nil
	}
	if err := checkAddr(addr); err != nil {
		return err
	}
	if _, port, _ := net.SplitHostPort(addr); addr == main && port != "0" {
		return fmt.Errorf("%q is CHORUS_ADDR too: leave it empty to serve /metrics there", addr)
	}
	return nil
}

// checkAdmin: the Admin UI's credentials come in pairs, and its namespace is its own.
func checkAdmin(c *Config) error {
	if (c.AdminUsername == "") != (c.AdminPassword == "") {
		return errors.New("set both CHORUS_ADMIN_USERNAME and CHORUS_ADMIN_PASSWORD to turn the Admin UI on, or neither")
	}
	if c.AdminEnabled() {
		for _, ns := range c.Namespaces {
			if ns.Name == "/admin" {
				return errors.New("the Admin UI uses the namespace /admin: remove it from namespaces or turn the Admin UI off")
			}
		}
	}
	return nil
}

func checkPort(port string) error {
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func checkPositive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be more than 0, got %s", d)
	}
	return nil
}

func checkNonNegative(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("must not be negative, got %s", d)
	}
	return nil
}

// maxDedupWindow caps DedupWindow: ids are meant for retries, not for an archive.
const maxDedupWindow = 24 * time.Hour

func checkDedupWindow(d time.Duration) error {
	if d <= 0 || d > maxDedupWindow {
		return fmt.Errorf("must be more than 0 and at most %s, got %s", maxDedupWindow, d)
	}
	return nil
}

func checkCount(n int) error {
	if n < 1 {
		return fmt.Errorf("must be at least 1, got %d", n)
	}
	return nil
}

func checkMaxPayload(n int64) error {
	if n <= 0 || n > maxPayloadLimit {
		return fmt.Errorf("must be from 1 to %d bytes, got %d", maxPayloadLimit, n)
	}
	return nil
}

func checkRange(n, lo, hi int64, unit string) error {
	if n < lo || n > hi {
		return fmt.Errorf("must be from %d to %d %s, got %d", lo, hi, unit, n)
	}
	return nil
}

func checkOneOf(v string, allowed ...string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
	return nil
}

func checkTransports(ts []string) error {
	if len(ts) == 0 {
		return errors.New("need at least one of polling, websocket")
	}
	var errs []error
	seen := make(map[string]bool)
	for _, t := range ts {
		switch {
		case t != "polling" && t != "websocket":
			errs = append(errs, fmt.Errorf("unknown transport %q (want polling or websocket)", t))
		case seen[t]:
			errs = append(errs, fmt.Errorf("transport %q listed twice", t))
		}
		seen[t] = true
	}
	return errors.Join(errs...)
}

func checkOrigins(origins []string) error {
	var errs []error
	for _, o := range origins {
		if o == "*" {
			if len(origins) > 1 {
				errs = append(errs, errors.New(`"*" allows any origin and cannot be combined with other origins`))
			}
			continue
		}
		if err := checkOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkOrigin accepts what browsers send in the Origin header: scheme://host[:port].
func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Opaque != "" || u.User != nil || u.Hostname() == "" ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return fmt.Errorf("origin %q is not scheme://host[:port] (e.g. https://app.example.com)", o)
	}
	if u.Path != "" {
		return fmt.Errorf("origin %q has a path; an origin is only scheme://host[:port], with no trailing slash", o)
	}
	if strings.Contains(u.Host, "*") {
		return fmt.Errorf(`origin %q: wildcards are not supported inside an origin; "*" alone allows any origin`, o)
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		if err := checkPort(p); err != nil {
			return fmt.Errorf("origin %q: %w", o, err)
		}
	}
	return nil
}

func checkNamespaces(nss []Namespace) error {
	var errs []error
	seen := make(map[string]int)
	for i, ns := range nss {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("[%d] %q: %s", i, ns.Name, fmt.Sprintf(format, args...)))
		}
		switch {
		case !strings.HasPrefix(ns.Name, "/"):
			bad(`name must start with "/"`)
		case len(ns.Name) > maxPatternLen:
			bad("name is longer than %d bytes", maxPatternLen)
		case strings.Count(ns.Name, "*") > 1:
			bad("name may hold at most one '*'")
		}
		if j, dup := seen[ns.Name]; dup {
			bad("name repeats namespaces[%d]", j)
		} else {
			seen[ns.Name] = i
		}
		if r := ns.Recovery; r != nil {
			switch {
			case ns.Name == "/":
				bad("recovery of / is set with the recovery settings (CHORUS_RECOVERY, CHORUS_RECOVERY_MAX_DISCONNECTION, CHORUS_RECOVERY_MAX_PACKETS), not here")
			case r.MaxDisconnection < 0:
				bad("recovery: max_disconnection must not be negative, got %s", r.MaxDisconnection)
			case r.MaxPackets < 0 || r.MaxPackets > maxCount:
				bad("recovery: max_packets must be from 1 to %d, got %d", maxCount, r.MaxPackets)
			}
		}
		for _, list := range []struct {
			key      string
			patterns []string
		}{{"join", ns.Join}, {"publish", ns.Publish}} {
			for _, p := range list.patterns {
				switch {
				case p == "":
					bad("%s: room pattern is empty", list.key)
				case len(p) > maxPatternLen:
					bad("%s: room pattern %q is longer than %d bytes", list.key, p, maxPatternLen)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func checkNonEmpty(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// checkRedisURL accepts what the Redis adapter will: go-redis's ParseURL syntax.
func checkRedisURL(u string) error {
	if u == "" {
		return nil
	}
	if _, err := redis.ParseURL(u); err != nil {
		return fmt.Errorf("%q is not a Redis URL such as redis://127.0.0.1:6379/0: %w", redactURL(u), err)
	}
	return nil
}

// redactURL hides the password of a URL that has one, for error messages.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil && p.User != nil {
		if _, has := p.User.Password(); has {
			return p.Redacted()
		}
	}
	return u
}

func checkCountRange(n, limit int) error {
	if n < 1 || n > limit {
		return fmt.Errorf("must be from 1 to %d, got %d", limit, n)
	}
	return nil
}

func checkNonNegativeNumber(v float64) error {
	if v < 0 {
		return fmt.Errorf("must not be negative, got %g", v)
	}
	return nil
}

func checkRedisMode(c *Config) error {
	if err := checkOneOf(c.RedisMode, "pubsub", "streams"); err != nil {
		return err
	}
	if c.RedisMode == "streams" && c.RedisURL == "" {
		return errors.New("streams needs a Redis server: set CHORUS_REDIS_URL")
	}
	return nil
}

func checkProxies(ps []string) error {
	var errs []error
	for _, p := range ps {
		if _, err := middleware.ParseProxy(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func checkJWTSecret(s string) error {
	if s != "" && len(s) < middleware.MinSecretLen {
		return fmt.Errorf("must be at least %d bytes (RFC 7518), got %d", middleware.MinSecretLen, len(s))
	}
	return nil
}

// checkJWTKeys reads the key file as chorus will, so that -check-config finds its problems.
func checkJWTKeys(path string) error {
	if path == "" {
		return nil
	}
	_, err := middleware.LoadKeys(path)
	return err
}

// checkNamespaceAuth checks every namespace's auth mode; required and optional need a JWT secret or key.
func checkNamespaceAuth(c Config) error {
	var errs []error
	for i, ns := range c.Namespaces {
		switch ns.Auth {
		case "", AuthNone:
		case AuthRequired, AuthOptional:
			if !c.JWT() {
				errs = append(errs, fmt.Errorf("[%d] %q: auth %s needs CHORUS_JWT_SECRET or CHORUS_JWT_KEYS", i, ns.Name, ns.Auth))
			}
		default:
			errs = append(errs, fmt.Errorf("[%d] %q: auth %q is not one of required, optional, none", i, ns.Name, ns.Auth))
		}
	}
	return errors.Join(errs...)
}

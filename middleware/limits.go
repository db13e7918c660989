package middleware

import (
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/chorus-rt/chorus/internal/sio"
)

// Codes of refusals by the limits.
const (
	// CodeRateLimited: a socket sent events faster than CHORUS_RATE_EVENTS allows (ack error; a
	// socket that keeps at it is disconnected with this reason), or an address opened connections
	// faster than CHORUS_HANDSHAKE_RATE allows.
	CodeRateLimited = "rate_limited"
	// CodeTooManyConnections: an address, or the whole server, is at its connection limit.
	CodeTooManyConnections = "too_many_connections"
)

// limitError refuses an HTTP request (a handshake) with a status and a stable code.
type limitError struct {
	status int
	code   string
	msg    string
}

func (e *limitError) Error() string   { return e.code + ": " + e.msg }
func (e *limitError) HTTPStatus() int { return e.status }

// Reason is the refusal's reason in logs and metrics (see engine.Options.AllowRequest): its code, a
// constant.
func (e *limitError) Reason() string { return e.code }

// burstOf is the burst a limit of perSecond uses when none is configured: one second's worth.
func burstOf(perSecond float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return max(1, int(math.Ceil(perSecond)))
}

// addrLimiter keeps a token bucket per client address. Its map cannot grow without bound: every
// sweepEvery, and whenever it holds maxAddrs buckets, the buckets that have been idle long enough to
// be full again are dropped (a new one is the same); if that is not enough (a flood from very many
// addresses), arbitrary buckets are dropped until a tenth of the room is free, which at worst hands
// those addresses a fresh burst.
type addrLimiter struct {
	limit    rate.Limit
	burst    int
	maxAddrs int
	refill   time.Duration // how long an idle bucket takes to fill up
	now      func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	nextSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

const (
	sweepEvery = time.Minute
	// defaultMaxAddrs bounds each per-address map: about 100 bytes per entry, 10 MB at most.
	defaultMaxAddrs = 100_000
)

func newAddrLimiter(limit rate.Limit, burst int) *addrLimiter {
	refill := time.Duration(float64(burst) / float64(limit) * float64(time.Second))
	return &addrLimiter{limit: limit, burst: burst, maxAddrs: defaultMaxAddrs, refill: refill, now: time.Now,
		buckets: make(map[string]*bucket)}
}

// allow takes a token from key's bucket, reporting whether there was one.
func (l *addrLimiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	return l.bucketLocked(key, now).lim.AllowN(now, 1)
}

// empty reports whether key's bucket has no token left, without taking one.
func (l *addrLimiter) empty(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	return ok && b.lim.TokensAt(l.now()) < 1
}

func (l *addrLimiter) bucketLocked(key string, now time.Time) *bucket {
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxAddrs || !now.Before(l.nextSweep) {
			l.sweepLocked(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.last = now
	return b
}

func (l *addrLimiter) sweepLocked(now time.Time) {
	l.nextSweep = now.Add(sweepEvery)
	for k, b := range l.buckets {
		if now.Sub(b.last) >= l.refill {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.maxAddrs-l.maxAddrs/10 {
			break
		}
		delete(l.buckets, k)
	}
}

// len returns the number of addresses tracked.
func (l *addrLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// ConnLimits are the limits on new and open connections (Engine.IO sessions, every transport).
// A zero field means no limit.
type ConnLimits struct {
	// HandshakeRate is how many new connections one address may open per second, with bursts of
	// HandshakeBurst (0: one second's worth).
	HandshakeRate  float64
	HandshakeBurst int
	// MaxPerAddr is how many connections one address may hold open at once.
	MaxPerAddr int
	// MaxTotal is how many connections the server holds open at once.
	MaxTotal int
}

// ConnGuard enforces ConnLimits per client address (ClientIP) and in total. Its Admit is the
// engine's admission hook: it is called on the handshake request's goroutine, concurrently, and
// its release when the connection has ended.
type ConnGuard struct {
	limits     ConnLimits
	ip         ClientIP
	handshakes *addrLimiter // nil without a handshake rate

	mu      sync.Mutex
	total   int
	perAddr map[string]int // only addresses with open connections: it shrinks as they close
}

// NewConnGuard returns a ConnGuard. Its refusals are not logged here but by the engine, which logs
// every refused handshake once (those of the limits throttled) and counts it in the metrics with
// the refusal's code as its reason.
func NewConnGuard(limits ConnLimits, ip ClientIP) *ConnGuard {
	g := &ConnGuard{limits: limits, ip: ip, perAddr: make(map[string]int)}
	if limits.HandshakeRate > 0 {
		g.handshakes = newAddrLimiter(rate.Limit(limits.HandshakeRate), burstOf(limits.HandshakeRate, limits.HandshakeBurst))
	}
	return g
}

// Admit reserves a place for a new connection, or refuses it: 429 rate_limited past the address's
// handshake rate, 429 too_many_connections at the address's limit, 503 too_many_connections at the
// server's. release gives the place back.
func (g *ConnGuard) Admit(r *http.Request) (release func(), err error) {
	key := g.ip.Key(r)
	if g.handshakes != nil && !g.handshakes.allow(key) {
		return nil, &limitError{http.StatusTooManyRequests, CodeRateLimited,
			"too many new connections from this address (CHORUS_HANDSHAKE_RATE)"}
	}
	g.mu.Lock()
	switch {
	case g.limits.MaxTotal > 0 && g.total >= g.limits.MaxTotal:
		g.mu.Unlock()
		return nil, &limitError{http.StatusServiceUnavailable, CodeTooManyConnections,
			"the server is at its connection limit (CHORUS_MAX_CONNS)"}
	case g.limits.MaxPerAddr > 0 && g.perAddr[key] >= g.limits.MaxPerAddr:
		g.mu.Unlock()
		return nil, &limitError{http.StatusTooManyRequests, CodeTooManyConnections,
			"too many connections from this address (CHORUS_MAX_CONNS_PER_IP)"}
	}
	g.total++
	g.perAddr[key]++
	g.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { g.release(key) }) }, nil
}

func (g *ConnGuard) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perAddr[key]--; g.perAddr[key] <= 0 {
		delete(g.perAddr, key)
	}
}

// Open returns the number of connections holding a place, in total and for the addresses tracked.
func (g *ConnGuard) Open() (total, addrs int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total, len(g.perAddr)
}

// EventLimit limits the events each socket of namespace n may send to perSecond, with bursts of
// burst (0: one second's worth); perSecond 0 installs nothing. An event over the limit is refused
// with the ack error rate_limited and not handled. Sustained abuse disconnects: the refusals draw on
// a second bucket of the same size and rate, so a client that keeps sending at more than twice its
// rate empties that one too and is disconnected (chorus:disconnect rate_limited, then the whole
// connection is closed; the client does not reconnect by itself). The check runs on the
// connection's reader before the event is queued, on every transport.
func EventLimit(n *sio.Namespace, perSecond float64, burst int, log *slog.Logger) {
	if perSecond <= 0 {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	burst = burstOf(perSecond, burst)
	refused := sio.Errorf(CodeRateLimited, "more than %g events per second (burst %d): this event was not handled", perSecond, burst)
	n.OnConnect(func(c *sio.Conn) {
		events := rate.NewLimiter(rate.Limit(perSecond), burst)
		strikes := rate.NewLimiter(rate.Limit(perSecond), burst)
		c.Guard(func(event string) error {
			if events.Allow() {
				return nil
			}
			if !strikes.Allow() {
				log.Info("disconnecting a socket that keeps exceeding its event rate", "sid", c.ID(), "nsp", n.Name(), "reason", CodeRateLimited)
				c.DisconnectWith(sio.Errorf(CodeRateLimited, "kept sending more than %g events per second", perSecond), true)
			}
			return refused
		})
	})
}

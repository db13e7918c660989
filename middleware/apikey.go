// Package middleware holds what stands in front of chorus's handlers: the Socket.IO handshake chain
// (token authentication, the user's personal room, token expiry and refresh), the limits on
// connections and events, and the HTTP API's key check.
package middleware

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"golang.org/x/time/rate"
)

// APIKeyOptions configures APIKey.
type APIKeyOptions struct {
	// Key admits every request. Empty (and ReadKey empty too) disables the API.
	Key string
	// ReadKey, if not empty, admits GET and HEAD requests only; other methods get 403.
	ReadKey string
	// FailuresPerMinute is how many requests with a missing or wrong key one address may make per
	// minute (bursts of as many) before its requests are refused with 429 without being checked;
	// 0 means no limit.
	FailuresPerMinute float64
	// ClientIP finds the address of a request.
	ClientIP ClientIP
}

// APIKey admits requests that carry `Authorization: Bearer <key>`. Keys are compared in constant
// time: both sides are hashed with SHA-256 first, so neither the key's bytes nor its length show in
// the time a comparison takes. Refusals go through deny, so that they have the API's error format:
// 401 unauthorized (missing or wrong key, or the API disabled), 403 forbidden (the read-only key on
// a route that changes something), 429 too_many_attempts (too many failures from the address).
func APIKey(o APIKeyOptions, deny func(w http.ResponseWriter, status int, code, message string), next http.Handler) http.Handler {
	key, read := digest(o.Key), digest(o.ReadKey)
	var failures *addrLimiter
	if o.FailuresPerMinute > 0 {
		failures = newAddrLimiter(rate.Limit(o.FailuresPerMinute/60), burstOf(o.FailuresPerMinute, 0))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key == nil && read == nil {
			deny(w, http.StatusUnauthorized, "unauthorized", "the HTTP API is disabled: set CHORUS_API_KEY")
			return
		}
		addr := o.ClientIP.Key(r)
		if failures != nil && failures.empty(addr) {
			// Checked before the key, so that guessing goes no faster while refused.
			w.Header().Set("Retry-After", "60")
			deny(w, http.StatusTooManyRequests, "too_many_attempts", "too many requests with a wrong API key from this address; try again later")
			return
		}
		got, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		isKey, isRead := found && matches(key, sum), found && matches(read, sum)
		switch {
		case isKey:
			next.ServeHTTP(w, r)
		case isRead && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			next.ServeHTTP(w, r)
		case isRead:
			deny(w, http.StatusForbidden, "forbidden", "the read-only API key (CHORUS_API_READ_KEY) only serves GET requests")
		default:
			if failures != nil {
				failures.allow(addr)
			}
			deny(w, http.StatusUnauthorized, "unauthorized", "missing or wrong API key")
		}
	})
}

func digest(key string) []byte {
	if key == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// matches compares a configured key's digest with a presented key's in constant time.
func matches(want []byte, got [32]byte) bool {
	return want != nil && subtle.ConstantTimeCompare(want, got[:]) == 1
}

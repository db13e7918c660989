// Package middleware holds what stands in front of chorus's handlers: HTTP middleware for the backend
// API (key check, body limit) now, and the Socket.IO handshake chain (authentication, rate limits,
// origin checks) as those land.
package middleware

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// APIKey admits requests that carry `Authorization: Bearer <key>`. The key is compared in constant
// time. With an empty key every request is refused: the API is disabled until a key is configured.
// Refusals go through deny, so that they have the API's error format.
func APIKey(key string, deny func(w http.ResponseWriter, status int, code, message string), next http.Handler) http.Handler {
	want := []byte(key)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(want) == 0 {
			deny(w, http.StatusUnauthorized, "unauthorized", "the HTTP API is disabled: set CHORUS_API_KEY")
			return
		}
		got, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !found || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			deny(w, http.StatusUnauthorized, "unauthorized", "missing or wrong API key")
			return
		}
		next.ServeHTTP(w, r)
	})
}

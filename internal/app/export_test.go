package app

import "time"

// SetIdleTimeout sets the HTTP server's idle timeout for a test and returns a function restoring it.
func SetIdleTimeout(d time.Duration) (restore func()) {
	old := idleTimeout
	idleTimeout = d
	return func() { idleTimeout = old }
}

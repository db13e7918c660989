package sio

import "time"

// Metrics receives a server's counts and timings; chorus's implementation is internal/metrics
// (Prometheus). Options.Metrics nil means none.
//
// Every method may be called from many goroutines at once, on the hot path: on connection readers
// (per message received), on whoever broadcasts (once per broadcast, never per recipient). They must
// be cheap, must not block and should not allocate. The strings passed are chosen by chorus
// (transport names, close reasons, error codes), never by a client, with one exception that
// Namespace documents.
type Metrics interface {
	// Namespace is called when a namespace called name is made, and the value it returns receives
	// that namespace's counts. A static namespace is made once; one from a pattern (NamespaceFunc)
	// is made for every connect that may create it (refused ones included) and again each time it
	// is re-created after being removed with its last socket, so Namespace may be called many times
	// with one name: it must return cheaply and keep nothing per call (chorus's values for one
	// name share the same series, which a re-created namespace carries on). For a namespace from a
	// pattern, name is what a client asked for: an implementation that turns it into a label must
	// bound it (chorus maps it to the configured pattern).
	Namespace(name string) NamespaceMetrics

	// SessionOpened: a new Engine.IO session, on transport "polling" or "websocket".
	SessionOpened(transport string)
	// SessionUpgraded: a session moved from one transport to another (polling to websocket).
	SessionUpgraded(from, to string)
	// SessionClosed: a session that was on transport closed for reason ("transport close",
	// "ping timeout", "parse error", "transport error", "slow_consumer", "forced server close",
	// "server shutting down", "connect timeout").
	SessionClosed(transport, reason string)
	// HandshakeRefused: a new session or a namespace connection was refused: the engine's reasons
	// (engine.Options.OnRefuse), "invalid_namespace", "too_many_namespaces" (CodeTooManyNamespaces),
	// or the code of the middleware's *Error ("refused" if it has none).
	HandshakeRefused(reason string)
	// Received: one Engine.IO message of n bytes arrived from a client (heartbeats excluded).
	Received(bytes int)
	// Sent: messages totalling bytes were queued for clients, summed over the recipients: one call
	// per emit or per broadcast.
	Sent(messages, bytes int)
}

// NamespaceMetrics receives one namespace's counts (see Metrics for the rules).
type NamespaceMetrics interface {
	// Connected: a socket joined the namespace, on transport.
	Connected(transport string)
	// Upgraded: a socket's connection moved transport.
	Upgraded(from, to string)
	// Disconnected: a socket that was on transport left the namespace for reason.
	Disconnected(transport, reason string)
	// EventReceived: a socket sent an event.
	EventReceived()
	// EventsSent: n events were sent to single sockets (Conn.Emit, EmitWithAck; per socket of a
	// broadcast with acks).
	EventsSent(n int)
	// Broadcast: one broadcast reached recipients local sockets (0 included); the recipients
	// count as events sent too.
	Broadcast(recipients int)
	// AckRoundTrip: a socket acknowledged an event d after it was sent.
	AckRoundTrip(d time.Duration)
	// Recovered: a reconnecting socket asked to recover its session (connection state recovery);
	// ok tells whether it was.
	Recovered(ok bool)
}

// noMetrics is the Metrics of a server without any.
type noMetrics struct{}

func (noMetrics) Namespace(string) NamespaceMetrics { return noMetrics{} }
func (noMetrics) SessionOpened(string)              {}
func (noMetrics) SessionUpgraded(string, string)    {}
func (noMetrics) SessionClosed(string, string)      {}
func (noMetrics) HandshakeRefused(string)           {}
func (noMetrics) Received(int)                      {}
func (noMetrics) Sent(int, int)                     {}
func (noMetrics) Connected(string)                  {}
func (noMetrics) Upgraded(string, string)           {}
func (noMetrics) Disconnected(string, string)       {}
func (noMetrics) EventReceived()                    {}
func (noMetrics) EventsSent(int)                    {}
func (noMetrics) Broadcast(int)                     {}
func (noMetrics) AckRoundTrip(time.Duration)        {}
func (noMetrics) Recovered(bool)                    {}

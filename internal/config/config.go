// Package config holds chorus's settings and fills them from flags, CHORUS_*
// environment variables and an optional YAML file.
//
// Precedence is flag > environment > file > default. Every setting is described
// once, in the table in settings.go, which drives the flags, the environment
// variables, the file keys, the defaults, Validate and Table.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is chorus's configuration. Use Default or Load to get one; the zero
// value is not valid.
type Config struct {
	// Addr is the listen address in host:port form.
	// Default ":3000". Flag -addr, env CHORUS_ADDR.
	Addr string

	// APIKey is the key HTTP API callers must present. Empty disables the HTTP API.
	// Default "". Flag -api-key, env CHORUS_API_KEY.
	APIKey string

	// APIReadKey is a second HTTP API key that serves GET requests only (GET /api/v1/sockets).
	// Default "" (none). Flag -api-read-key, env CHORUS_API_READ_KEY.
	APIReadKey string

	// APIAuthFailures is how many HTTP API requests with a missing or wrong key one client address
	// may make per minute (bursts of as many) before it gets 429 for a while; 0 means no limit.
	// Default 10. Flag -api-auth-failures, env CHORUS_API_AUTH_FAILURES.
	APIAuthFailures float64

	// PingInterval is how often the server pings each client (Engine.IO pingInterval).
	// Default 25s. Flag -ping-interval, env CHORUS_PING_INTERVAL (Go duration, e.g. 25s).
	PingInterval time.Duration

	// PingTimeout is how long the server waits for a pong before it closes the
	// connection (Engine.IO pingTimeout).
	// Default 20s. Flag -ping-timeout, env CHORUS_PING_TIMEOUT (Go duration).
	PingTimeout time.Duration

	// MaxPayload is the largest WebSocket message, polling request body
	// (chunked ones included) and HTTP API request body accepted, in bytes.
	// Default 1000000, at most 100000000. Flag -max-payload, env CHORUS_MAX_PAYLOAD.
	MaxPayload int64

	// MaxBuffered caps the output waiting to be written to one connection, in
	// bytes as they go on the wire. A client that reads slower than its rooms
	// are published to (or not at all) is disconnected with reason
	// "slow_consumer" when its queue passes the cap, so that it cannot grow the
	// server's memory; everyone else is unaffected. A long-polling client's output
	// waits here between two polls: raise the cap for clients that receive more
	// than about a megabyte a second.
	// Default 1048576 (1 MiB), from 1024 to 1073741824. Flag -max-buffered, env CHORUS_MAX_BUFFERED.
	MaxBuffered int64

	// Transports are the Engine.IO transports clients may use: "polling",
	// "websocket" or both; at least one.
	// Default "polling,websocket". Flag -transports, env CHORUS_TRANSPORTS (comma list).
	Transports []string

	// CORSOrigins are the origins allowed to connect cross-origin, each
	// scheme://host[:port] such as https://app.example.com. A lone "*" allows
	// any origin; empty allows same-origin requests only.
	// Default empty. Flag -cors-origins, env CHORUS_CORS_ORIGINS (comma list).
	CORSOrigins []string

	// Mode is "production" or "development". In development an empty CORSOrigins allows every
	// origin (for a front end served from another port); in production it allows none but the
	// server's own.
	// Default "production". Flag -mode, env CHORUS_MODE.
	Mode string

	// TrustedProxies are the reverse proxies (addresses or CIDR prefixes) whose X-Forwarded-For
	// the per-address limits believe; empty counts every request under its peer's address.
	// Default empty. Flag -trusted-proxies, env CHORUS_TRUSTED_PROXIES (comma list).
	TrustedProxies []string

	// JWTSecret verifies HS256 client tokens; at least 32 bytes. With it (or JWTKeys) set,
	// namespaces require a token unless configured otherwise.
	// Default "". Flag -jwt-secret, env CHORUS_JWT_SECRET.
	JWTSecret string

	// JWTKeys is a file of public keys verifying RS256 and ES256 client tokens: PEM (public keys
	// or certificates) or a JWKS.
	// Default "". Flag -jwt-keys, env CHORUS_JWT_KEYS.
	JWTKeys string

	// JWTIssuer, if set, is the iss claim every token must carry.
	// Default "". Flag -jwt-issuer, env CHORUS_JWT_ISSUER.
	JWTIssuer string

	// JWTAudience, if set, must be among a token's aud claim.
	// Default "". Flag -jwt-audience, env CHORUS_JWT_AUDIENCE.
	JWTAudience string

	// JWTLeeway is the clock skew allowed when exp and nbf are checked.
	// Default 0s. Flag -jwt-leeway, env CHORUS_JWT_LEEWAY (Go duration).
	JWTLeeway time.Duration

	// RateEvents is how many events per second each socket may send; 0 means no limit.
	// Default 0. Flag -rate-events, env CHORUS_RATE_EVENTS.
	RateEvents float64

	// RateBurst is how many events a socket may send at once above RateEvents; 0 means one
	// second's worth. Default 0. Flag -rate-burst, env CHORUS_RATE_BURST.
	RateBurst int

	// HandshakeRate is how many new connections one client address may open per second; 0 means
	// no limit. Default 50. Flag -handshake-rate, env CHORUS_HANDSHAKE_RATE.
	HandshakeRate float64

	// HandshakeBurst is how many new connections one address may open at once; 0 means one
	// second's worth. Default 200. Flag -handshake-burst, env CHORUS_HANDSHAKE_BURST.
	HandshakeBurst int

	// MaxConnsPerIP is how many connections one client address (an IPv6 /64) may hold open; 0
	// means no limit. Default 1000. Flag -max-conns-per-ip, env CHORUS_MAX_CONNS_PER_IP.
	MaxConnsPerIP int

	// MaxConns is how many connections the server holds open; 0 means no limit.
	// Default 100000. Flag -max-conns, env CHORUS_MAX_CONNS.
	MaxConns int

	// MaxRooms is how many rooms a socket may join (its own-id and personal rooms not counted);
	// 0 means no limit. Default 1000. Flag -max-rooms, env CHORUS_MAX_ROOMS.
	MaxRooms int

	// DrainTimeout is how long shutdown spends disconnecting clients before it
	// closes the rest at once; 0 closes them all immediately.
	// Default 10s. Flag -drain-timeout, env CHORUS_DRAIN_TIMEOUT (Go duration).
	DrainTimeout time.Duration

	// LogLevel is the least severe level logged: debug, info, warn or error.
	// Default "info". Flag -log-level, env CHORUS_LOG_LEVEL.
	LogLevel string

	// LogFormat is the log line format: text or json.
	// Default "text". Flag -log-format, env CHORUS_LOG_FORMAT.
	LogFormat string

	// ClientDir is the directory the demo page's socket.io client is served from.
	// Default "node_modules/socket.io-client/dist". Flag -client-dir, env CHORUS_CLIENT_DIR.
	ClientDir string

	// RedisURL is the Redis server that joins this node to a cluster (chorus nodes,
	// Node socket.io servers with @socket.io/redis-adapter, @socket.io/redis-emitter),
	// in go-redis ParseURL syntax: redis://[user:password@]host:port[/db],
	// rediss://… for TLS, unix:///path.sock. Empty keeps the single-node in-memory adapter.
	// Default "". Flag -redis-url, env CHORUS_REDIS_URL.
	RedisURL string

	// RedisPrefix starts every Redis channel name (Node's `key` option; in streams
	// mode also the stream's name: Node's channelPrefix and streamName); every node
	// of a cluster must use the same.
	// Default "socket.io". Flag -redis-prefix, env CHORUS_REDIS_PREFIX.
	RedisPrefix string

	// RedisRequestTimeout is how long a cluster request (fetch sockets, server-side
	// emit with ack, broadcast with ack) waits for the other nodes before it returns
	// what arrived.
	// Default 5s. Flag -redis-request-timeout, env CHORUS_REDIS_REQUEST_TIMEOUT (Go duration).
	RedisRequestTimeout time.Duration

	// RedisMode is how the nodes of a Redis cluster talk: "pubsub" (Node's
	// @socket.io/redis-adapter 8.x) or "streams" (Node's @socket.io/redis-streams-adapter
	// 0.3: broadcasts in a Redis stream, sessions in Redis, so a client recovers its
	// session on any node).
	// Default "pubsub". Flag -redis-mode, env CHORUS_REDIS_MODE.
	RedisMode string

	// RedisStreamMaxLen is the approximate number of entries the stream keeps in
	// streams mode (XADD MAXLEN ~, Node's maxLen option): a client whose missed
	// broadcasts were trimmed starts a new session.
	// Default 10000. Flag -redis-stream-maxlen, env CHORUS_REDIS_STREAM_MAXLEN.
	RedisStreamMaxLen int

	// Recovery turns connection-state recovery on for namespace "/": a client whose
	// connection drops and that reconnects within RecoveryMaxDisconnection gets its
	// socket id, rooms and the events it missed back. Other namespaces set it in
	// the file (namespaces[].recovery).
	// Default true. Flag -recovery, env CHORUS_RECOVERY.
	Recovery bool

	// RecoveryMaxDisconnection is how long the session of a socket of "/" whose
	// connection dropped waits for its client.
	// Default 2m. Flag -recovery-max-disconnection, env CHORUS_RECOVERY_MAX_DISCONNECTION.
	RecoveryMaxDisconnection time.Duration

	// RecoveryMaxPackets caps the events "/" keeps in memory for recovery (the
	// single-node and pubsub adapters; streams mode keeps them in Redis).
	// Default 100000. Flag -recovery-max-packets, env CHORUS_RECOVERY_MAX_PACKETS.
	RecoveryMaxPackets int

	// DedupWindow is how long the id of a message a client published is remembered: a
	// publish with an id seen within the window is acked {ok:true, duplicate:true} and not
	// broadcast again. With RedisURL the ids live in Redis, shared by every node.
	// Default 2m, at most 24h. Flag -dedup-window, env CHORUS_DEDUP_WINDOW (Go duration).
	DedupWindow time.Duration

	// DedupMaxIDs caps the message ids a node remembers when there is no Redis (at most
	// about 90 bytes each); past it the oldest are forgotten before their window ends.
	// Default 1000000. Flag -dedup-max-ids, env CHORUS_DEDUP_MAX_IDS.
	DedupMaxIDs int

	// MetricsAddr moves the Prometheus endpoint /metrics to a listener of its own at this
	// host:port (e.g. 127.0.0.1:9090, to keep it off the public port). Empty serves it on Addr.
	// Default "". Flag -metrics-addr, env CHORUS_METRICS_ADDR.
	MetricsAddr string

	// AdminUsername and AdminPassword are the credentials of the Socket.IO Admin UI. The whole
	// admin surface (the /admin namespace and the UI at /admin/) is off unless both are set.
	// Default "". Flags -admin-username, -admin-password; env CHORUS_ADMIN_USERNAME,
	// CHORUS_ADMIN_PASSWORD.
	AdminUsername string
	AdminPassword string

	// AdminEvents also shows the Admin UI every event sockets send and are sent (its Events
	// page); it costs a broadcast per event.
	// Default false. Flag -admin-events, env CHORUS_ADMIN_EVENTS.
	AdminEvents bool

	// AdminUIDir is the directory the Admin UI's built files are served from at /admin/.
	// Default "node_modules/@socket.io/admin-ui/ui/dist". Flag -admin-ui-dir, env CHORUS_ADMIN_UI_DIR.
	AdminUIDir string

	// Namespaces configures namespaces and their room policies. It can only be
	// set in the YAML file (key namespaces). Default none: only "/", any room.
	Namespaces []Namespace

	// File is the YAML file that was read, "" if none.
	// Default "". Flag -config, env CHORUS_CONFIG.
	File string

	// CheckOnly asks the program to validate the configuration and exit
	// without serving. Default false. Flag -check-config (no env, no file key).
	CheckOnly bool
}

// AdminEnabled reports whether the Admin UI is on: both its credentials are set.
func (c Config) AdminEnabled() bool { return c.AdminUsername != "" && c.AdminPassword != "" }

// Namespace configures one namespace: an exact name ("/chat") or a pattern
// with one '*' ("/tenant-*").
type Namespace struct {
	Name string `yaml:"name"`
	// Join lists the room patterns ('*' wildcard) a client may join.
	// nil (key absent or null) allows any room; an empty list allows none.
	Join []string `yaml:"join"`
	// Publish lists the room patterns a client may publish to.
	// nil (key absent or null) allows any room; an empty list allows none.
	Publish []string `yaml:"publish"`
	// Recovery configures connection-state recovery; nil (key absent) leaves it
	// off. "/" takes it from the recovery settings instead.
	Recovery *Recovery `yaml:"recovery"`
	// Auth is "required", "optional" or "none": whether clients of the namespace must present a
	// token. "" means required when a JWT secret or key is configured, none otherwise.
	Auth string `yaml:"auth"`
}

// Recovery is a namespace's connection-state recovery (key recovery of a
// namespace: {enabled, max_disconnection, max_packets}).
type Recovery struct {
	// Enabled turns it on; a recovery mapping without the key enables it.
	Enabled bool
	// MaxDisconnection is how long a session waits for its client; 0 means 2m.
	MaxDisconnection time.Duration
	// MaxPackets caps the events kept in memory; 0 means 100000.
	MaxPackets int
}

// Auth modes of a namespace.
const (
	AuthRequired = "required"
	AuthOptional = "optional"
	AuthNone     = "none"
)

// JWT reports whether client tokens can be verified: a JWT secret or key file is configured.
func (c Config) JWT() bool { return c.JWTSecret != "" || c.JWTKeys != "" }

// AuthMode returns the auth mode of namespace ns: its own, or the default (required with JWT, none
// without).
func (c Config) AuthMode(ns Namespace) string {
	switch {
	case ns.Auth != "":
		return ns.Auth
	case c.JWT():
		return AuthRequired
	}
	return AuthNone
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	var c Config
	for _, s := range specs {
		if err := s.field(&c).set(s.def); err != nil {
			// The table is a constant, so this is a bug in it; TestDefault catches it.
			panic(fmt.Sprintf("config: bad default for %s: %v", s.name(), err))
		}
	}
	return c
}

// Load parses args (without the program name) and the environment through
// getenv, reads the YAML file named by -config or CHORUS_CONFIG if any, and
// applies precedence flag > env > file > default. An empty environment
// variable counts as unset.
//
// It does not call Validate. Problems with values are all collected and
// returned together (errors.Join), each naming the flag, variable or file line
// it came from; the returned Config then holds whatever could be parsed and
// should not be used. For -h Load writes usage to out and returns flag.ErrHelp;
// flag syntax errors are also reported to out.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("chorus", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { usage(out) }
	flags := make([]flagValue, len(specs))
	for i, s := range specs {
		if s.flag == "" {
			continue
		}
		flags[i].isBool = s.field(new(Config)).kind() == kindBool
		fs.Var(&flags[i], s.flag, s.help)
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: settings are flags such as -addr :3000", fs.Arg(0))
	}

	c := Default()
	var errs []error

	// The file's name follows the same precedence as the settings it holds;
	// an explicit -config "" reads no file even if CHORUS_CONFIG is set.
	path := getenv(envConfig)
	fs.Visit(func(f *flag.Flag) {
		if f.Name == flagConfig {
			path = f.Value.String()
		}
	})
	if path != "" {
		errs = append(errs, readFile(&c, path))
	}

	for _, s := range specs {
		if s.env == "" {
			continue
		}
		if v := getenv(s.env); v != "" {
			if err := s.field(&c).set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", s.env, err))
			}
		}
	}

	for i, s := range specs {
		if !flags[i].set {
			continue
		}
		if err := s.field(&c).set(flags[i].text); err != nil {
			errs = append(errs, fmt.Errorf("-%s: %w", s.flag, err))
		}
	}

	return c, errors.Join(errs...)
}

// flagValue records a flag's text so that Load can apply it after the file and
// the environment, which it must override.
type flagValue struct {
	text   string
	set    bool
	isBool bool
}

func (v *flagValue) String() string {
	if v == nil {
		return ""
	}
	return v.text
}

func (v *flagValue) Set(s string) error {
	v.text, v.set = s, true
	return nil
}

// IsBoolFlag lets -check-config be given without a value.
func (v *flagValue) IsBoolFlag() bool { return v.isBool }

// usage writes the -h text: every flag with its type, env variable and default.
func usage(w io.Writer) {
	var b bytes.Buffer
	b.WriteString("Usage: chorus [flags]\n\n" +
		"Settings come from flags, CHORUS_* environment variables and an optional YAML\n" +
		"file (-config), in that order of precedence.\n\nFlags:\n")
	for _, s := range specs {
		if s.flag == "" {
			continue
		}
		fmt.Fprintf(&b, "  -%s", s.flag)
		if k := s.field(new(Config)).kind(); k != kindBool {
			fmt.Fprintf(&b, " %s", k)
		}
		fmt.Fprintf(&b, "\n    \t%s", s.help)
		var notes []string
		if s.env != "" {
			notes = append(notes, "env "+s.env)
		}
		if s.def != "" && s.def != "false" {
			notes = append(notes, fmt.Sprintf("default %q", s.def))
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(notes, "; "))
		}
		b.WriteByte('\n')
	}
	_, _ = w.Write(b.Bytes())
}

// readFile applies the YAML file at path to c. Unknown and repeated keys are
// errors. Every problem found is returned, joined, prefixed with path:line.
func readFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil // empty or comments only
	case err != nil:
		return fmt.Errorf("%s: %w", path, err)
	}
	switch err := dec.Decode(new(yaml.Node)); {
	case err == nil:
		return fmt.Errorf("%s: holds more than one YAML document", path)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("%s: %w", path, err)
	}

	root := resolve(doc.Content[0])
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want a mapping of settings (key: value)", path, root.Line)
	}
	var errs []error
	seen := make(map[string]bool)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		s := specByKey(k.Value)
		switch {
		case s == nil:
			errs = append(errs, fmt.Errorf("%s:%d: unknown key %q%s", path, k.Line, k.Value, keyHint(k.Value)))
		case seen[k.Value]:
			errs = append(errs, fmt.Errorf("%s:%d: key %q given twice", path, k.Line, k.Value))
		default:
			seen[k.Value] = true
			for _, err := range flatten(s.field(c).setYAML(resolve(v))) {
				line := v.Line
				if le, ok := err.(lineError); ok {
					line, err = le.line, le.err
				}
				errs = append(errs, fmt.Errorf("%s:%d: %s: %w", path, line, k.Value, err))
			}
		}
	}
	return errors.Join(errs...)
}

// flatten splits an errors.Join result into its parts.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

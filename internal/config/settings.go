package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Setting describes one setting for help text and documentation.
type Setting struct {
	Flag    string // flag name without the dash; "" if the setting has no flag
	Env     string // environment variable; "" if none
	Key     string // YAML file key; "" if the setting cannot be set in the file
	Default string // default in flag syntax; "" for empty
	Help    string // one line saying what it does
}

// Table returns every setting in the order -h lists them.
func Table() []Setting {
	t := make([]Setting, 0, len(specs))
	for _, s := range specs {
		t = append(t, Setting{Flag: s.flag, Env: s.env, Key: s.key, Default: s.def, Help: s.help})
	}
	return t
}

const (
	flagConfig = "config"
	envConfig  = "CHORUS_CONFIG"

	// maxPayloadLimit caps MaxPayload: 100 MB.
	maxPayloadLimit = 100_000_000
	// maxPatternLen caps namespace names and room patterns, like room names.
	maxPatternLen = 128
	// maxCount caps the packet and stream-entry counts.
	maxCount = 10_000_000
)

// spec is one setting: where it comes from, its default, its Config field and
// its check. Adding a setting means adding a Config field and one entry to specs.
type spec struct {
	flag string // flag name without the dash; "" = no flag
	env  string // environment variable; "" = none
	key  string // YAML key; "" = not settable from the file
	def  string // default, in flag syntax
	help string // one line for -h and the docs; no '|' (it goes into a markdown table)
	// field binds the setting to its Config field.
	field func(c *Config) field
	// check reports problems with the value (several via errors.Join); nil = anything goes.
	check func(c *Config) error
}

// name is how errors refer to the setting: its env variable where it has one.
func (s *spec) name() string {
	switch {
	case s.env != "":
		return s.env
	case s.flag != "":
		return "-" + s.flag
	}
	return s.key
}

var specs = []spec{
	{
		flag: "addr", env: "CHORUS_ADDR", key: "addr", def: ":3000",
		help:  "listen address, host:port",
		field: func(c *Config) field { return (*stringField)(&c.Addr) },
		check: func(c *Config) error { return checkAddr(c.Addr) },
	},
	{
		flag: "api-key", env: "CHORUS_API_KEY", key: "api_key", def: "",
		help:  "key HTTP API callers must present; empty disables the HTTP API",
		field: func(c *Config) field { return (*stringField)(&c.APIKey) },
	},
	{
		flag: "api-read-key", env: "CHORUS_API_READ_KEY", key: "api_read_key", def: "",
		help:  "second HTTP API key that serves GET requests only (e.g. for dashboards); empty: none",
		field: func(c *Config) field { return (*stringField)(&c.APIReadKey) },
	},
	{
		flag: "api-auth-failures", env: "CHORUS_API_AUTH_FAILURES", key: "api_auth_failures", def: "10",
		help:  "HTTP API requests with a wrong key one address may make per minute before it gets 429; 0 = no limit",
		field: func(c *Config) field { return (*floatField)(&c.APIAuthFailures) },
		check: func(c *Config) error { return checkNonNegativeNumber(c.APIAuthFailures) },
	},
	{
		flag: "ping-interval", env: "CHORUS_PING_INTERVAL", key: "ping_interval", def: "25s",
		help:  "how often the server pings each client",
		field: func(c *Config) field { return (*durationField)(&c.PingInterval) },
		check: func(c *Config) error { return checkPositive(c.PingInterval) },
	},
	{
		flag: "ping-timeout", env: "CHORUS_PING_TIMEOUT", key: "ping_timeout", def: "20s",
		help:  "how long to wait for a pong before closing the connection",
		field: func(c *Config) field { return (*durationField)(&c.PingTimeout) },
		check: func(c *Config) error { return checkPositive(c.PingTimeout) },
	},
	{
		flag: "max-payload", env: "CHORUS_MAX_PAYLOAD", key: "max_payload", def: "1000000",
		help:  "largest WebSocket message, polling body or HTTP API body, in bytes (at most 100000000)",
		field: func(c *Config) field { return (*bytesField)(&c.MaxPayload) },
		check: func(c *Config) error { return checkMaxPayload(c.MaxPayload) },
	},
	{
		flag: "max-buffered", env: "CHORUS_MAX_BUFFERED", key: "max_buffered", def: "1048576",
		help:  "output waiting for one connection, in bytes, past which it is disconnected as a slow_consumer (1024 to 1073741824)",
		field: func(c *Config) field { return (*bytesField)(&c.MaxBuffered) },
		check: func(c *Config) error { return checkRange(c.MaxBuffered, 1024, 1<<30, "bytes") },
	},
	{
		flag: "transports", env: "CHORUS_TRANSPORTS", key: "transports", def: "polling,websocket",
		help:  "transports clients may use: comma list of polling, websocket",
		field: func(c *Config) field { return (*listField)(&c.Transports) },
		check: func(c *Config) error { return checkTransports(c.Transports) },
	},
	{
		flag: "cors-origins", env: "CHORUS_CORS_ORIGINS", key: "cors_origins", def: "",
		help:  "origins browsers may connect from besides the server's own: comma list of scheme://host[:port], or * for any; empty allows same-origin only (any origin with -mode development)",
		field: func(c *Config) field { return (*listField)(&c.CORSOrigins) },
		check: func(c *Config) error { return checkOrigins(c.CORSOrigins) },
	},
	{
		flag: "mode", env: "CHORUS_MODE", key: "mode", def: "production",
		help:  "production or development; development lets any origin connect while -cors-origins is empty",
		field: func(c *Config) field { return (*stringField)(&c.Mode) },
		check: func(c *Config) error { return checkOneOf(c.Mode, "production", "development") },
	},
	{
		flag: "trusted-proxies", env: "CHORUS_TRUSTED_PROXIES", key: "trusted_proxies", def: "",
		help:  "reverse proxies whose X-Forwarded-For the per-address limits believe: comma list of addresses or CIDR prefixes; empty: none",
		field: func(c *Config) field { return (*listField)(&c.TrustedProxies) },
		check: func(c *Config) error { return checkProxies(c.TrustedProxies) },
	},
	{
		flag: "jwt-secret", env: "CHORUS_JWT_SECRET", key: "jwt_secret", def: "",
		help:  "secret (at least 32 bytes) verifying HS256 client tokens; with it or -jwt-keys, namespaces require a token by default",
		field: func(c *Config) field { return (*stringField)(&c.JWTSecret) },
		check: func(c *Config) error { return checkJWTSecret(c.JWTSecret) },
	},
	{
		flag: "jwt-keys", env: "CHORUS_JWT_KEYS", key: "jwt_keys", def: "",
		help:  "file of public keys verifying RS256/ES256 client tokens: PEM (keys or certificates) or JWKS",
		field: func(c *Config) field { return (*stringField)(&c.JWTKeys) },
		check: func(c *Config) error { return checkJWTKeys(c.JWTKeys) },
	},
	{
		flag: "jwt-issuer", env: "CHORUS_JWT_ISSUER", key: "jwt_issuer", def: "",
		help:  "iss claim every client token must carry; empty: any",
		field: func(c *Config) field { return (*stringField)(&c.JWTIssuer) },
	},
	{
		flag: "jwt-audience", env: "CHORUS_JWT_AUDIENCE", key: "jwt_audience", def: "",
		help:  "value that must be among a client token's aud claim; empty: any",
		field: func(c *Config) field { return (*stringField)(&c.JWTAudience) },
	},
	{
		flag: "jwt-leeway", env: "CHORUS_JWT_LEEWAY", key: "jwt_leeway", def: "0s",
		help:  "clock skew allowed when a token's exp and nbf are checked",
		field: func(c *Config) field { return (*durationField)(&c.JWTLeeway) },
		check: func(c *Config) error { return checkNonNegative(c.JWTLeeway) },
	},
	{
		flag: "rate-events", env: "CHORUS_RATE_EVENTS", key: "rate_events", def: "0",
		help:  "events per second each socket may send (more get the ack error rate_limited; keeping at it disconnects); 0 = no limit",
		field: func(c *Config) field { return (*floatField)(&c.RateEvents) },
		check: func(c *Config) error { return checkNonNegativeNumber(c.RateEvents) },
	},
	{
		flag: "rate-burst", env: "CHORUS_RATE_BURST", key: "rate_burst", def: "0",
		help:  "events a socket may send at once above -rate-events; 0 = one second's worth",
		field: func(c *Config) field { return (*countField)(&c.RateBurst) },
		check: func(c *Config) error { return checkNonNegativeNumber(float64(c.RateBurst)) },
	},
	{
		flag: "handshake-rate", env: "CHORUS_HANDSHAKE_RATE", key: "handshake_rate", def: "50",
		help:  "new connections per second one client address may open (more get 429); 0 = no limit",
		field: func(c *Config) field { return (*floatField)(&c.HandshakeRate) },
		check: func(c *Config) error { return checkNonNegativeNumber(c.HandshakeRate) },
	},
	{
		flag: "handshake-burst", env: "CHORUS_HANDSHAKE_BURST", key: "handshake_burst", def: "200",
		help:  "new connections one address may open at once above -handshake-rate; 0 = one second's worth",
		field: func(c *Config) field { return (*countField)(&c.HandshakeBurst) },
		check: func(c *Config) error { return checkNonNegativeNumber(float64(c.HandshakeBurst)) },
	},
	{
		flag: "max-conns-per-ip", env: "CHORUS_MAX_CONNS_PER_IP", key: "max_conns_per_ip", def: "1000",
		help:  "connections one client address (IPv6: one /64) may hold open (more get 429); 0 = no limit",
		field: func(c *Config) field { return (*countField)(&c.MaxConnsPerIP) },
		check: func(c *Config) error { return checkNonNegativeNumber(float64(c.MaxConnsPerIP)) },
	},
	{
		flag: "max-conns", env: "CHORUS_MAX_CONNS", key: "max_conns", def: "100000",
		help:  "connections this server holds open (more get 503); 0 = no limit",
		field: func(c *Config) field { return (*countField)(&c.MaxConns) },
		check: func(c *Config) error { return checkNonNegativeNumber(float64(c.MaxConns)) },
	},
	{
		flag: "max-rooms", env: "CHORUS_MAX_ROOMS", key: "max_rooms", def: "1000",
		help:  "rooms one socket may join (more get too_many_rooms); 0 = no limit",
		field: func(c *Config) field { return (*countField)(&c.MaxRooms) },
		check: func(c *Config) error { return checkNonNegativeNumber(float64(c.MaxRooms)) },
	},
	{
		flag: "drain-timeout", env: "CHORUS_DRAIN_TIMEOUT", key: "drain_timeout", def: "10s",
		help:  "how long shutdown spends disconnecting clients gradually; 0 closes them at once",
		field: func(c *Config) field { return (*durationField)(&c.DrainTimeout) },
		check: func(c *Config) error { return checkNonNegative(c.DrainTimeout) },
	},
	{
		flag: "log-level", env: "CHORUS_LOG_LEVEL", key: "log_level", def: "info",
		help:  "least severe level logged: debug, info, warn or error",
		field: func(c *Config) field { return (*stringField)(&c.LogLevel) },
		check: func(c *Config) error { return checkOneOf(c.LogLevel, "debug", "info", "warn", "error") },
	},
	{
		flag: "log-format", env: "CHORUS_LOG_FORMAT", key: "log_format", def: "text",
		help:  "log format: text or json",
		field: func(c *Config) field { return (*stringField)(&c.LogFormat) },
		check: func(c *Config) error { return checkOneOf(c.LogFormat, "text", "json") },
	},
	{
		flag: "client-dir", env: "CHORUS_CLIENT_DIR", key: "client_dir", def: "node_modules/socket.io-client/dist",
		help:  "directory the demo page's socket.io client is served from",
		field: func(c *Config) field { return (*stringField)(&c.ClientDir) },
	},
	{
		flag: "redis-url", env: "CHORUS_REDIS_URL", key: "redis_url", def: "",
		help:  "Redis server joining this node to a cluster, e.g. redis://127.0.0.1:6379/0 (go-redis URL syntax); empty keeps the single-node adapter",
		field: func(c *Config) field { return (*stringField)(&c.RedisURL) },
		check: func(c *Config) error { return checkRedisURL(c.RedisURL) },
	},
	{
		flag: "redis-prefix", env: "CHORUS_REDIS_PREFIX", key: "redis_prefix", def: "socket.io",
		help:  "start of every Redis channel name (Node's `key` option; in streams mode also the stream's name: `channelPrefix` and `streamName`); the same on every node",
		field: func(c *Config) field { return (*stringField)(&c.RedisPrefix) },
		check: func(c *Config) error { return checkNonEmpty(c.RedisPrefix) },
	},
	{
		flag: "redis-request-timeout", env: "CHORUS_REDIS_REQUEST_TIMEOUT", key: "redis_request_timeout", def: "5s",
		help:  "how long a cluster request waits for the other nodes before returning what arrived",
		field: func(c *Config) field { return (*durationField)(&c.RedisRequestTimeout) },
		check: func(c *Config) error { return checkPositive(c.RedisRequestTimeout) },
	},
	{
		flag: "redis-mode", env: "CHORUS_REDIS_MODE", key: "redis_mode", def: "pubsub",
		help:  "how cluster nodes talk through Redis: pubsub (Node's @socket.io/redis-adapter) or streams (@socket.io/redis-streams-adapter; sessions recover on any node)",
		field: func(c *Config) field { return (*stringField)(&c.RedisMode) },
		check: func(c *Config) error { return checkRedisMode(c) },
	},
	{
		flag: "redis-stream-maxlen", env: "CHORUS_REDIS_STREAM_MAXLEN", key: "redis_stream_maxlen", def: "10000",
		help:  "streams mode: entries the Redis stream keeps, about (XADD MAXLEN ~, Node's maxLen)",
		field: func(c *Config) field { return (*countField)(&c.RedisStreamMaxLen) },
		check: func(c *Config) error { return checkCountRange(c.RedisStreamMaxLen, maxCount) },
	},
	{
		flag: "recovery", env: "CHORUS_RECOVERY", key: "recovery", def: "true",
		help:  "connection-state recovery on namespace `/`: a client that reconnects in time gets its id, rooms and missed events back (other namespaces: [docs/configuration.md](docs/configuration.md))",
		field: func(c *Config) field { return (*boolField)(&c.Recovery) },
	},
	{
		flag: "recovery-max-disconnection", env: "CHORUS_RECOVERY_MAX_DISCONNECTION", key: "recovery_max_disconnection", def: "2m",
		help:  "how long the session of a dropped connection to `/` waits for its client",
		field: func(c *Config) field { return (*durationField)(&c.RecoveryMaxDisconnection) },
		check: func(c *Config) error { return checkPositive(c.RecoveryMaxDisconnection) },
	},
	{
		flag: "recovery-max-packets", env: "CHORUS_RECOVERY_MAX_PACKETS", key: "recovery_max_packets", def: "100000",
		help:  "most events `/` keeps in memory for recovery (also at most 64 MiB)",
		field: func(c *Config) field { return (*countField)(&c.RecoveryMaxPackets) },
		check: func(c *Config) error { return checkCountRange(c.RecoveryMaxPackets, maxCount) },
	},
	{
		flag: "dedup-window", env: "CHORUS_DEDUP_WINDOW", key: "dedup_window", def: "2m",
		help:  "how long the id of a published message is remembered, so that a retry is acked as a duplicate and not delivered again (at most 24h)",
		field: func(c *Config) field { return (*durationField)(&c.DedupWindow) },
		check: func(c *Config) error { return checkDedupWindow(c.DedupWindow) },
	},
	{
		flag: "dedup-max-ids", env: "CHORUS_DEDUP_MAX_IDS", key: "dedup_max_ids", def: "1000000",
		help:  "most message ids a node remembers without Redis (at most about 90 bytes each); past it the oldest are forgotten early",
		field: func(c *Config) field { return (*countField)(&c.DedupMaxIDs) },
		check: func(c *Config) error { return checkCount(c.DedupMaxIDs) },
	},
	{
		flag: "metrics-addr", env: "CHORUS_METRICS_ADDR", key: "metrics_addr", def: "",
		help:  "serve /metrics (Prometheus) on a listener of its own at this host:port, e.g. 127.0.0.1:9090; empty serves it on the main address",
		field: func(c *Config) field { return (*stringField)(&c.MetricsAddr) },
		check: func(c *Config) error { return checkMetricsAddr(c.MetricsAddr, c.Addr) },
	},
	{
		flag: "admin-username", env: "CHORUS_ADMIN_USERNAME", key: "admin_username", def: "",
		help:  "user name of the Socket.IO Admin UI (/admin/ and the /admin namespace), which is off unless both it and the password are set",
		field: func(c *Config) field { return (*stringField)(&c.AdminUsername) },
		check: func(c *Config) error { return checkAdmin(c) },
	},
	{
		flag: "admin-password", env: "CHORUS_ADMIN_PASSWORD", key: "admin_password", def: "",
		help:  "password of the Socket.IO Admin UI (prefer the environment variable: flags show in ps)",
		field: func(c *Config) field { return (*stringField)(&c.AdminPassword) },
	},
	{
		flag: "admin-events", env: "CHORUS_ADMIN_EVENTS", key: "admin_events", def: "false",
		help:  "also show the Admin UI every event sockets send and are sent (its Events page); costs a broadcast per event",
		field: func(c *Config) field { return (*boolField)(&c.AdminEvents) },
	},
	{
		flag: "admin-ui-dir", env: "CHORUS_ADMIN_UI_DIR", key: "admin_ui_dir", def: "node_modules/@socket.io/admin-ui/ui/dist",
		help:  "directory the Admin UI's built files are served from at /admin/",
		field: func(c *Config) field { return (*stringField)(&c.AdminUIDir) },
	},
	{
		key:   "namespaces",
		help:  "namespaces besides `/` and the rooms clients may join and publish to ([docs/configuration.md](docs/configuration.md)); none means only `/`, any room",
		field: func(c *Config) field { return (*namespacesField)(&c.Namespaces) },
		check: func(c *Config) error {
			return errors.Join(append(flatten(checkNamespaces(c.Namespaces)), flatten(checkNamespaceAuth(*c))...)...)
		},
	},
	{
		flag: flagConfig, env: envConfig,
		help:  "YAML configuration file to read",
		field: func(c *Config) field { return (*stringField)(&c.File) },
	},
	{
		flag: "check-config", def: "false",
		help:  "validate the configuration, report every problem and exit",
		field: func(c *Config) field { return (*boolField)(&c.CheckOnly) },
	},
}

func specByKey(key string) *spec {
	for i := range specs {
		if specs[i].key != "" && specs[i].key == key {
			return &specs[i]
		}
	}
	return nil
}

// keyHint suggests the right spelling of a mistyped file key.
func keyHint(key string) string {
	if s := specByKey(strings.ReplaceAll(strings.ToLower(key), "-", "_")); s != nil {
		return fmt.Sprintf(" (did you mean %q?)", s.key)
	}
	return ""
}

// field is a Config field as seen by flags, env variables and the file. Flags
// and env variables share one syntax (set); the file may use YAML forms too.
type field interface {
	set(s string) error
	setYAML(n *yaml.Node) error
	kind() string // value placeholder in -h
}

const kindBool = "bool"

type stringField string

func (f *stringField) set(s string) error { *f = stringField(s); return nil }
func (f *stringField) kind() string       { return "string" }
func (f *stringField) setYAML(n *yaml.Node) error {
	s, err := scalar(n)
	if err != nil {
		return err
	}
	return f.set(s)
}

type durationField time.Duration

func (f *durationField) kind() string { return "duration" }
func (f *durationField) set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 25s, 1m30s, 500ms)", s)
	}
	*f = durationField(d)
	return nil
}
func (f *durationField) setYAML(n *yaml.Node) error { return setScalar(f, n) }

type bytesField int64

func (f *bytesField) kind() string { return "bytes" }
func (f *bytesField) set(s string) error {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("invalid byte count %q (want a whole number such as 1000000)", s)
	}
	*f = bytesField(v)
	return nil
}
func (f *bytesField) setYAML(n *yaml.Node) error { return setScalar(f, n) }

type floatField float64

func (f *floatField) kind() string { return "number" }
func (f *floatField) set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("invalid number %q (want e.g. 10 or 0.5)", s)
	}
	*f = floatField(v)
	return nil
}
func (f *floatField) setYAML(n *yaml.Node) error { return setScalar(f, n) }

// countField is a whole number of things.
type countField int

func (f *countField) kind() string { return "count" }
func (f *countField) set(s string) error {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid count %q (want a whole number such as 1000000)", s)
	}
	*f = countField(v)
	return nil
}
func (f *countField) setYAML(n *yaml.Node) error { return setScalar(f, n) }

type boolField bool

func (f *boolField) kind() string { return kindBool }
func (f *boolField) set(s string) error {
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("invalid boolean %q (want true or false)", s)
	}
	*f = boolField(v)
	return nil
}
func (f *boolField) setYAML(n *yaml.Node) error { return setScalar(f, n) }

// listField is a comma list in flags and env variables; in the file it is a
// YAML list or the same comma string. Items are trimmed and empty ones dropped.
type listField []string

func (f *listField) kind() string { return "list" }
func (f *listField) set(s string) error {
	var l []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			l = append(l, item)
		}
	}
	*f = l
	return nil
}
func (f *listField) setYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return setScalar(f, n)
	}
	var l []string
	for _, item := range n.Content {
		s, err := scalar(resolve(item))
		if err != nil {
			return lineError{item.Line, err}
		}
		if s = strings.TrimSpace(s); s != "" {
			l = append(l, s)
		}
	}
	*f = l
	return nil
}

// namespacesField is set from the file only.
type namespacesField []Namespace

func (f *namespacesField) kind() string { return "list" }
func (f *namespacesField) set(s string) error {
	if s != "" {
		return errors.New("can only be set in the configuration file")
	}
	*f = nil
	return nil
}

// setYAML reads a list of {name, join, publish, recovery, auth}. Every problem is reported, each
// naming the entry's index.
func (f *namespacesField) setYAML(n *yaml.Node) error {
	if isNull(n) {
		*f = nil
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return errors.New("want a list of {name, join, publish, recovery, auth}")
	}
	l := make([]Namespace, 0, len(n.Content))
	var errs []error
	for i, item := range n.Content {
		item = resolve(item)
		if item.Kind != yaml.MappingNode {
			errs = append(errs, lineError{item.Line, fmt.Errorf("[%d]: want a mapping with keys name, join, publish, recovery, auth", i)})
			continue
		}
		var ns Namespace
		seen := make(map[string]bool)
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], resolve(item.Content[j+1])
			var err error
			switch {
			case seen[k.Value]:
				err = errors.New("given twice")
			case k.Value == "name":
				ns.Name, err = scalar(v)
			case k.Value == "join":
				ns.Join, err = patterns(v)
			case k.Value == "publish":
				ns.Publish, err = patterns(v)
			case k.Value == "recovery":
				ns.Recovery, err = recovery(v)
			case k.Value == "auth":
				ns.Auth, err = scalar(v)
			default:
				err = errors.New("unknown key (want name, join, publish, recovery, auth)")
			}
			seen[k.Value] = true
			for _, err := range flatten(err) {
				line := k.Line
				if le, ok := err.(lineError); ok {
					line, err = le.line, le.err
				}
				errs = append(errs, lineError{line, fmt.Errorf("[%d] %s: %w", i, k.Value, err)})
			}
		}
		l = append(l, ns)
	}
	*f = l
	return errors.Join(errs...)
}

// recovery reads {enabled, max_disconnection, max_packets}; null leaves recovery off.
func recovery(n *yaml.Node) (*Recovery, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, errors.New("want a mapping such as {enabled: true, max_disconnection: 2m, max_packets: 100000}")
	}
	r := &Recovery{Enabled: true}
	seen := make(map[string]bool)
	var errs []error
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := n.Content[j], resolve(n.Content[j+1])
		var err error
		switch {
		case seen[k.Value]:
			err = errors.New("given twice")
		case k.Value == "enabled":
			err = (*boolField)(&r.Enabled).setYAML(v)
		case k.Value == "max_disconnection":
			err = (*durationField)(&r.MaxDisconnection).setYAML(v)
		case k.Value == "max_packets":
			err = (*countField)(&r.MaxPackets).setYAML(v)
		default:
			err = errors.New("unknown key (want enabled, max_disconnection, max_packets)")
		}
		seen[k.Value] = true
		if err != nil {
			errs = append(errs, lineError{k.Line, fmt.Errorf("%s: %w", k.Value, err)})
		}
	}
	return r, errors.Join(errs...)
}

// patterns reads a list of room patterns. null means "any room" (nil) and []
// means "no room" (empty, not nil), so the two stay distinct.
func patterns(n *yaml.Node) ([]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, errors.New(`want a list of room patterns, e.g. [lobby, "team-*"]`)
	}
	l := make([]string, 0, len(n.Content))
	for _, item := range n.Content {
		s, err := scalar(resolve(item))
		if err != nil {
			return nil, err
		}
		l = append(l, s)
	}
	return l, nil
}

// lineError places a problem inside a value that spans several lines of the
// file; readFile reports that line instead of the value's first.
type lineError struct {
	line int
	err  error
}

func (e lineError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e lineError) Unwrap() error { return e.err }

func setScalar(f field, n *yaml.Node) error {
	s, err := scalar(n)
	if err != nil {
		return err
	}
	return f.set(s)
}

// scalar returns a scalar node's text; null reads as "".
func scalar(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errors.New("want a single value, not a list or mapping")
	}
	if isNull(n) {
		return "", nil
	}
	return n.Value, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// resolve follows an alias (*name) to the node it stands for.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

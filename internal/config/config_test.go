package config_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chorus-rt/chorus/internal/config"
)

func TestDefault(t *testing.T) {
	t.Parallel()
	want := config.Config{
		Addr:         ":3000",
		PingInterval: 25 * time.Second,
		PingTimeout:  20 * time.Second,
		MaxPayload:   1_000_000,
		MaxBuffered:  1 << 20,
		Transports:   []string{"polling", "websocket"},
		DrainTimeout: 10 * time.Second,
		LogLevel:     "info",
		LogFormat:    "text",
		ClientDir:    "node_modules/socket.io-client/dist",

		RedisPrefix:         "socket.io",
		RedisRequestTimeout: 5 * time.Second,
		RedisMode:           "pubsub",
		RedisStreamMaxLen:   10000,

		Recovery:                 true,
		RecoveryMaxDisconnection: 2 * time.Minute,
		RecoveryMaxPackets:       100000,

		DedupWindow: 2 * time.Minute,
		DedupMaxIDs: 1_000_000,

		AdminUIDir:      "node_modules/@socket.io/admin-ui/ui/dist",
		Mode:            "production",
		APIAuthFailures: 10,
		HandshakeRate:   50,
		HandshakeBurst:  200,
		MaxConnsPerIP:   1000,
		MaxConns:        100_000,
		MaxRooms:        1000,
	}
	if got := config.Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() = %+v\nwant %+v", got, want)
	}
	if err := config.Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	got, err := config.Load(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("Load with nothing set: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load with nothing set = %+v\nwant %+v", got, want)
	}
}

// Default must not share slices between calls.
func TestDefaultIsFresh(t *testing.T) {
	t.Parallel()
	a := config.Default()
	a.Transports[0] = "changed"
	if b := config.Default(); b.Transports[0] != "polling" {
		t.Errorf("Default().Transports = %v after changing an earlier copy", b.Transports)
	}
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	const file = `
addr: "file:1"
ping_interval: 1s
transports: polling
log_level: debug
max_payload: 111
`
	tests := []struct {
		name string
		file string // "" = no file
		env  map[string]string
		args []string
		want func(c *config.Config)
	}{
		{
			name: "file over default",
			file: file,
			want: func(c *config.Config) {
				c.Addr, c.PingInterval, c.Transports, c.LogLevel, c.MaxPayload = "file:1", time.Second, []string{"polling"}, "debug", 111
			},
		},
		{
			name: "env over file",
			file: file,
			env:  map[string]string{"CHORUS_ADDR": "env:2", "CHORUS_PING_INTERVAL": "2s", "CHORUS_TRANSPORTS": "websocket"},
			want: func(c *config.Config) {
				c.Addr, c.PingInterval, c.Transports, c.LogLevel, c.MaxPayload = "env:2", 2*time.Second, []string{"websocket"}, "debug", 111
			},
		},
		{
			name: "flag over env over file",
			file: file,
			env:  map[string]string{"CHORUS_ADDR": "env:2", "CHORUS_PING_INTERVAL": "2s", "CHORUS_MAX_PAYLOAD": "222"},
			args: []string{"-addr", "flag:3", "-ping-interval=3s", "-transports", "polling, websocket"},
			want: func(c *config.Config) {
				c.Addr, c.PingInterval, c.Transports, c.LogLevel, c.MaxPayload = "flag:3", 3*time.Second, []string{"polling", "websocket"}, "debug", 222
			},
		},
		{
			name: "flag over env without a file",
			env:  map[string]string{"CHORUS_LOG_FORMAT": "json", "CHORUS_LOG_LEVEL": "warn"},
			args: []string{"-log-level", "error"},
			want: func(c *config.Config) { c.LogFormat, c.LogLevel = "json", "error" },
		},
		{
			name: "empty env counts as unset",
			file: file,
			env:  map[string]string{"CHORUS_ADDR": ""},
			want: func(c *config.Config) {
				c.Addr, c.PingInterval, c.Transports, c.LogLevel, c.MaxPayload = "file:1", time.Second, []string{"polling"}, "debug", 111
			},
		},
		{
			name: "empty flag overrides a list",
			env:  map[string]string{"CHORUS_CORS_ORIGINS": "https://a.example.com"},
			args: []string{"-cors-origins="},
			want: func(c *config.Config) { c.CORSOrigins = nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			want := config.Default()
			if tt.file != "" {
				want.File = writeFile(t, tt.file)
				args = append([]string{"-config", want.File}, args...)
			}
			tt.want(&want)
			got, err := config.Load(args, env(tt.env), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load = %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadConfigFileName(t *testing.T) {
	t.Parallel()
	envFile := writeFile(t, "addr: from-env-file:1\n")
	flagFile := writeFile(t, "addr: from-flag-file:1\n")
	tests := []struct {
		name     string
		args     []string
		wantFile string
		wantAddr string
	}{
		{name: "CHORUS_CONFIG", wantFile: envFile, wantAddr: "from-env-file:1"},
		{name: "-config beats CHORUS_CONFIG", args: []string{"-config", flagFile}, wantFile: flagFile, wantAddr: "from-flag-file:1"},
		{name: "empty -config reads no file", args: []string{"-config="}, wantFile: "", wantAddr: ":3000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load(tt.args, env(map[string]string{"CHORUS_CONFIG": envFile}), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.File != tt.wantFile || c.Addr != tt.wantAddr {
				t.Errorf("File, Addr = %q, %q; want %q, %q", c.File, c.Addr, tt.wantFile, tt.wantAddr)
			}
		})
	}
}

func TestLoadFileNamespaces(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `
transports: [websocket]
cors_origins: "https://a.example.com, https://b.example.com"
namespaces:
  - name: /chat
    join: [lobby, "team-*"]
    publish: ["team-*"]
  - name: /tenant-*
    join:
    publish: []
  - &base
    name: /open
    auth: none
  - name: /live
    recovery: {max_disconnection: 30s, max_packets: 500}
  - name: /off
    recovery:
      enabled: false
jwt_secret: 0123456789abcdef0123456789abcdef
`)
	c, err := config.Load([]string{"-config", path}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []config.Namespace{
		{Name: "/chat", Join: []string{"lobby", "team-*"}, Publish: []string{"team-*"}},
		{Name: "/tenant-*", Join: nil, Publish: []string{}},
		{Name: "/open", Auth: "none"},
		{Name: "/live", Recovery: &config.Recovery{Enabled: true, MaxDisconnection: 30 * time.Second, MaxPackets: 500}},
		{Name: "/off", Recovery: &config.Recovery{Enabled: false}},
	}
	if !reflect.DeepEqual(c.Namespaces, want) {
		t.Errorf("Namespaces = %#v\nwant %#v", c.Namespaces, want)
	}
	// nil (any room) and empty (no room) must stay distinct.
	if c.Namespaces[1].Join != nil || c.Namespaces[1].Publish == nil {
		t.Errorf("/tenant-*: Join = %#v (want nil), Publish = %#v (want empty, not nil)", c.Namespaces[1].Join, c.Namespaces[1].Publish)
	}
	if got, want := c.Transports, []string{"websocket"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Transports = %q, want %q", got, want)
	}
	if got, want := c.CORSOrigins, []string{"https://a.example.com", "https://b.example.com"}; !reflect.DeepEqual(got, want) {
		t.Errorf("CORSOrigins = %q, want %q", got, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// With a JWT secret, a namespace without auth requires a token; auth overrides it.
	for ns, want := range map[string]string{"/chat": "required", "/open": "none"} {
		for _, n := range c.Namespaces {
			if n.Name == ns && c.AuthMode(n) != want {
				t.Errorf("AuthMode(%s) = %q, want %q", ns, c.AuthMode(n), want)
			}
		}
	}
	if got := config.Default().AuthMode(config.Namespace{Name: "/"}); got != "none" {
		t.Errorf("without a JWT secret, AuthMode = %q, want none", got)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string // written to a temp file and passed with -config; "" = none
		env  map[string]string
		args []string
		want []string // substrings the error must contain, all of them
	}{
		{
			name: "bad duration in env",
			env:  map[string]string{"CHORUS_PING_INTERVAL": "abc"},
			want: []string{`CHORUS_PING_INTERVAL: invalid duration "abc"`},
		},
		{
			name: "bad values everywhere are all reported",
			file: "ping_timeout: soon\n",
			env:  map[string]string{"CHORUS_DRAIN_TIMEOUT": "10", "CHORUS_MAX_PAYLOAD": "1MB", "CHORUS_DEDUP_MAX_IDS": "1e6"},
			args: []string{"-ping-interval", "often", "-check-config=maybe"},
			want: []string{
				`:1: ping_timeout: invalid duration "soon"`,
				`CHORUS_DRAIN_TIMEOUT: invalid duration "10"`,
				`CHORUS_MAX_PAYLOAD: invalid byte count "1MB"`,
				`CHORUS_DEDUP_MAX_IDS: invalid count "1e6"`,
				`-ping-interval: invalid duration "often"`,
				`-check-config: invalid boolean "maybe"`,
			},
		},
		{
			name: "unknown YAML key",
			file: "addr: :3000\nping-interval: 5s\nbogus: 1\n",
			want: []string{`:2: unknown key "ping-interval" (did you mean "ping_interval"?)`, `:3: unknown key "bogus"`},
		},
		{
			name: "unknown namespace key",
			file: "namespaces:\n  - name: /chat\n    rooms: [a]\n",
			want: []string{`:3: namespaces: [0] rooms: unknown key`},
		},
		{
			name: "bad recovery block",
			file: "namespaces:\n  - name: /chat\n    recovery: {enabled: maybe, window: 1m, max_disconnection: soon}\n",
			want: []string{
				`namespaces: [0] recovery: enabled: invalid boolean "maybe"`,
				`namespaces: [0] recovery: window: unknown key (want enabled, max_disconnection, max_packets)`,
				`namespaces: [0] recovery: max_disconnection: invalid duration "soon"`,
			},
		},
		{
			name: "recovery not a mapping",
			file: "namespaces:\n  - name: /chat\n    recovery: true\n",
			want: []string{`namespaces: [0] recovery: want a mapping`},
		},
		{
			name: "key given twice",
			file: "addr: a:1\naddr: b:2\n",
			want: []string{`:2: key "addr" given twice`},
		},
		{
			name: "list where a value belongs",
			file: "addr: [a, b]\n",
			want: []string{`addr: want a single value`},
		},
		{
			name: "join as a string",
			file: "namespaces:\n  - name: /chat\n    join: lobby\n",
			want: []string{`:3: namespaces: [0] join: want a list of room patterns`},
		},
		{
			name: "list item that is not a value",
			file: "transports:\n  - polling\n  - [websocket]\n",
			want: []string{`:3: transports: want a single value`},
		},
		{
			name: "not a mapping",
			file: "- addr\n",
			want: []string{`want a mapping of settings`},
		},
		{
			name: "YAML syntax error",
			file: "addr: [unclosed\n",
			want: []string{`yaml:`},
		},
		{
			name: "two documents",
			file: "addr: a:1\n---\naddr: b:2\n",
			want: []string{`more than one YAML document`},
		},
		{
			name: "missing file",
			env:  map[string]string{"CHORUS_CONFIG": filepath.Join(t.TempDir(), "nope.yaml")},
			want: []string{`config file:`, `nope.yaml`},
		},
		{
			name: "unknown flag",
			args: []string{"-bogus"},
			want: []string{`flag provided but not defined: -bogus`},
		},
		{
			name: "positional argument",
			args: []string{"serve"},
			want: []string{`unexpected argument "serve"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			if tt.file != "" {
				args = append([]string{"-config", writeFile(t, tt.file)}, args...)
			}
			_, err := config.Load(args, env(tt.env), &bytes.Buffer{})
			assertErrorContains(t, err, tt.want...)
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *config.Config)
		want   []string // nil = valid; else substrings the error must contain
	}{
		{name: "default", change: func(*config.Config) {}},
		{
			name: "valid non-defaults",
			change: func(c *config.Config) {
				c.Addr = "127.0.0.1:0"
				c.Transports = []string{"websocket"}
				c.CORSOrigins = []string{"https://app.example.com", "http://localhost:8080"}
				c.DrainTimeout = 0
				c.MaxPayload = 100_000_000
				c.Namespaces = []config.Namespace{{Name: "/"}, {Name: "/tenant-*", Join: []string{}}}
			},
		},
		{name: "any origin", change: func(c *config.Config) { c.CORSOrigins = []string{"*"} }},
		{name: "redis", change: func(c *config.Config) { c.RedisURL = "rediss://u:p@redis.internal:6380/2?dial_timeout=1s" }},
		{
			name: "redis problems",
			change: func(c *config.Config) {
				c.RedisURL = "http://u:secret@127.0.0.1:6379"
				c.RedisPrefix = ""
				c.RedisRequestTimeout = 0
			},
			want: []string{
				`CHORUS_REDIS_URL: "http://u:xxxxx@127.0.0.1:6379" is not a Redis URL`,
				"CHORUS_REDIS_PREFIX: must not be empty",
				"CHORUS_REDIS_REQUEST_TIMEOUT: must be more than 0",
			},
		},
		{
			name: "many problems at once",
			change: func(c *config.Config) {
				c.Addr = "3000"
				c.PingInterval = 0
				c.PingTimeout = -time.Second
				c.MaxPayload = 100_000_001
				c.Transports = []string{"polling", "polling", "sse"}
				c.DrainTimeout = -1
				c.LogLevel = "verbose"
				c.LogFormat = "xml"
				c.CORSOrigins = []string{"app.example.com", "https://app.example.com/", "https://*.example.com", "*"}
				c.Namespaces = []config.Namespace{
					{Name: "chat"},
					{Name: "/a*b*"},
					{Name: "/x", Join: []string{""}, Publish: []string{strings.Repeat("r", 129)}},
					{Name: "/x"},
				}
			},
			want: []string{
				`CHORUS_ADDR: "3000" is not host:port`,
				`CHORUS_PING_INTERVAL: must be more than 0, got 0s`,
				`CHORUS_PING_TIMEOUT: must be more than 0, got -1s`,
				`CHORUS_MAX_PAYLOAD: must be from 1 to 100000000 bytes, got 100000001`,
				`CHORUS_TRANSPORTS: transport "polling" listed twice`,
				`CHORUS_TRANSPORTS: unknown transport "sse"`,
				`CHORUS_DRAIN_TIMEOUT: must not be negative`,
				`CHORUS_LOG_LEVEL: "verbose" is not one of debug, info, warn, error`,
				`CHORUS_LOG_FORMAT: "xml" is not one of text, json`,
				`CHORUS_CORS_ORIGINS: origin "app.example.com" is not scheme://host[:port]`,
				`CHORUS_CORS_ORIGINS: origin "https://app.example.com/" has a path`,
				`CHORUS_CORS_ORIGINS: origin "https://*.example.com": wildcards are not supported`,
				`CHORUS_CORS_ORIGINS: "*" allows any origin and cannot be combined`,
				`namespaces: [0] "chat": name must start with "/"`,
				`namespaces: [1] "/a*b*": name may hold at most one '*'`,
				`namespaces: [2] "/x": join: room pattern is empty`,
				`namespaces: [2] "/x": publish: room pattern "rrrr`,
				`namespaces: [3] "/x": name repeats namespaces[2]`,
			},
		},
		{
			name: "recovery problems",
			change: func(c *config.Config) {
				c.RedisMode = "streams"
				c.RedisStreamMaxLen = 0
				c.RecoveryMaxDisconnection = 0
				c.RecoveryMaxPackets = -1
				c.Namespaces = []config.Namespace{
					{Name: "/", Recovery: &config.Recovery{Enabled: true}},
					{Name: "/a", Recovery: &config.Recovery{Enabled: true, MaxDisconnection: -time.Second}},
					{Name: "/b", Recovery: &config.Recovery{Enabled: true, MaxPackets: -2}},
				}
			},
			want: []string{
				"CHORUS_REDIS_MODE: streams needs a Redis server",
				"CHORUS_REDIS_STREAM_MAXLEN: must be from 1 to 10000000, got 0",
				"CHORUS_RECOVERY_MAX_DISCONNECTION: must be more than 0",
				"CHORUS_RECOVERY_MAX_PACKETS: must be from 1 to 10000000, got -1",
				`namespaces: [0] "/": recovery of / is set with the recovery settings`,
				`namespaces: [1] "/a": recovery: max_disconnection must not be negative`,
				`namespaces: [2] "/b": recovery: max_packets must be from 1`,
			},
		},
		{name: "unknown redis mode", change: func(c *config.Config) { c.RedisMode = "cluster" }, want: []string{`CHORUS_REDIS_MODE: "cluster" is not one of pubsub, streams`}},
		{
			name: "metrics and admin",
			change: func(c *config.Config) {
				c.MetricsAddr = "127.0.0.1:9090"
				c.AdminUsername, c.AdminPassword = "admin", "secret"
				c.Namespaces = []config.Namespace{{Name: "/adm*"}}
			},
		},
		{
			name: "metrics and admin problems",
			change: func(c *config.Config) {
				c.MetricsAddr = c.Addr
				c.AdminUsername, c.AdminPassword = "admin", "secret"
				c.Namespaces = []config.Namespace{{Name: "/admin"}}
			},
			want: []string{
				`CHORUS_METRICS_ADDR: ":3000" is CHORUS_ADDR too`,
				`CHORUS_ADMIN_USERNAME: the Admin UI uses the namespace /admin`,
			},
		},
		{name: "admin password alone", change: func(c *config.Config) { c.AdminPassword = "secret" }, want: []string{`CHORUS_ADMIN_USERNAME: set both`}},
		{name: "bad metrics addr", change: func(c *config.Config) { c.MetricsAddr = "9090" }, want: []string{`CHORUS_METRICS_ADDR: "9090" is not host:port`}},
		{
			name: "security settings",
			change: func(c *config.Config) {
				c.Mode = "development"
				c.TrustedProxies = []string{"10.0.0.0/8", "::1", "192.168.1.7"}
				c.JWTSecret = strings.Repeat("s", 32)
				c.JWTLeeway = 5 * time.Second
				c.RateEvents, c.RateBurst = 0.5, 5
				c.HandshakeRate, c.HandshakeBurst, c.MaxConnsPerIP, c.MaxConns, c.MaxRooms, c.APIAuthFailures = 0, 0, 0, 0, 0, 0
				c.Namespaces = []config.Namespace{{Name: "/", Auth: "optional"}, {Name: "/open", Auth: "none"}, {Name: "/closed", Auth: "required"}}
			},
		},
		{
			name: "security problems",
			change: func(c *config.Config) {
				c.Mode = "prod"
				c.TrustedProxies = []string{"10.0.0.0/33", "proxy.internal"}
				c.JWTSecret = "short"
				c.JWTKeys = "/nonexistent/keys.pem"
				c.JWTLeeway = -time.Second
				c.RateEvents, c.RateBurst = -1, -1
				c.HandshakeRate, c.HandshakeBurst, c.MaxConnsPerIP, c.MaxConns, c.MaxRooms, c.APIAuthFailures = -1, -1, -1, -1, -1, -1
				c.Namespaces = []config.Namespace{{Name: "/", Auth: "sometimes"}}
			},
			want: []string{
				`CHORUS_MODE: "prod" is not one of production, development`,
				`CHORUS_TRUSTED_PROXIES: trusted proxy "10.0.0.0/33" is not an address or CIDR prefix`,
				`CHORUS_TRUSTED_PROXIES: trusted proxy "proxy.internal" is not an address or CIDR prefix`,
				`CHORUS_JWT_SECRET: must be at least 32 bytes (RFC 7518), got 5`,
				`CHORUS_JWT_KEYS: open /nonexistent/keys.pem`,
				`CHORUS_JWT_LEEWAY: must not be negative`,
				`CHORUS_RATE_EVENTS: must not be negative, got -1`,
				`CHORUS_RATE_BURST: must not be negative, got -1`,
				`CHORUS_HANDSHAKE_RATE: must not be negative`,
				`CHORUS_HANDSHAKE_BURST: must not be negative`,
				`CHORUS_MAX_CONNS_PER_IP: must not be negative`,
				`CHORUS_MAX_CONNS: must not be negative`,
				`CHORUS_MAX_ROOMS: must not be negative`,
				`CHORUS_API_AUTH_FAILURES: must not be negative`,
				`namespaces: [0] "/": auth "sometimes" is not one of required, optional, none`,
			},
		},
		{
			name: "auth without a JWT secret or key",
			change: func(c *config.Config) {
				c.Namespaces = []config.Namespace{{Name: "/a", Auth: "required"}, {Name: "/b", Auth: "optional"}, {Name: "/c", Auth: "none"}}
			},
			want: []string{
				`namespaces: [0] "/a": auth required needs CHORUS_JWT_SECRET or CHORUS_JWT_KEYS`,
				`namespaces: [1] "/b": auth optional needs CHORUS_JWT_SECRET or CHORUS_JWT_KEYS`,
			},
		},
		{name: "no transports", change: func(c *config.Config) { c.Transports = nil }, want: []string{`CHORUS_TRANSPORTS: need at least one`}},
		{name: "empty addr", change: func(c *config.Config) { c.Addr = "" }, want: []string{`CHORUS_ADDR: "" is not host:port`}},
		{name: "port out of range", change: func(c *config.Config) { c.Addr = ":70000" }, want: []string{`CHORUS_ADDR: port "70000"`}},
		{
			name:   "dedup problems",
			change: func(c *config.Config) { c.DedupWindow = 25 * time.Hour; c.DedupMaxIDs = 0 },
			want:   []string{`CHORUS_DEDUP_WINDOW: must be more than 0 and at most 24h0m0s, got 25h0m0s`, `CHORUS_DEDUP_MAX_IDS: must be at least 1, got 0`},
		},
		{name: "zero dedup window", change: func(c *config.Config) { c.DedupWindow = 0 }, want: []string{`CHORUS_DEDUP_WINDOW: must be more than 0`}},
		{name: "zero payload", change: func(c *config.Config) { c.MaxPayload = 0 }, want: []string{`CHORUS_MAX_PAYLOAD: must be from 1`}},
		{name: "origin with a bad port", change: func(c *config.Config) { c.CORSOrigins = []string{"http://localhost:"} }, want: []string{`origin "http://localhost:": port ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := config.Default()
			tt.change(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			assertErrorContains(t, err, tt.want...)
			if got := len(strings.Split(err.Error(), "\n")); got != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", got, len(tt.want), err)
			}
		})
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want bool
	}{
		{name: "absent", want: false},
		{name: "bare", args: []string{"-check-config"}, want: true},
		{name: "explicit false", args: []string{"-check-config=false"}, want: false},
		{name: "with other flags", args: []string{"-addr", ":4000", "-check-config"}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load(tt.args, env(nil), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.CheckOnly != tt.want {
				t.Errorf("CheckOnly = %v, want %v", c.CheckOnly, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			_, err := config.Load([]string{arg}, env(nil), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Load(%s) error = %v, want flag.ErrHelp", arg, err)
			}
			for _, s := range config.Table() {
				if s.Flag != "" && !strings.Contains(out.String(), "-"+s.Flag) {
					t.Errorf("usage does not mention -%s:\n%s", s.Flag, &out)
				}
				if s.Env != "" && !strings.Contains(out.String(), s.Env) {
					t.Errorf("usage does not mention %s:\n%s", s.Env, &out)
				}
			}
			if !strings.Contains(out.String(), `default "25s"`) {
				t.Errorf("usage does not show defaults:\n%s", &out)
			}
		})
	}
}

// TestTable keeps the table consistent: unique names, CHORUS_ prefixes, file
// keys spelled like their flags, and every env variable and flag really read.
func TestTable(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for _, s := range config.Table() {
		for _, n := range []string{"-" + s.Flag, "$" + s.Env, "key " + s.Key} {
			if n != "-" && n != "$" && n != "key " {
				if seen[n] {
					t.Errorf("%s used twice", n)
				}
				seen[n] = true
			}
		}
		if s.Env != "" && !strings.HasPrefix(s.Env, "CHORUS_") {
			t.Errorf("env %s lacks the CHORUS_ prefix", s.Env)
		}
		if s.Flag != "" && s.Key != "" && s.Key != strings.ReplaceAll(s.Flag, "-", "_") {
			t.Errorf("file key %q does not match flag -%s", s.Key, s.Flag)
		}
		if s.Help == "" || strings.Contains(s.Help, "|") {
			t.Errorf("%+v: help must be non-empty and free of '|'", s)
		}
	}
}

// Every setting with an env variable or flag must change Config when set,
// so the table cannot list a variable that nothing reads.
func TestEverySettingIsRead(t *testing.T) {
	t.Parallel()
	values := map[string]string{ // a value different from the default, per setting
		"addr": "x:1", "api-key": "k", "ping-interval": "1s", "ping-timeout": "1s", "max-payload": "1", "max-buffered": "2048",
		"transports": "websocket", "cors-origins": "*", "drain-timeout": "1s", "log-level": "debug",
		"log-format": "json", "client-dir": "d", "check-config": "true",
		"redis-url": "redis://127.0.0.1:6379/1", "redis-prefix": "p", "redis-request-timeout": "1s",
		"redis-mode": "streams", "redis-stream-maxlen": "5", "recovery": "false",
		"recovery-max-disconnection": "30s", "recovery-max-packets": "7",
		"metrics-addr": "127.0.0.1:9090", "admin-username": "u", "admin-password": "p", "admin-events": "true",
		"admin-ui-dir": "d",
		"api-read-key": "r", "api-auth-failures": "0", "mode": "development", "trusted-proxies": "10.0.0.0/8",
		"jwt-secret": "s", "jwt-keys": "k.pem", "jwt-issuer": "i", "jwt-audience": "a", "jwt-leeway": "1s",
		"rate-events": "2.5", "rate-burst": "3", "handshake-rate": "0", "handshake-burst": "1",
		"max-conns-per-ip": "0", "max-conns": "0", "max-rooms": "0",
		"dedup-window": "30s", "dedup-max-ids": "10",
	}
	empty := writeFile(t, "")
	values["config"] = empty
	for _, s := range config.Table() {
		if s.Flag == "" {
			continue
		}
		v, ok := values[s.Flag]
		if !ok {
			t.Errorf("-%s: add a test value to TestEverySettingIsRead", s.Flag)
			continue
		}
		c, err := config.Load([]string{"-" + s.Flag + "=" + v}, env(nil), &bytes.Buffer{})
		if err != nil || reflect.DeepEqual(c, config.Default()) {
			t.Errorf("-%s=%s: Load = %+v, %v; want a change from Default", s.Flag, v, c, err)
		}
		if s.Env != "" {
			c, err := config.Load(nil, env(map[string]string{s.Env: v}), &bytes.Buffer{})
			if err != nil || reflect.DeepEqual(c, config.Default()) {
				t.Errorf("%s=%s: Load = %+v, %v; want a change from Default", s.Env, v, c, err)
			}
		}
	}
}

func FuzzLoadFile(f *testing.F) {
	f.Add([]byte("addr: :3000\nping_interval: 25s\n"))
	f.Add([]byte("namespaces:\n  - name: /chat\n    join: [a]\n    publish: []\n"))
	f.Add([]byte("transports: [polling, websocket]\ncors_origins: '*'\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "chorus.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load([]string{"-config", path}, env(nil), &bytes.Buffer{})
		if err == nil {
			_ = c.Validate() // must not panic
		}
	})
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chorus.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func assertErrorContains(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}

func Example() {
	c, err := config.Load([]string{"-addr", ":4000"}, env(map[string]string{"CHORUS_LOG_LEVEL": "debug"}), os.Stderr)
	if err == nil {
		err = c.Validate()
	}
	fmt.Println(c.Addr, c.LogLevel, c.PingInterval, err)
	// Output: :4000 debug 25s <nil>
}

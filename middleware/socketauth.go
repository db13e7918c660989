package middleware

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// AuthMode says whether a namespace asks its clients for a token.
type AuthMode string

const (
	// AuthRequired refuses a handshake without a valid token (connect_error unauthorized, …).
	AuthRequired AuthMode = "required"
	// AuthOptional admits a handshake without a token as anonymous; one with a token must verify.
	AuthOptional AuthMode = "optional"
	// AuthNone ignores tokens: every socket is anonymous.
	AuthNone AuthMode = "none"
)

// AuthOptions configures InstallAuth.
type AuthOptions struct {
	Authenticator Authenticator
	Mode          AuthMode
	// Leeway is added to a token's `exp` before its socket is disconnected (the same clock skew the
	// Authenticator allows).
	Leeway time.Duration
	Logger *slog.Logger
}

// session is one authenticated socket: its identity (a refresh replaces it) and the timer that
// disconnects it when the token expires. The timer is a runtime timer, not a goroutine.
type session struct {
	leeway time.Duration
	log    *slog.Logger

	mu      sync.Mutex
	id      Identity
	conn    *sio.Conn
	timer   *time.Timer
	stopped bool
}

// InstallAuth makes namespace n authenticate its sockets (unless o.Mode is AuthNone):
//
//   - the handshake takes the token from the handshake's `auth.token` or, failing that, from the
//     `Authorization: Bearer` header of the connection's first request, and refuses the socket with
//     connect_error data.code unauthorized, invalid_token, token_expired, token_not_valid_yet or
//     forbidden_namespace;
//   - an authenticated socket is in its user's personal room (rooms.UserRoom) before the client
//     hears that it is connected, and is disconnected with reason token_expired at the token's `exp`
//     (a chorus:disconnect event with that code comes first);
//   - the `refresh` request ({token} or the token itself) replaces the socket's token with a newer
//     one of the same user, answering {ok: true, exp} (exp in Unix seconds, null if none).
func InstallAuth(n *sio.Namespace, o AuthOptions) {
	if o.Mode == AuthNone || o.Authenticator == nil {
		return
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	n.HandshakeRooms(rooms.IsUserRoom) // a session recovers only under the same user
	n.Use(func(_ context.Context, h *sio.Handshake, auth json.RawMessage) error {
		token, err := tokenOf(h, auth)
		if err != nil {
			return err
		}
		if token == "" {
			if o.Mode == AuthOptional {
				return nil
			}
			return sio.Errorf(CodeUnauthorized, "%s requires a token: auth.token or an Authorization: Bearer header", n.Name())
		}
		id, err := o.Authenticator.Verify(token)
		if err != nil {
			return asAuthError(err)
		}
		if !id.allowsNamespace(n.Name()) {
			return sio.Errorf(CodeForbiddenNamespace, "the token does not allow namespace %s", n.Name())
		}
		h.Session = &session{id: id, leeway: o.Leeway, log: o.Logger}
		h.Rooms = append(h.Rooms, rooms.UserRoom(id.User))
		return nil
	})
	n.OnConnect(func(c *sio.Conn) {
		if s := sessionOf(c); s != nil {
			s.start(c)
		}
	})
	n.OnDisconnect(func(c *sio.Conn, _ string) {
		if s := sessionOf(c); s != nil {
			s.stop()
		}
	})
	sio.Handle(n, "refresh", func(_ context.Context, c *sio.Conn, req refreshReq) (refreshAck, error) {
		s := sessionOf(c)
		if s == nil {
			return refreshAck{}, sio.Errorf(CodeUnauthorized, "this socket connected without a token: reconnect with one")
		}
		id, err := o.Authenticator.Verify(req.Token)
		if err != nil {
			return refreshAck{}, asAuthError(err)
		}
		if !id.allowsNamespace(n.Name()) {
			return refreshAck{}, sio.Errorf(CodeForbiddenNamespace, "the token does not allow namespace %s", n.Name())
		}
		if !s.refresh(id) {
			return refreshAck{}, sio.Errorf(CodeSubjectMismatch, "the token is for another user")
		}
		ack := refreshAck{OK: true}
		if !id.Expires.IsZero() {
			exp := id.Expires.Unix()
			ack.Exp = &exp
		}
		return ack, nil
	})
}

// IdentityOf returns the identity of an authenticated socket (as its last refresh left it); false
// for an anonymous one.
func IdentityOf(c *sio.Conn) (Identity, bool) {
	s := sessionOf(c)
	if s == nil {
		return Identity{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id, true
}

func sessionOf(c *sio.Conn) *session {
	s, _ := c.Handshake().Session.(*session)
	return s
}

// tokenOf returns the token of a handshake: auth.token, else the bearer of the Authorization header;
// "" if there is none. A token that is not a string is an error.
func tokenOf(h *sio.Handshake, auth json.RawMessage) (string, error) {
	var a struct {
		Token any `json:"token"`
	}
	if json.Unmarshal(auth, &a) == nil {
		switch t := a.Token.(type) {
		case string:
			if t != "" {
				return t, nil
			}
		case nil:
		default:
			return "", sio.Errorf(CodeInvalidToken, "auth.token must be a string")
		}
	}
	for _, v := range h.Headers["Authorization"] {
		if scheme, token, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
			if token = strings.TrimSpace(token); token != "" {
				return token, nil
			}
		}
	}
	return "", nil
}

// refreshReq is the argument of `refresh`: {token: "..."} or the token itself.
type refreshReq struct {
	Token string
}

func (r *refreshReq) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &r.Token)
	}
	var v struct {
		Token string `json:"token"`
	}
	err := json.Unmarshal(b, &v)
	r.Token = v.Token
	return err
}

func (r *refreshReq) Validate() error {
	if r.Token == "" {
		return sio.Errorf(sio.CodeInvalidArgument, "refresh takes {token} with a non-empty token")
	}
	return nil
}

type refreshAck struct {
	OK  bool   `json:"ok"`
	Exp *int64 `json:"exp"`
}

// start arms the expiry timer of a socket that has just connected.
func (s *session) start(c *sio.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = c
	s.armLocked()
}

func (s *session) armLocked() {
	if s.stopped || s.id.Expires.IsZero() {
		if s.timer != nil {
			s.timer.Stop()
		}
		return
	}
	d := time.Until(s.id.Expires.Add(s.leeway))
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.expire)
		return
	}
	s.timer.Reset(d)
}

// refresh replaces the identity with id, of the same user; false if id is another user's.
func (s *session) refresh(id Identity) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id.User != s.id.User {
		return false
	}
	s.id = id
	s.armLocked()
	return true
}

func (s *session) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
}

// expire disconnects the socket if its token has expired; a refresh that raced the timer wins.
func (s *session) expire() {
	s.mu.Lock()
	if s.stopped || s.id.Expires.IsZero() || time.Now().Before(s.id.Expires.Add(s.leeway)) {
		s.mu.Unlock()
		return
	}
	c, user := s.conn, s.id.User
	s.mu.Unlock()
	s.log.Info("token expired", "sid", c.ID(), "nsp", c.Namespace().Name(), "user", user)
	c.DisconnectWith(sio.Errorf(CodeTokenExpired, "the token has expired: send refresh before exp, or reconnect with a new token"), false)
}

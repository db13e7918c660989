package middleware

import (
	"slices"
	"time"

	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// Authenticator verifies the tokens clients present and says who they are.
//
// chorus calls Verify on the connection's reader goroutine: once for each namespace handshake that
// carries a token (handshake `auth.token`, or the `Authorization: Bearer` header of the connection's
// first request) and once for each `refresh` request. Calls for different connections run
// concurrently, so an implementation must be safe for concurrent use; it must answer quickly and
// must not wait on the network (keys are loaded before chorus serves), because the connection reads
// nothing else meanwhile.
//
// A nil error means the token is genuine and valid now; the Identity then names its user. An error
// refuses the handshake (connect_error) or the refresh (ack error): an *sio.Error's code is what the
// client sees (CodeInvalidToken, CodeTokenExpired, CodeTokenNotValidYet); any other error is
// reported to the client as CodeInvalidToken.
type Authenticator interface {
	Verify(token string) (Identity, error)
}

// Identity is what a verified token says about its client.
type Identity struct {
	// User is the token's `sub` claim: the user id. Every socket of the user joins the personal
	// room rooms.UserRoom(User), through which the HTTP API reaches all of the user's devices.
	User string
	// Expires is the token's `exp`; zero if the token has none. The socket is disconnected with
	// reason token_expired then, unless a `refresh` brings a later one.
	Expires time.Time
	// Join and Publish are the room patterns ('*' wildcard) the token grants on top of the
	// namespace's own policy: claim `rooms: {join: [...], publish: [...]}`.
	Join, Publish []string
	// Namespaces, if not nil, are the namespace patterns the token may connect to: claim
	// `namespaces: [...]`. nil (claim absent) allows every namespace.
	Namespaces []string
}

// Grant is what the identity adds to a namespace's room policy.
func (id Identity) Grant() rooms.Grant {
	return rooms.Grant{User: id.User, Join: id.Join, Publish: id.Publish}
}

// allowsNamespace reports whether the token may connect to namespace nsp.
func (id Identity) allowsNamespace(nsp string) bool {
	return id.Namespaces == nil || slices.ContainsFunc(id.Namespaces, func(p string) bool { return rooms.Match(p, nsp) })
}

// Client-facing codes of authentication, in connect_error data.code and in refresh acks.
const (
	// CodeUnauthorized: the namespace requires a token and none came.
	CodeUnauthorized = "unauthorized"
	// CodeInvalidToken: the token does not verify (malformed, bad signature, unknown key, an
	// algorithm that is not allowed, wrong issuer or audience, no `sub`).
	CodeInvalidToken = "invalid_token"
	// CodeTokenExpired: the token's `exp` has passed.
	CodeTokenExpired = "token_expired"
	// CodeTokenNotValidYet: the token's `nbf` has not come yet.
	CodeTokenNotValidYet = "token_not_valid_yet"
	// CodeForbiddenNamespace: the token's `namespaces` claim does not include this namespace.
	CodeForbiddenNamespace = "forbidden_namespace"
	// CodeSubjectMismatch: a refresh brought a token for another user.
	CodeSubjectMismatch = "subject_mismatch"
)

// asAuthError turns what an Authenticator returned into the error the client sees.
func asAuthError(err error) *sio.Error {
	if e, ok := err.(*sio.Error); ok {
		return e
	}
	return &sio.Error{Code: CodeInvalidToken, Message: "the token does not verify"}
}

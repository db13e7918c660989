package middleware

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// JWTOptions configures a JWT Authenticator. At least one of Secret and Keys is required.
type JWTOptions struct {
	// Secret verifies HS256 tokens; empty allows no HS256 token. At least 32 bytes.
	Secret []byte
	// Keys verify RS256 and ES256 tokens (LoadKeys); nil allows neither.
	Keys *KeySet
	// Issuer, if not empty, is the `iss` every token must carry.
	Issuer string
	// Audience, if not empty, must be one of the token's `aud`.
	Audience string
	// Leeway is the clock skew allowed when `exp` and `nbf` are checked.
	Leeway time.Duration
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// maxTokenLen bounds the tokens that are parsed at all, in bytes.
const maxTokenLen = 8 << 10

// JWT verifies JSON Web Tokens with github.com/golang-jwt/jwt/v5: HS256 with a shared secret,
// RS256 and ES256 with public keys. The signature is checked first, then `exp`, `nbf` (each if
// present), `iss` and `aud` (if configured); `sub` is required. It implements Authenticator.
//
// Claims chorus reads besides the registered ones:
//
//	"rooms":      {"join": ["team-*"], "publish": ["team-a"]}   room patterns granted on top of the namespace's policy
//	"namespaces": ["/chat", "/tenant-acme"]                     namespace patterns the token may connect to (absent: any)
type JWT struct {
	secret []byte
	keys   *KeySet
	parser *jwt.Parser
}

// NewJWT returns a JWT Authenticator.
func NewJWT(o JWTOptions) (*JWT, error) {
	var methods []string
	if len(o.Secret) > 0 {
		if len(o.Secret) < MinSecretLen {
			return nil, fmt.Errorf("the JWT secret must be at least %d bytes", MinSecretLen)
		}
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if o.Keys != nil {
		methods = append(methods, o.Keys.algs()...)
	}
	if len(methods) == 0 {
		return nil, errors.New("no JWT secret or key")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(o.Leeway)}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	if o.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(o.Now))
	}
	return &JWT{secret: o.Secret, keys: o.Keys, parser: jwt.NewParser(opts...)}, nil
}

// MinSecretLen is the shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the
// hash's 256 bits).
const MinSecretLen = 32

type claims struct {
	jwt.RegisteredClaims
	Rooms *struct {
		Join    []string `json:"join"`
		Publish []string `json:"publish"`
	} `json:"rooms"`
	Namespaces []string `json:"namespaces"`
}

// Verify implements Authenticator.
func (a *JWT) Verify(token string) (Identity, error) {
	if len(token) > maxTokenLen {
		return Identity{}, sio.Errorf(CodeInvalidToken, "the token is longer than %d bytes", maxTokenLen)
	}
	var c claims
	_, err := a.parser.ParseWithClaims(token, &c, a.key)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, sio.Errorf(CodeTokenExpired, "the token has expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return Identity{}, sio.Errorf(CodeTokenNotValidYet, "the token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return Identity{}, sio.Errorf(CodeInvalidToken, "the token has the wrong issuer")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return Identity{}, sio.Errorf(CodeInvalidToken, "the token is not for this audience")
	case err != nil:
		return Identity{}, sio.Errorf(CodeInvalidToken, "the token does not verify")
	}
	switch {
	case c.Subject == "":
		return Identity{}, sio.Errorf(CodeInvalidToken, "the token has no sub (user id)")
	case len(c.Subject) > rooms.MaxUserLen:
		return Identity{}, sio.Errorf(CodeInvalidToken, "the token's sub is longer than %d bytes", rooms.MaxUserLen)
	}
	id := Identity{User: c.Subject, Namespaces: c.Namespaces}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	if c.Rooms != nil {
		id.Join, id.Publish = c.Rooms.Join, c.Rooms.Publish
	}
	return id, nil
}

// key picks the verification key of a token by its algorithm (already checked against the allowed
// ones) and its `kid`: the secret for HS256, else the public keys of that algorithm.
func (a *JWT) key(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == jwt.SigningMethodHS256.Alg() {
		if len(a.secret) == 0 {
			return nil, errors.New("HS256 is not configured")
		}
		return a.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	keys := a.keys.find(alg, kid)
	if len(keys) == 0 {
		return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
	for i, k := range keys {
		set.Keys[i] = k
	}
	return set, nil
}

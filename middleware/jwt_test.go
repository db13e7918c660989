package middleware_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/middleware"
)

const secret = "0123456789abcdef0123456789abcdef" // 32 bytes

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
)

// testKeys generates the test keys once per process (RSA generation is slow under -race).
func testKeys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		var err1, err2, err3 error
		rsaKey, err1 = rsa.GenerateKey(rand.Reader, 2048)
		rsaKey2, err2 = rsa.GenerateKey(rand.Reader, 2048)
		ecKey, err3 = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err := errors.Join(err1, err2, err3); err != nil {
			panic(err)
		}
	})
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemFile(t *testing.T, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, blk := range blocks {
		b = append(b, pem.EncodeToMemory(blk)...)
	}
	return writeTemp(t, "keys.pem", b)
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pubPEM(t *testing.T, pub any) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PUBLIC KEY", Bytes: der}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	raw, _ := k.Bytes() // 0x04 || x || y
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])}
}

func jsonFile(t *testing.T, v any) string {
	t.Helper()
	b, _ := json.Marshal(v)
	return writeTemp(t, "keys.json", b)
}

func code(err error) string {
	var e *sio.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "not an *sio.Error: " + err.Error()
	}
	return ""
}

// Every way a token can be wrong gets its own code; the signature is checked before the claims.
func TestJWTVerify(t *testing.T) {
	t.Parallel()
	testKeys(t)
	now := time.Now()
	future, past := now.Add(time.Hour).Unix(), now.Add(-time.Hour).Unix()
	ok := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "42", "exp": future, "iss": "auth.example", "aud": []string{"chorus", "other"}}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, []byte(secret), c, nil) }
	rsPEM := pemFile(t, pubPEM(t, &rsaKey.PublicKey))
	rsPEMBytes, _ := os.ReadFile(rsPEM)

	keys, err := middleware.LoadKeys(pemFile(t, pubPEM(t, &rsaKey.PublicKey), pubPEM(t, &ecKey.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	both, err := middleware.NewJWT(middleware.JWTOptions{Secret: []byte(secret), Keys: keys, Issuer: "auth.example", Audience: "chorus"})
	if err != nil {
		t.Fatal(err)
	}
	onlyKeys, err := middleware.NewJWT(middleware.JWTOptions{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	onlySecret, err := middleware.NewJWT(middleware.JWTOptions{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		a     *middleware.JWT
		token string
		want  string // code; "" = valid
	}{
		{"HS256 valid", both, hs(ok(nil)), ""},
		{"HS256 without exp", both, hs(ok(jwt.MapClaims{"exp": nil})), ""},
		{"expired", both, hs(ok(jwt.MapClaims{"exp": past})), middleware.CodeTokenExpired},
		{"not valid yet", both, hs(ok(jwt.MapClaims{"nbf": future})), middleware.CodeTokenNotValidYet},
		{"nbf passed", both, hs(ok(jwt.MapClaims{"nbf": past})), ""},
		{"wrong issuer", both, hs(ok(jwt.MapClaims{"iss": "evil.example"})), middleware.CodeInvalidToken},
		{"no issuer when one is required", both, hs(ok(jwt.MapClaims{"iss": nil})), middleware.CodeInvalidToken},
		{"wrong audience", both, hs(ok(jwt.MapClaims{"aud": "someone-else"})), middleware.CodeInvalidToken},
		{"audience as a string", both, hs(ok(jwt.MapClaims{"aud": "chorus"})), ""},
		{"issuer and audience not checked when not configured", onlySecret, hs(ok(jwt.MapClaims{"iss": "x", "aud": "y"})), ""},
		{"no sub", both, hs(ok(jwt.MapClaims{"sub": nil})), middleware.CodeInvalidToken},
		{"sub too long for a personal room", both, hs(ok(jwt.MapClaims{"sub": strings.Repeat("u", 124)})), middleware.CodeInvalidToken},
		{"wrong secret", both, sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), ok(nil), nil), middleware.CodeInvalidToken},
		{"expired and wrong secret: the signature comes first", both, sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), ok(jwt.MapClaims{"exp": past}), nil), middleware.CodeInvalidToken},
		{"alg none", both, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ok(nil), nil), middleware.CodeInvalidToken},
		{"HS384 not allowed", both, sign(t, jwt.SigningMethodHS384, []byte(secret), ok(nil), nil), middleware.CodeInvalidToken},
		{"HS256 without a secret configured", onlyKeys, hs(ok(nil)), middleware.CodeInvalidToken},
		// The classic confusion: an HS256 token whose "secret" is the server's RSA public key.
		{"HS256 signed with the RSA public key", onlyKeys, sign(t, jwt.SigningMethodHS256, rsPEMBytes, ok(nil), nil), middleware.CodeInvalidToken},
		{"RS256 valid", both, sign(t, jwt.SigningMethodRS256, rsaKey, ok(nil), nil), ""},
		{"RS256 from another key", both, sign(t, jwt.SigningMethodRS256, rsaKey2, ok(nil), nil), middleware.CodeInvalidToken},
		{"RS256 without keys configured", onlySecret, sign(t, jwt.SigningMethodRS256, rsaKey, ok(nil), nil), middleware.CodeInvalidToken},
		{"RS512 not allowed", both, sign(t, jwt.SigningMethodRS512, rsaKey, ok(nil), nil), middleware.CodeInvalidToken},
		{"ES256 valid", both, sign(t, jwt.SigningMethodES256, ecKey, ok(nil), nil), ""},
		{"ES256 expired", both, sign(t, jwt.SigningMethodES256, ecKey, ok(jwt.MapClaims{"exp": past}), nil), middleware.CodeTokenExpired},
		{"malformed", both, "not.a.token", middleware.CodeInvalidToken},
		{"garbage", both, "\x00\xff", middleware.CodeInvalidToken},
		{"too long", both, hs(ok(jwt.MapClaims{"pad": strings.Repeat("p", 9000)})), middleware.CodeInvalidToken},
		{"rooms claim of the wrong type", both, hs(ok(jwt.MapClaims{"rooms": "all"})), middleware.CodeInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.a.Verify(tt.token)
			if got := code(err); got != tt.want {
				t.Fatalf("Verify: code %q (%v), want %q", got, err, tt.want)
			}
			if tt.want == "" && id.User != "42" {
				t.Errorf("User = %q, want 42", id.User)
			}
		})
	}
}

// The identity carries sub, exp and the rooms and namespaces claims.
func TestJWTIdentity(t *testing.T) {
	t.Parallel()
	a, err := middleware.NewJWT(middleware.JWTOptions{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tok := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{
		"sub": "alice", "exp": exp.Unix(),
		"rooms":      map[string]any{"join": []string{"team-*"}, "publish": []string{"team-a", "user:*"}},
		"namespaces": []string{"/chat", "/tenant-acme*"},
	}, nil)
	id, err := a.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	want := middleware.Identity{User: "alice", Expires: exp, Join: []string{"team-*"}, Publish: []string{"team-a", "user:*"}, Namespaces: []string{"/chat", "/tenant-acme*"}}
	if !reflect.DeepEqual(id, want) || !id.Expires.Equal(exp) {
		t.Errorf("Identity = %+v\nwant %+v", id, want)
	}
	if g := id.Grant(); g.User != "alice" || !reflect.DeepEqual(g.Join, want.Join) || !reflect.DeepEqual(g.Publish, want.Publish) {
		t.Errorf("Grant = %+v", g)
	}
}

// exp and nbf are checked against the clock with the configured leeway.
func TestJWTLeeway(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	strict, _ := middleware.NewJWT(middleware.JWTOptions{Secret: []byte(secret), Now: clock})
	lenient, _ := middleware.NewJWT(middleware.JWTOptions{Secret: []byte(secret), Now: clock, Leeway: 30 * time.Second})
	expired := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "1", "exp": now.Add(-10 * time.Second).Unix()}, nil)
	early := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "1", "nbf": now.Add(10 * time.Second).Unix()}, nil)
	for _, tt := range []struct {
		name  string
		a     *middleware.JWT
		token string
		want  string
	}{
		{"expired 10s ago, no leeway", strict, expired, middleware.CodeTokenExpired},
		{"expired 10s ago, 30s leeway", lenient, expired, ""},
		{"valid in 10s, no leeway", strict, early, middleware.CodeTokenNotValidYet},
		{"valid in 10s, 30s leeway", lenient, early, ""},
	} {
		if _, err := tt.a.Verify(tt.token); code(err) != tt.want {
			t.Errorf("%s: %v, want code %q", tt.name, err, tt.want)
		}
	}
}

func TestNewJWTRefusesWeakSetups(t *testing.T) {
	t.Parallel()
	if _, err := middleware.NewJWT(middleware.JWTOptions{}); err == nil {
		t.Error("no secret and no keys accepted")
	}
	if _, err := middleware.NewJWT(middleware.JWTOptions{Secret: []byte("short")}); err == nil {
		t.Error("a 5-byte secret accepted")
	}
}

// Keys come from PEM (PKIX, PKCS#1, certificates) or JSON (a JWKS or one JWK); a token's kid picks
// among JWKS keys.
func TestLoadKeys(t *testing.T) {
	t.Parallel()
	testKeys(t)
	certDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkixName("chorus-test"),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkixName("chorus-test")}, &rsaKey.PublicKey, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"sub": "42", "exp": time.Now().Add(time.Hour).Unix()}
	rs := sign(t, jwt.SigningMethodRS256, rsaKey, claims, nil)
	rsKid1 := sign(t, jwt.SigningMethodRS256, rsaKey, claims, map[string]any{"kid": "k1"})
	rs2Kid2 := sign(t, jwt.SigningMethodRS256, rsaKey2, claims, map[string]any{"kid": "k2"})
	rs2KidUnknown := sign(t, jwt.SigningMethodRS256, rsaKey2, claims, map[string]any{"kid": "nope"})
	es := sign(t, jwt.SigningMethodES256, ecKey, claims, map[string]any{"kid": "e1"})

	tests := []struct {
		name  string
		path  string
		valid []string // tokens that must verify
		wrong []string // tokens that must not
	}{
		{"PEM PKIX", pemFile(t, pubPEM(t, &rsaKey.PublicKey)), []string{rs, rsKid1}, []string{es, rs2Kid2}},
		{"PEM PKCS#1", pemFile(t, &pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), []string{rs}, []string{es}},
		{"PEM certificate", pemFile(t, &pem.Block{Type: "CERTIFICATE", Bytes: certDER}), []string{rs}, []string{rs2Kid2}},
		{"PEM EC", pemFile(t, pubPEM(t, &ecKey.PublicKey)), []string{es}, []string{rs}},
		{"PEM several", pemFile(t, pubPEM(t, &rsaKey.PublicKey), pubPEM(t, &rsaKey2.PublicKey), pubPEM(t, &ecKey.PublicKey)), []string{rs, rs2Kid2, rs2KidUnknown, es}, nil},
		{"JWKS by kid", jsonFile(t, map[string]any{"keys": []any{rsaJWK("k1", &rsaKey.PublicKey), rsaJWK("k2", &rsaKey2.PublicKey), ecJWK("e1", &ecKey.PublicKey)}}),
			[]string{rs, rsKid1, rs2Kid2, es}, []string{rs2KidUnknown}},
		{"JWKS skips encryption keys and other types", jsonFile(t, map[string]any{"keys": []any{
			map[string]any{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
			map[string]any{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
			map[string]any{"kty": "RSA", "alg": "RS512", "n": "AQAB", "e": "AQAB"},
			rsaJWK("k1", &rsaKey.PublicKey),
		}}), []string{rsKid1}, []string{rs2Kid2}},
		{"single JWK", jsonFile(t, ecJWK("e1", &ecKey.PublicKey)), []string{es}, []string{rs}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := middleware.LoadKeys(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			a, err := middleware.NewJWT(middleware.JWTOptions{Keys: ks})
			if err != nil {
				t.Fatal(err)
			}
			for i, tok := range tt.valid {
				if _, err := a.Verify(tok); err != nil {
					t.Errorf("valid token %d refused: %v", i, err)
				}
			}
			for i, tok := range tt.wrong {
				if _, err := a.Verify(tok); code(err) != middleware.CodeInvalidToken {
					t.Errorf("token %d: %v, want invalid_token", i, err)
				}
			}
		})
	}
}

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }

func TestLoadKeysErrors(t *testing.T) {
	t.Parallel()
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	privDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	tests := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(t.TempDir(), "none.pem"), "no such file"},
		{"empty", writeTemp(t, "e.pem", nil), "no PEM public key"},
		{"private key", pemFile(t, &pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), "private key"},
		{"RSA under 2048 bits", pemFile(t, pubPEM(t, &small.PublicKey)), "1024 bits"},
		{"P-384", pemFile(t, pubPEM(t, &p384.PublicKey)), "P-256"},
		{"unknown block", pemFile(t, &pem.Block{Type: "DH PARAMETERS", Bytes: []byte{1}}), "unsupported type"},
		{"broken DER", pemFile(t, &pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}), "PEM block 1"},
		{"JWKS without usable keys", jsonFile(t, map[string]any{"keys": []any{map[string]any{"kty": "oct", "k": "c2VjcmV0"}}}), "no usable key"},
		{"JWKS with a private key", jsonFile(t, map[string]any{"keys": []any{map[string]any{"kty": "EC", "crv": "P-256", "d": "AAAA"}}}), "private key"},
		{"JWK point off the curve", jsonFile(t, map[string]any{"kty": "EC", "crv": "P-256", "x": b64(make([]byte, 32)), "y": b64(make([]byte, 32))}), "kid"},
		{"JWK small RSA", jsonFile(t, rsaJWK("s", &small.PublicKey)), "1024 bits"},
		{"not JSON keys", writeTemp(t, "k.json", []byte(`{"hello":1}`)), "neither a JWKS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := middleware.LoadKeys(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadKeys: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

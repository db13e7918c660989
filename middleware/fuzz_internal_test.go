package middleware

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

const fuzzSecret = "fuzz-secret-0123456789abcdef-0123456789"

var (
	fuzzKeysOnce sync.Once
	fuzzRSA      *rsa.PrivateKey
	fuzzEC       *ecdsa.PrivateKey
)

func fuzzKeys() {
	fuzzKeysOnce.Do(func() {
		var err error
		if fuzzRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if fuzzEC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func fuzzPEM(pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func fuzzSign(method jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		panic(err)
	}
	return s
}

// FuzzVerify feeds any token to a verifier holding an HS256 secret and RS256 and ES256 public keys.
// Nothing panics; a token is accepted only with one of those three algorithms, a sub that fits a
// personal room and claims that are what its payload says. The seeds are real tokens and the
// classic forgeries: alg none, HS256 signed with the public key (key confusion), a stripped
// signature, expired and not-yet-valid tokens, a wrong issuer or audience, a huge token.
func FuzzVerify(f *testing.F) {
	fuzzKeys()
	now := time.Now()
	claims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix(), "iss": "chorus-test", "aud": "chorus"}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	hs := fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(nil), nil)
	for _, s := range []string{
		hs,
		fuzzSign(jwt.SigningMethodRS256, fuzzRSA, claims(jwt.MapClaims{"rooms": map[string]any{"join": []string{"team-*"}}}), map[string]any{"kid": "r1"}),
		fuzzSign(jwt.SigningMethodES256, fuzzEC, claims(jwt.MapClaims{"namespaces": []string{"/chat"}}), nil),
		fuzzSign(jwt.SigningMethodHS256, fuzzPEM(&fuzzRSA.PublicKey), claims(nil), nil), // key confusion
		fuzzSign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), nil),
		hs[:strings.LastIndexByte(hs, '.')+1],
		fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(jwt.MapClaims{"exp": now.Add(-time.Hour).Unix()}), nil),
		fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}), nil),
		fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(jwt.MapClaims{"iss": "other"}), nil),
		fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(jwt.MapClaims{"aud": []string{"x", "chorus"}}), nil),
		fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(jwt.MapClaims{"sub": strings.Repeat("s", 200)}), nil),
		fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(jwt.MapClaims{"sub": 42}), nil),
		fuzzSign(jwt.SigningMethodHS256, []byte(fuzzSecret), claims(jwt.MapClaims{"rooms": "all"}), nil),
		"", "a.b.c", "..", strings.Repeat("x", 9000), "eyJhbGciOiJIUzI1NiJ9.e30.",
	} {
		f.Add(s)
	}
	verifier, err := NewJWT(JWTOptions{Secret: []byte(fuzzSecret), Keys: &KeySet{keys: []publicKey{
		{kid: "r1", alg: "RS256", key: &fuzzRSA.PublicKey}, {alg: "ES256", key: &fuzzEC.PublicKey},
	}}, Issuer: "chorus-test", Audience: "chorus"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := verifier.Verify(token)
		if err != nil {
			if _, ok := err.(*sio.Error); !ok {
				t.Fatalf("error %T %v: not a coded error", err, err)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %q, not three parts", token)
		}
		head, _ := base64.RawURLEncoding.DecodeString(parts[0])
		var h struct{ Alg string }
		json.Unmarshal(head, &h)
		if h.Alg != "HS256" && h.Alg != "RS256" && h.Alg != "ES256" {
			t.Fatalf("accepted %q with alg %q", token, h.Alg)
		}
		body, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var c struct{ Sub string }
		json.Unmarshal(body, &c)
		if id.User == "" || id.User != c.Sub || len(id.User) > rooms.MaxUserLen {
			t.Fatalf("accepted %q as user %q; its sub is %q", token, id.User, c.Sub)
		}
	})
}

// FuzzParseKeys feeds any file to the keys loader (PEM, JWKS or one JWK): nothing panics, and a
// set it accepts holds only keys it can use: RSA of at least 2048 bits for RS256, P-256 for ES256.
func FuzzParseKeys(f *testing.F) {
	fuzzKeys()
	n := base64.RawURLEncoding.EncodeToString(fuzzRSA.N.Bytes())
	x := base64.RawURLEncoding.EncodeToString(fuzzEC.X.FillBytes(make([]byte, 32)))
	y := base64.RawURLEncoding.EncodeToString(fuzzEC.Y.FillBytes(make([]byte, 32)))
	for _, s := range []string{
		string(fuzzPEM(&fuzzRSA.PublicKey)) + string(fuzzPEM(&fuzzEC.PublicKey)),
		string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&fuzzRSA.PublicKey)})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})),
		`{"keys":[{"kty":"RSA","kid":"r1","n":"` + n + `","e":"AQAB"},{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}]}`,
		`{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `","alg":"ES256"}`,
		`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`, `{"keys":[{"kty":"RSA","n":"` + n + `","e":"AQ"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`, `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`,
		`{"keys":[{"kty":"RSA","n":"` + n + `","e":"AQAB","d":"AQAB"}]}`, `{"keys":null}`, `{"keys":[]}`, `{`, "", "-----BEGIN",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := parseKeys(data)
		if err != nil {
			return
		}
		if ks.Len() == 0 {
			t.Fatal("an empty key set was accepted")
		}
		for _, k := range ks.keys {
			switch key := k.key.(type) {
			case *rsa.PublicKey:
				if k.alg != "RS256" || key.N.BitLen() < minRSABits || key.E < 3 {
					t.Fatalf("accepted RSA key of %d bits, e %d, for %s", key.N.BitLen(), key.E, k.alg)
				}
			case *ecdsa.PublicKey:
				if k.alg != "ES256" || key.Curve != elliptic.P256() {
					t.Fatalf("accepted EC key on %s for %s", key.Curve.Params().Name, k.alg)
				}
			default:
				t.Fatalf("accepted a key of type %T", k.key)
			}
		}
	})
}

// FuzzClientIP feeds any peer address and X-Forwarded-For to the address finder, behind trusted
// proxies: nothing panics; an untrusted peer is always the answer (its headers prove nothing); the
// answer is otherwise an address from the header or the peer, and never a trusted proxy unless
// every hop was one.
func FuzzClientIP(f *testing.F) {
	for _, s := range [][2]string{
		{"127.0.0.1:5000", "203.0.113.7"}, {"10.1.2.3:80", "198.51.100.1, 10.0.0.9"}, {"[::1]:80", "2001:db8::1"},
		{"127.0.0.1:1", "garbage, 203.0.113.7"}, {"127.0.0.1:1", "10.0.0.1, 10.0.0.2"}, {"8.8.8.8:53", "203.0.113.7"},
		{"127.0.0.1:1", "[2001:db8::1]:443"}, {"127.0.0.1:1", "fe80::1%eth0"}, {"127.0.0.1:1", "::ffff:10.0.0.1"},
		{"127.0.0.1:1", ""}, {"not an address", "1.2.3.4"}, {"127.0.0.1:1", ",,,"}, {"127.0.0.1:1", "1.2.3.4\n5.6.7.8"},
	} {
		f.Add(s[0], s[1])
	}
	cip, err := NewClientIP([]string{"127.0.0.1", "10.0.0.0/8", "::1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{}}
		for v := range strings.SplitSeq(xff, "\n") {
			r.Header.Add("X-Forwarded-For", v)
		}
		got := cip.Addr(r)
		peer := parseHostAddr(remote)
		if !peer.IsValid() || !cip.isTrusted(peer) {
			if got != peer {
				t.Fatalf("untrusted peer %q with X-Forwarded-For %q: got %v", remote, xff, got)
			}
			return
		}
		if !got.IsValid() {
			t.Fatalf("trusted peer %q: invalid answer", remote)
		}
		if got != peer && cip.isTrusted(got) {
			// Only when every hop of the header is a trusted proxy: the leftmost one is the answer.
			for v := range strings.SplitSeq(xff, "\n") {
				for h := range strings.SplitSeq(v, ",") {
					if a := parseHostAddr(strings.TrimSpace(h)); a.IsValid() && !cip.isTrusted(a) {
						t.Fatalf("%q via %q: answered the trusted proxy %v although %v is not one", xff, remote, got, a)
					}
				}
			}
		}
		if key := cip.Key(r); key == "" || (key == "unknown") != !got.IsValid() {
			t.Fatalf("key %q for %v", key, got)
		}
	})
}

// FuzzHandshakeToken feeds any handshake auth object and Authorization header to tokenOf, and any
// refresh argument to its decoder: nothing panics; auth.token, when a non-empty string, is the
// token; a token that is not a string is refused with invalid_token; a refresh request Validate
// accepts has a token.
func FuzzHandshakeToken(f *testing.F) {
	for _, s := range [][2]string{
		{`{"token":"abc"}`, ""}, {`{}`, "Bearer abc"}, {`{"token":42}`, ""}, {`{"token":null}`, "bearer  x "},
		{`{"token":""}`, "Basic abc"}, {`"abc"`, "Bearer"}, {`[1]`, "Bearer "}, {``, ""}, {`{"token":{"a":1}}`, ""},
	} {
		f.Add([]byte(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, auth []byte, header string) {
		h := &sio.Handshake{Headers: http.Header{"Authorization": {header}}}
		tok, err := tokenOf(h, auth)
		var a struct{ Token any }
		decoded := json.Unmarshal(auth, &a) == nil
		switch v := a.Token.(type) {
		case string:
			if decoded && v != "" && (err != nil || tok != v) {
				t.Fatalf("auth %s: token %q, %v", auth, tok, err)
			}
		case nil:
		default:
			if decoded && err == nil {
				t.Fatalf("auth %s: a token that is not a string was taken", auth)
			}
		}
		if err != nil && tok != "" {
			t.Fatalf("both a token and an error")
		}
		var req refreshReq
		if req.UnmarshalJSON(auth) == nil && req.Validate() == nil && req.Token == "" {
			t.Fatalf("refresh %s accepted without a token", auth)
		}
	})
}

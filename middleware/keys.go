package middleware

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
)

// KeySet holds the public keys that verify RS256 and ES256 tokens.
type KeySet struct {
	keys []publicKey
}

type publicKey struct {
	kid string // "" for PEM keys and JWKs without one: tried for every kid
	alg string // "RS256" or "ES256"
	key any    // *rsa.PublicKey or *ecdsa.PublicKey (P-256)
}

// minRSABits is the smallest RSA key accepted.
const minRSABits = 2048

// LoadKeys reads public keys from a file: PEM (blocks of PUBLIC KEY, RSA PUBLIC KEY or
// CERTIFICATE) or JSON, either a JWKS ({"keys": [...]}) or a single JWK. RSA keys (at least 2048
// bits) verify RS256 tokens and P-256 EC keys verify ES256 tokens. In a JWKS, keys for encryption
// (use "enc") or of other types and algorithms are skipped; at least one usable key is required.
// A private key in the file is an error: chorus needs, and should hold, only public keys.
func LoadKeys(path string) (*KeySet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ks, err := parseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ks, nil
}

// parseKeys reads the contents of a keys file (LoadKeys).
func parseKeys(data []byte) (*KeySet, error) {
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		return parseJWKS(t)
	}
	return parsePEM(data)
}

func parsePEM(data []byte) (*KeySet, error) {
	ks := &KeySet{}
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var pub any
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			if bytes.Contains([]byte(block.Type), []byte("PRIVATE")) {
				return nil, fmt.Errorf("PEM block %d is a private key (%s): give chorus public keys only", n, block.Type)
			}
			return nil, fmt.Errorf("PEM block %d: unsupported type %q (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err)
		}
		k, err := newPublicKey("", pub)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		ks.keys = append(ks.keys, k)
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("no PEM public key or certificate found (or a JWKS starting with '{')")
	}
	return ks, nil
}

func newPublicKey(kid string, pub any) (publicKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return publicKey{}, fmt.Errorf("RSA key of %d bits: at least %d are required", k.N.BitLen(), minRSABits)
		}
		return publicKey{kid: kid, alg: "RS256", key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return publicKey{}, fmt.Errorf("EC key on %s: ES256 needs P-256", k.Curve.Params().Name)
		}
		return publicKey{kid: kid, alg: "ES256", key: k}, nil
	}
	return publicKey{}, fmt.Errorf("unsupported key type %T (want RSA or P-256 EC)", pub)
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

func parseJWKS(data []byte) (*KeySet, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	if set.Keys == nil { // a single JWK
		var k jwk
		if err := json.Unmarshal(data, &k); err != nil || k.Kty == "" {
			return nil, errors.New(`JSON that is neither a JWKS ({"keys": [...]}) nor a JWK`)
		}
		set.Keys = []jwk{k}
	}
	ks := &KeySet{}
	for i, k := range set.Keys {
		if k.D != "" {
			return nil, fmt.Errorf("key %d (kid %q) is a private key: give chorus public keys only", i, k.Kid)
		}
		if k.Use == "enc" || (k.Alg != "" && k.Alg != "RS256" && k.Alg != "ES256") {
			continue
		}
		var pub any
		switch k.Kty {
		case "RSA":
			n, err1 := b64int(k.N)
			e, err2 := b64int(k.E)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
			}
			if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
				return nil, fmt.Errorf("key %d (kid %q): bad RSA exponent", i, k.Kid)
			}
			pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			if k.Crv != "P-256" {
				continue
			}
			x, err1 := base64.RawURLEncoding.DecodeString(k.X)
			y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
			if err := errors.Join(err1, err2); err != nil || len(x) != 32 || len(y) != 32 {
				return nil, fmt.Errorf("key %d (kid %q): x and y must be 32 bytes of base64url", i, k.Kid)
			}
			ec, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), slices.Concat([]byte{4}, x, y))
			if err != nil {
				return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
			}
			pub = ec
		default:
			continue
		}
		pk, err := newPublicKey(k.Kid, pub)
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
		}
		if k.Alg != "" && k.Alg != pk.alg {
			return nil, fmt.Errorf("key %d (kid %q): alg %s does not fit a %s key", i, k.Kid, k.Alg, k.Kty)
		}
		ks.keys = append(ks.keys, pk)
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("no usable key (RSA or P-256 EC for signatures)")
	}
	return ks, nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("bad base64url number")
	}
	return new(big.Int).SetBytes(b), nil
}

// algs returns the algorithms the set has keys for.
func (ks *KeySet) algs() []string {
	var out []string
	for _, k := range ks.keys {
		if !slices.Contains(out, k.alg) {
			out = append(out, k.alg)
		}
	}
	return out
}

// Len returns the number of keys.
func (ks *KeySet) Len() int { return len(ks.keys) }

// find returns the keys for alg that may have signed a token with this kid: those with that kid,
// and those without a kid of their own.
func (ks *KeySet) find(alg, kid string) []any {
	if ks == nil {
		return nil
	}
	var out []any
	for _, k := range ks.keys {
		if k.alg == alg && (k.kid == "" || kid == "" || k.kid == kid) {
			out = append(out, k.key)
		}
	}
	return out
}

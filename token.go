package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The access token is a JWT (RFC 7519) in compact JWS form (RFC 7515), signed
// with HMAC-SHA256. verifyToken checks the shape, then the MAC over the exact
// bytes received, before decoding anything: a forger's JSON is never parsed.
// Claims also carry expires_at, the original's expiry (compat.go).

const maxTokenBytes = 4096 // ours are about 250 bytes

var (
	errTokenExpired = errors.New("token expired")
	errTokenInvalid = errors.New("invalid token")
	// b64 is base64url without padding (RFC 7515 §2), strict so that each byte
	// string has one accepted encoding (verifyToken refuses CR and LF).
	b64                = base64.RawURLEncoding.Strict()
	tokenHeaderSegment = b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
)

// tokenError wraps errTokenInvalid with a fixed reason, never the token's content.
func tokenError(reason string) error { return fmt.Errorf("%w: %s", errTokenInvalid, reason) }

// tokenClaims are the JWT claims myapi signs and reads. IssuedAt is only
// information: revocation compares Stamp with the account's (auth.go).
type tokenClaims struct {
	Sub                 string // the user's email
	Name                string
	Stamp               string // the account's security stamp, claim "stamp"; "" for none
	Sid                 string // the session's id (sessions.go); "" in the original's tokens
	IssuedAt, ExpiresAt time.Time
}

// signToken returns c as a compact HS256 JWT signed with key, times to the second.
func signToken(key []byte, c tokenClaims) string {
	payload, _ := json.Marshal(struct { // cannot fail: strings and integers
		Sub          string `json:"sub"`
		Name         string `json:"name"`
		IssuedAt     int64  `json:"iat"`
		ExpiresAt    int64  `json:"exp"`
		ExpiresAtUTC string `json:"expires_at"`
		Stamp        string `json:"stamp,omitempty"` // a private claim (RFC 7519 §4.3)
		Sid          string `json:"sid,omitempty"`   // OpenID Connect's session id
	}{c.Sub, c.Name, c.IssuedAt.Unix(), c.ExpiresAt.Unix(), c.ExpiresAt.UTC().Format(expiresAtLayout), c.Stamp, c.Sid})
	input := tokenHeaderSegment + "." + b64.EncodeToString(payload)
	return input + "." + b64.EncodeToString(hs256(key, input))
}

// hs256 is the HMAC-SHA256 of input under key.
func hs256(key []byte, input string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(input))
	return mac.Sum(nil)
}

// verifyToken returns the claims of a token one of keys signed; the error is
// errTokenExpired or wraps errTokenInvalid.
func verifyToken(token string, keys [][]byte, now time.Time) (tokenClaims, error) {
	if len(token) > maxTokenBytes {
		return tokenClaims{}, tokenError("too long")
	}
	header, rest, _ := strings.Cut(token, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	mac, err := b64.DecodeString(sig)
	// Only a full 32-byte MAC counts: a shorter one is easier to guess, and
	// HS384 or HS512 signatures mean another alg. The strict decoder skips
	// CR and LF: refused, so that a token has one spelling.
	if header == "" || payload == "" || err != nil || len(mac) != sha256.Size || strings.ContainsAny(token, "\r\n") {
		return tokenClaims{}, tokenError("not a compact JWS with a 32-byte MAC")
	}
	if !validMAC(token[:len(header)+1+len(payload)], mac, keys) {
		return tokenClaims{}, tokenError("bad signature")
	}
	if err := checkHeader(header); err != nil {
		return tokenClaims{}, err
	}
	claims, ok := decodeObject(payload)
	if !ok {
		return tokenClaims{}, tokenError("claims are not a base64url JSON object")
	}
	return readClaims(claims, now)
}

// validMAC reports whether mac is the HMAC-SHA256 of input under one of keys.
// An empty key never verifies: anyone can sign with it.
func validMAC(input string, mac []byte, keys [][]byte) bool {
	for _, key := range keys {
		if len(key) > 0 && hmac.Equal(hs256(key, input), mac) { // constant time
			return true
		}
	}
	return false
}

// checkHeader checks the JOSE header: alg is pinned to HS256 (RFC 8725
// §3.1), crit is refused (RFC 7515 §4.1.11: we know no extension), typ is
// optional, and kid, jku and the like are ignored: keys never come from it.
func checkHeader(seg string) error {
	if seg == tokenHeaderSegment {
		return nil // ours and python-jose's, byte for byte: no need to decode
	}
	h, ok := decodeObject(seg)
	if !ok {
		return tokenError("header is not a base64url JSON object")
	}
	if alg, _ := h["alg"].(string); alg != "HS256" {
		return tokenError("alg is not HS256")
	}
	if typ := "JWT"; !readMember(h, "typ", asString, &typ) || !strings.EqualFold(typ, "JWT") {
		return tokenError("typ is not JWT")
	}
	if _, ok := h["crit"]; ok {
		return tokenError("crit extension not understood")
	}
	return nil
}

// readClaims reads the claims at time now. The expiry is exp (RFC 7519
// §4.1.4) or expires_at, the earlier if both; claims not read here are ignored.
func readClaims(m map[string]any, now time.Time) (tokenClaims, error) {
	var c tokenClaims
	// An absent nbf is the zero time, long past; an absent expiry is the end
	// of year 9999, which no claim can name.
	noExpiry := time.Unix(maxNumericDate, 0).UTC()
	exp, expiresAt, nbf := noExpiry, noExpiry, time.Time{}
	if !readMember(m, "sub", asString, &c.Sub) ||
		!readMember(m, "name", asString, &c.Name) ||
		!readMember(m, "stamp", asString, &c.Stamp) ||
		!readMember(m, "sid", asString, &c.Sid) ||
		!readMember(m, "iat", numericDate, &c.IssuedAt) ||
		!readMember(m, "exp", numericDate, &exp) ||
		!readMember(m, "expires_at", dateTimeUTC, &expiresAt) ||
		!readMember(m, "nbf", numericDate, &nbf) {
		return tokenClaims{}, tokenError("malformed claim")
	}
	c.ExpiresAt = exp
	if expiresAt.Before(exp) {
		c.ExpiresAt = expiresAt
	}
	switch {
	case c.Sub == "":
		return tokenClaims{}, tokenError("no sub")
	case c.ExpiresAt.Equal(noExpiry):
		return tokenClaims{}, tokenError("no expiry")
	case nbf.After(now):
		return tokenClaims{}, tokenError("not valid yet")
	case !now.Before(c.ExpiresAt):
		return tokenClaims{}, errTokenExpired
	}
	return c, nil
}

// decodeObject decodes seg, a base64url JSON object, into a map, where names
// match exactly ("EXP" is not exp), and refuses bad UTF-8 (RFC 8259 §8.1).
func decodeObject(seg string) (m map[string]any, ok bool) {
	data, err := b64.DecodeString(seg)
	ok = err == nil && utf8.Valid(data) && json.Unmarshal(data, &m) == nil && m != nil // null is no object
	return m, ok
}

// readMember reads member name of m, if present, into *v with parse; false if malformed.
func readMember[T any](m map[string]any, name string, parse func(any) (T, bool), v *T) bool {
	if x, ok := m[name]; ok {
		*v, ok = parse(x)
		return ok
	}
	return true
}

func asString(v any) (s string, ok bool) { s, ok = v.(string); return s, ok }

// numericDate reads v as a NumericDate (RFC 7519 §2): seconds since the epoch.
func numericDate(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok || !(minNumericDate <= f && f < maxNumericDate) {
		return time.Time{}, false
	}
	return time.UnixMicro(int64(f * 1e6)).UTC(), true
}

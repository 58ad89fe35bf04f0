package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The access token is a JWT (RFC 7519) in compact JWS form (RFC 7515), signed
// with HMAC-SHA256. verifyToken checks the shape, then the MAC over the exact
// bytes received, before decoding anything: a forger's JSON is never parsed.

const (
	maxTokenBytes = 4096 // ours are about 250 bytes
	// tokenHeader is, byte for byte, the header python-jose wrote for the original.
	tokenHeader = `{"alg":"HS256","typ":"JWT"}`
	// expiresAtLayout is the original's expires_at: Python's str(datetime)
	// in UTC. time.Parse also reads the ".ffffff" Python may add.
	expiresAtLayout = time.DateTime
	// Dates must lie in years 1 to 9999, the years expiresAtLayout writes.
	minNumericDate = -62135596800 // 0001-01-01T00:00:00Z
	maxNumericDate = 253402300800 // 10000-01-01T00:00:00Z
)

var (
	errTokenExpired = errors.New("token expired")
	errTokenInvalid = errors.New("invalid token")

	// b64 is base64url without padding (RFC 7515 §2), strict so that each byte
	// string has one accepted encoding (verifySignature refuses CR and LF).
	b64 = base64.RawURLEncoding.Strict()

	tokenHeaderSegment = b64.EncodeToString([]byte(tokenHeader))
)

// tokenError wraps errTokenInvalid with a fixed reason, never the token's content.
func tokenError(reason string) error { return fmt.Errorf("%w: %s", errTokenInvalid, reason) }

// tokenClaims are the JWT claims myapi signs and reads. IssuedAt is only
// information: revocation compares Stamp with the account's (auth.go).
type tokenClaims struct {
	Sub       string // the user's email
	Name      string
	Stamp     string // the account's security stamp, claim "stamp"; "" for none
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// signToken returns a compact HS256 JWT for c signed with key. Times are
// written to the second; expires_at, the original service's own expiry
// claim, is written beside exp so that tokens pass both ways.
func signToken(key []byte, c tokenClaims) string {
	payload, _ := json.Marshal(struct { // cannot fail: strings and integers
		Sub          string `json:"sub"`
		Name         string `json:"name"`
		IssuedAt     int64  `json:"iat"`
		ExpiresAt    int64  `json:"exp"`
		ExpiresAtUTC string `json:"expires_at"`
		Stamp        string `json:"stamp,omitempty"` // a private claim (RFC 7519 §4.3)
	}{c.Sub, c.Name, c.IssuedAt.Unix(), c.ExpiresAt.Unix(), c.ExpiresAt.UTC().Format(expiresAtLayout), c.Stamp})
	input := tokenHeaderSegment + "." + b64.EncodeToString(payload)
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, input)
	return input + "." + b64.EncodeToString(mac.Sum(nil))
}

// verifyToken checks token against keys, the signing key first and then
// the previous ones (rotation), at time now and returns its claims. The
// error is errTokenExpired or wraps errTokenInvalid.
func verifyToken(token string, keys [][]byte, now time.Time) (tokenClaims, error) {
	header, payload, err := verifySignature(token, keys)
	if err != nil {
		return tokenClaims{}, err
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

// verifySignature checks that token is a compact JWS whose signature is the
// HMAC-SHA256 of its signing input under one of keys, and returns its header
// and payload segments, still encoded.
func verifySignature(token string, keys [][]byte) (header, payload string, err error) {
	if len(token) > maxTokenBytes {
		return "", "", tokenError("too long")
	}
	header, rest, _ := strings.Cut(token, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	if header == "" || payload == "" || sig == "" || strings.Contains(sig, ".") {
		return "", "", tokenError("not a compact JWS")
	}
	// The strict decoder skips CR and LF: refused, for one spelling.
	if strings.ContainsAny(token, "\r\n") {
		return "", "", tokenError("line break")
	}
	// Only a full 32-byte MAC counts: a shorter one is easier to guess, and
	// HS384 or HS512 signatures mean another alg.
	mac, err := b64.DecodeString(sig)
	if err != nil || len(mac) != sha256.Size {
		return "", "", tokenError("signature is not 32 bytes of base64url")
	}
	input := token[:len(header)+1+len(payload)]
	for _, key := range keys {
		if len(key) == 0 {
			continue // anyone can sign with an empty key
		}
		h := hmac.New(sha256.New, key)
		io.WriteString(h, input)
		if hmac.Equal(h.Sum(nil), mac) {
			return header, payload, nil
		}
	}
	return "", "", tokenError("bad signature")
}

// checkHeader checks the JOSE header segment. The algorithm is pinned to
// HS256 (RFC 8725 §3.1), so the header can only confirm it. crit is refused,
// as we implement no extension (RFC 7515 §4.1.11); kid, jku and the like are
// ignored: keys never come from the token. typ is optional (RFC 7519 §5.1).
func checkHeader(seg string) error {
	if seg == tokenHeaderSegment {
		return nil // ours and python-jose's: no need to decode
	}
	h, ok := decodeObject(seg)
	if !ok {
		return tokenError("header is not a base64url JSON object")
	}
	if alg, ok := jsonString(h["alg"]); !ok || alg != "HS256" {
		return tokenError("alg is not HS256")
	}
	if typ := "JWT"; !readMember(h, "typ", jsonString, &typ) || !strings.EqualFold(typ, "JWT") {
		return tokenError("typ is not JWT")
	}
	if _, ok := h["crit"]; ok {
		return tokenError("crit extension not understood")
	}
	return nil
}

// readClaims reads the claims at time now. The expiry is exp (RFC 7519
// §4.1.4) or the original service's expires_at, the earlier if both; claims
// not read here are ignored.
func readClaims(m map[string]json.RawMessage, now time.Time) (tokenClaims, error) {
	var c tokenClaims
	var exp, expiresAt, nbf time.Time // nbf is zero, long past, if absent
	if !readMember(m, "sub", jsonString, &c.Sub) ||
		!readMember(m, "name", jsonString, &c.Name) ||
		!readMember(m, "stamp", jsonString, &c.Stamp) ||
		!readMember(m, "iat", numericDate, &c.IssuedAt) ||
		!readMember(m, "exp", numericDate, &exp) ||
		!readMember(m, "expires_at", pythonDate, &expiresAt) ||
		!readMember(m, "nbf", numericDate, &nbf) {
		return tokenClaims{}, tokenError("malformed claim")
	}
	_, hasExp := m["exp"]
	_, hasExpiresAt := m["expires_at"]
	switch {
	case c.Sub == "":
		return tokenClaims{}, tokenError("no sub")
	case !hasExp && !hasExpiresAt:
		return tokenClaims{}, tokenError("no expiry")
	case nbf.After(now):
		return tokenClaims{}, tokenError("not valid yet")
	}
	c.ExpiresAt = exp
	if !hasExp || hasExpiresAt && expiresAt.Before(exp) {
		c.ExpiresAt = expiresAt
	}
	if !now.Before(c.ExpiresAt) {
		return tokenClaims{}, errTokenExpired
	}
	return c, nil
}

// decodeObject decodes seg, the base64url of a JSON object, into its members,
// so that names match exactly: encoding/json's struct fields read "EXP" as exp.
func decodeObject(seg string) (map[string]json.RawMessage, bool) {
	data, err := b64.DecodeString(seg)
	// JSON is UTF-8 (RFC 8259 §8.1); encoding/json would replace bad bytes.
	if err != nil || !utf8.Valid(data) {
		return nil, false
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(data, &m) == nil
}

// readMember sets *v to the member name of m read by parse, if there is one,
// and reports whether it was well formed.
func readMember[T any](m map[string]json.RawMessage, name string, parse func(json.RawMessage) (T, bool), v *T) bool {
	raw, ok := m[name]
	if !ok {
		return true
	}
	*v, ok = parse(raw)
	return ok
}

// jsonString reads raw, valid JSON, as a string; null is not one.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if !bytes.ContainsRune(raw, '\\') {
		return string(raw[1 : len(raw)-1]), true // no escapes: the bytes are the string
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// numericDate reads raw as a NumericDate (RFC 7519 §2): seconds since the
// epoch, integer or not. raw is valid JSON, so only a JSON number parses.
func numericDate(raw json.RawMessage) (time.Time, bool) {
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || !(minNumericDate <= f && f < maxNumericDate) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
}

// pythonDate reads raw as the original service's expires_at, in UTC.
func pythonDate(raw json.RawMessage) (time.Time, bool) {
	s, ok := jsonString(raw)
	t, err := time.Parse(expiresAtLayout, s)
	return t, ok && err == nil && t.Year() >= 1 // four digits allow year 0
}

package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The access token is a JWT (RFC 7519) in compact JWS form (RFC 7515), signed
// with HMAC-SHA256. verifyToken works in this order:
//
//  1. Refuse anything too long, not made of three non-empty segments, or
//     broken by a line break, before decoding anything.
//  2. Check the MAC over the exact bytes received, against each key.
//  3. Only then decode, strictly, and read the header and the claims.
//
// Because the MAC comes first, the JSON code only ever reads bytes that a
// holder of the key wrote: a forger's alg, crit or exp is never even parsed.

// maxTokenBytes bounds the tokens verifyToken looks at. Ours are about 250
// bytes; anything past a few KiB is refused before it costs a decode.
const maxTokenBytes = 4096

// tokenHeader is the only JOSE header signToken writes. python-jose, which
// signed the original service's tokens, writes the same bytes.
const tokenHeader = `{"alg":"HS256","typ":"JWT"}`

// expiresAtLayout is the form of the original service's expires_at claim:
// Python's str(datetime), in UTC, for a time without microseconds.
const expiresAtLayout = time.DateTime

// NumericDates (and expires_at) must lie in years 1 to 9999, the years
// expiresAtLayout can write; anything else is a malformed token, not a date.
const (
	minNumericDate = -62135596800 // 0001-01-01T00:00:00Z
	maxNumericDate = 253402300800 // 10000-01-01T00:00:00Z
)

var (
	errTokenExpired = errors.New("token expired")
	errTokenInvalid = errors.New("invalid token")
)

// invalidToken returns an error wrapping errTokenInvalid that says why.
// Reasons are fixed strings: a token's content (an email, a secret) has no
// place in a log line.
func invalidToken(reason string) error {
	return &tokenError{reason}
}

// tokenError is an errTokenInvalid with a reason for the log.
type tokenError struct{ reason string }

func (e *tokenError) Error() string { return "invalid token: " + e.reason }
func (e *tokenError) Unwrap() error { return errTokenInvalid }

// b64 is the encoding of every segment: base64url without padding (RFC 7515
// §2), strict so that non-zero trailing bits are refused. It refuses '=',
// '+', '/' and white space too, except CR and LF, which verifySignature
// refuses: each byte string then has exactly one accepted encoding.
var b64 = base64.RawURLEncoding.Strict()

// tokenHeaderSegment is tokenHeader encoded, the header segment of every
// token signToken writes.
var tokenHeaderSegment = b64.EncodeToString([]byte(tokenHeader))

// tokenClaims are the JWT claims myapi signs and reads.
type tokenClaims struct {
	Sub       string // the user's email
	Name      string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// tokenPayload is the JSON that signToken writes for tokenClaims.
type tokenPayload struct {
	Sub       string `json:"sub"`
	Name      string `json:"name"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	// ExpiresAtUTC is the original service's own expiry claim, written too
	// so that tokens pass both ways while the two services share a key.
	ExpiresAtUTC string `json:"expires_at"`
}

// signToken returns a compact HS256 JWT for c signed with key.
// Times are written to the second.
func signToken(key []byte, c tokenClaims) string {
	payload, _ := json.Marshal(tokenPayload{ // cannot fail: strings and integers
		Sub:          c.Sub,
		Name:         c.Name,
		IssuedAt:     c.IssuedAt.Unix(),
		ExpiresAt:    c.ExpiresAt.Unix(),
		ExpiresAtUTC: c.ExpiresAt.UTC().Format(expiresAtLayout),
	})
	n := len(tokenHeaderSegment) + 1 + b64.EncodedLen(len(payload)) + 1 + b64.EncodedLen(sha256.Size)
	buf := make([]byte, 0, n)
	buf = append(buf, tokenHeaderSegment...)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, payload)
	mac := hmac.New(sha256.New, key)
	mac.Write(buf)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, mac.Sum(nil))
	return string(buf)
}

// verifyToken checks token against keys at time now and returns its claims.
// keys[0] is the current signing key; later ones are previous keys, kept so
// that tokens signed before a rotation still verify. The error wraps
// errTokenExpired or errTokenInvalid.
func verifyToken(token string, keys tokenKeys, now time.Time) (tokenClaims, error) {
	header, payload, err := verifySignature(token, keys)
	if err != nil {
		return tokenClaims{}, err
	}
	if err := checkHeader(header); err != nil {
		return tokenClaims{}, err
	}
	data, err := b64.DecodeString(payload)
	if err != nil {
		return tokenClaims{}, invalidToken("payload is not base64url")
	}
	return parseClaims(data, now)
}

// verifySignature checks that token is a compact JWS whose signature is the
// HMAC-SHA256 of its signing input under one of keys, and returns its header
// and payload segments, still encoded.
func verifySignature(token string, keys tokenKeys) (header, payload string, err error) {
	if len(token) > maxTokenBytes {
		return "", "", invalidToken("too long")
	}
	header, payload, sig, ok := splitToken(token)
	if !ok {
		return "", "", invalidToken("not a compact JWS")
	}
	// The strict decoder refuses every byte outside the base64url alphabet
	// except CR and LF, which it skips. Refusing them too leaves each token
	// one spelling, so the bytes the MAC covers are the bytes that are read.
	if strings.IndexByte(token, '\n') >= 0 || strings.IndexByte(token, '\r') >= 0 {
		return "", "", invalidToken("line break")
	}
	// Only a full 32-byte MAC counts: a shorter one would be easier to guess,
	// and HS384 or HS512 signatures mean a different alg.
	var mac [sha256.Size]byte
	if len(sig) != b64.EncodedLen(len(mac)) {
		return "", "", invalidToken("signature is not 32 bytes")
	}
	if _, err := b64.Decode(mac[:], []byte(sig)); err != nil {
		return "", "", invalidToken("signature is not base64url")
	}
	if !macMatches(token[:len(header)+1+len(payload)], mac[:], keys) {
		return "", "", invalidToken("bad signature")
	}
	return header, payload, nil
}

// splitToken splits token into its three segments, none of them empty.
func splitToken(token string) (header, payload, sig string, ok bool) {
	header, rest, _ := strings.Cut(token, ".")
	payload, sig, _ = strings.Cut(rest, ".")
	if header == "" || payload == "" || sig == "" || strings.IndexByte(sig, '.') >= 0 {
		return "", "", "", false
	}
	return header, payload, sig, true
}

// macMatches reports whether mac is the HMAC-SHA256 of input under one of
// keys, compared in constant time.
func macMatches(input string, mac []byte, keys tokenKeys) bool {
	for _, k := range keys {
		if len(k.key) == 0 {
			continue // newTokenKeys leaves empty keys out; this makes sure
		}
		h := k.hmac()
		io.WriteString(h, input)
		var sum [sha256.Size]byte
		if hmac.Equal(h.Sum(sum[:0]), mac) {
			return true
		}
	}
	return false
}

// tokenKeys are the keys tokens verify with, the signing key first, then
// the previous ones.
type tokenKeys []tokenKey

// A tokenKey is an HMAC-SHA256 key, kept also as an HMAC already keyed.
// Keying costs two SHA-256 blocks of the seven a token's MAC takes, and
// five allocations; a clone of the keyed HMAC starts past both (FIPS 198-1
// §6 allows keeping these intermediate values, which are as secret as the
// key). Each verification works on its own clone: a hash holds state, and
// requests verify tokens concurrently.
type tokenKey struct {
	key   []byte
	keyed hash.Hash
}

// newTokenKeys prepares keys for verifyToken. An empty key is left out:
// the original service signed with an empty key when none was set, and
// anyone can mint such tokens.
func newTokenKeys(keys ...[]byte) tokenKeys {
	var ks tokenKeys
	for _, key := range keys {
		if len(key) == 0 {
			continue
		}
		keyed := hmac.New(sha256.New, key)
		keyed.Reset() // makes it save its keyed state, where clones start
		ks = append(ks, tokenKey{key, keyed})
	}
	return ks
}

// hmac returns a fresh HMAC under k.
func (k tokenKey) hmac() hash.Hash {
	if c, ok := k.keyed.(hash.Cloner); ok {
		if h, err := c.Clone(); err == nil {
			return h
		}
	}
	return hmac.New(sha256.New, k.key) // a build whose HMAC cannot clone, such as BoringCrypto
}

// checkHeader checks the JOSE header segment. The algorithm is pinned to
// HS256 whatever the header says (RFC 8725 §3.1), so the header can only
// confirm it: an alg of "none", another HMAC size or a public-key alg is
// refused, as is any crit extension, since we implement none (RFC 7515
// §4.1.11). kid, jku, x5u and the like are ignored: keys never come from the
// token.
func checkHeader(seg string) error {
	if seg == tokenHeaderSegment {
		return nil // our own tokens and python-jose's take this path
	}
	data, err := b64.DecodeString(seg)
	if err != nil {
		return invalidToken("header is not base64url")
	}
	var buf [4]jsonMember
	members, err := jsonObject(data, buf[:0])
	if err != nil {
		return err
	}
	hasAlg := false
	for _, m := range members {
		switch string(m.name) {
		case "alg":
			alg, ok := jsonString(m.value)
			if !ok || alg != "HS256" {
				return invalidToken("alg is not HS256")
			}
			hasAlg = true
		case "typ":
			typ, ok := jsonString(m.value)
			if !ok || !strings.EqualFold(typ, "JWT") {
				return invalidToken("typ is not JWT")
			}
		case "crit":
			return invalidToken("crit extension not understood")
		}
	}
	if !hasAlg {
		return invalidToken("no alg")
	}
	return nil
}

// parseClaims reads the claims set data at time now. sub and an expiry are
// required: exp (RFC 7519 §4.1.4) or expires_at, the original service's
// claim, and every one present must be after now. nbf, if present, must not
// be after now. iat, if present, must be a NumericDate but may lie in the
// future: it is informational (RFC 7519 §4.1.6), exp bounds the token's
// life, and a key holder whose clock runs ahead would otherwise mint tokens
// that fail at random. Other claims are ignored.
func parseClaims(data []byte, now time.Time) (tokenClaims, error) {
	var buf [8]jsonMember
	members, err := jsonObject(data, buf[:0])
	if err != nil {
		return tokenClaims{}, err
	}
	var (
		c                  tokenClaims
		exp, expiresAt     time.Time
		hasExp, hasExpires bool
		nbf                time.Time
		hasNbf             bool
	)
	for _, m := range members {
		ok := true
		switch string(m.name) {
		case "sub":
			c.Sub, ok = jsonString(m.value)
		case "name":
			c.Name, ok = jsonString(m.value)
		case "iat":
			c.IssuedAt, ok = numericDate(m.value)
		case "exp":
			exp, ok = numericDate(m.value)
			hasExp = true
		case "expires_at":
			expiresAt, ok = pythonDate(m.value)
			hasExpires = true
		case "nbf":
			nbf, ok = numericDate(m.value)
			hasNbf = true
		}
		if !ok {
			return tokenClaims{}, invalidToken("malformed claim")
		}
	}
	switch {
	case c.Sub == "":
		return tokenClaims{}, invalidToken("no sub")
	case !hasExp && !hasExpires:
		return tokenClaims{}, invalidToken("no expiry")
	case hasNbf && now.Before(nbf):
		return tokenClaims{}, invalidToken("not valid yet")
	}
	// The earliest expiry is the one that counts.
	c.ExpiresAt = exp
	if !hasExp || hasExpires && expiresAt.Before(exp) {
		c.ExpiresAt = expiresAt
	}
	if !now.Before(c.ExpiresAt) {
		return tokenClaims{}, errTokenExpired
	}
	return c, nil
}

// numericDate reads a JSON number of seconds since the epoch (RFC 7519 §2),
// integer or not.
func numericDate(v []byte) (time.Time, bool) {
	if len(v) == 0 || v[0] != '-' && (v[0] < '0' || '9' < v[0]) {
		return time.Time{}, false // not a number
	}
	// Issuers write whole seconds; ParseInt reads them at a tenth of what
	// ParseFloat costs.
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		if n < minNumericDate || n >= maxNumericDate {
			return time.Time{}, false
		}
		return time.Unix(n, 0).UTC(), true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || !(minNumericDate <= f && f < maxNumericDate) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true
}

// pythonDate reads a JSON string written by Python's str(datetime) for a
// naive datetime, expiresAtLayout with an optional fraction of a second
// (Python writes six digits when there are microseconds), as a time in UTC.
// It is stricter, and cheaper, than time.Parse, which also takes a one-digit
// hour or a comma before the fraction.
func pythonDate(v []byte) (time.Time, bool) {
	b, ok := unquote(v)
	if !ok || len(b) < len(expiresAtLayout) {
		return time.Time{}, false
	}
	date, frac := b[:len(expiresAtLayout)], b[len(expiresAtLayout):]
	var f [6]int // year, month, day, hour, minute, second
	k := 0
	for i, c := range date {
		switch l := expiresAtLayout[i]; {
		case isDigit(l) && isDigit(c):
			f[k] = f[k]*10 + int(c-'0')
		case !isDigit(l) && c == l:
			k++
		default:
			return time.Time{}, false
		}
	}
	nsec := 0
	if len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		for i, scale := 1, 100000000; i < len(frac); i, scale = i+1, scale/10 {
			if !isDigit(frac[i]) {
				return time.Time{}, false
			}
			nsec += int(frac[i]-'0') * scale
		}
	}
	t := time.Date(f[0], time.Month(f[1]), f[2], f[3], f[4], f[5], nsec, time.UTC)
	// time.Date normalizes: February 30 becomes March 2, and 24:00 the next
	// day. A date that moved was never a date.
	y, m, d := t.Date()
	if y != f[0] || int(m) != f[1] || d != f[2] || t.Hour() != f[3] || t.Minute() != f[4] || t.Second() != f[5] {
		return time.Time{}, false
	}
	return t, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// jsonString reads v, a valid JSON value, as a string.
func jsonString(v []byte) (string, bool) {
	b, ok := unquote(v)
	return string(b), ok
}

// unquote returns the content of v, a valid JSON value, if it is a string.
// Without escapes that is the bytes between the quotes, which costs nothing.
func unquote(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, false
	}
	return []byte(s), true
}

// jsonMember is one member of a JSON object: its name, unescaped, and its
// value as raw JSON.
type jsonMember struct {
	name  []byte
	value []byte
}

// jsonObject appends the members of data to members and returns the result.
// data must be one JSON object (RFC 8259) in UTF-8 with no name repeated; the
// error wraps errTokenInvalid. encoding/json would let the last of two equal
// names win; another parser may keep the first, and a duplicated alg, sub or
// exp is how one smuggles a claim past a check (RFC 7515 §4 and RFC 7519 §4
// allow refusing them).
func jsonObject(data []byte, members []jsonMember) ([]jsonMember, error) {
	if len(data) > maxTokenBytes {
		return nil, invalidToken("too long") // bounds nesting and the search for repeats
	}
	if !utf8.Valid(data) {
		return nil, invalidToken("not UTF-8")
	}
	s := jsonScanner{data: data}
	s.space()
	if s.off == len(data) || data[s.off] != '{' {
		return nil, invalidToken("not a JSON object")
	}
	start := len(members)
	s.off++ // '{'
	s.space()
	for !s.skip('}') {
		if len(members) > start {
			if !s.skip(',') {
				return nil, invalidToken("not JSON")
			}
			s.space()
		}
		m, ok := s.member()
		if !ok {
			return nil, invalidToken("not JSON")
		}
		for _, prev := range members[start:] {
			if bytes.Equal(prev.name, m.name) {
				return nil, invalidToken("repeated member name")
			}
		}
		members = append(members, m)
		s.space()
	}
	if s.space(); s.off != len(data) {
		return nil, invalidToken("data after the JSON object")
	}
	return members, nil
}

// A jsonScanner checks JSON text (RFC 8259) as it walks through it, without
// allocating. Each method reports whether the data at off is well formed and
// moves off past it. Nesting recurses, at most as deep as the data is long.
type jsonScanner struct {
	data []byte
	off  int
}

// space skips white space.
func (s *jsonScanner) space() {
	for s.off < len(s.data) {
		switch s.data[s.off] {
		case ' ', '\t', '\n', '\r':
			s.off++
		default:
			return
		}
	}
}

// skip skips c, if it comes next.
func (s *jsonScanner) skip(c byte) bool {
	if s.off < len(s.data) && s.data[s.off] == c {
		s.off++
		return true
	}
	return false
}

// value skips any JSON value.
func (s *jsonScanner) value() bool {
	if s.off == len(s.data) {
		return false
	}
	switch c := s.data[s.off]; {
	case c == '"':
		return s.string()
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	default:
		return s.literal("true") || s.literal("false") || s.literal("null")
	}
}

// object skips an object.
func (s *jsonScanner) object() bool {
	s.off++ // '{'
	s.space()
	for n := 0; !s.skip('}'); n++ {
		if n > 0 {
			if !s.skip(',') {
				return false
			}
			s.space()
		}
		if _, ok := s.member(); !ok {
			return false
		}
		s.space()
	}
	return true
}

// member skips a member of an object and returns it, its name unescaped.
func (s *jsonScanner) member() (jsonMember, bool) {
	name := s.off
	if !s.string() {
		return jsonMember{}, false
	}
	nameEnd := s.off
	s.space()
	if !s.skip(':') {
		return jsonMember{}, false
	}
	s.space()
	value := s.off
	if !s.value() {
		return jsonMember{}, false
	}
	unquoted, ok := unquote(s.data[name:nameEnd])
	return jsonMember{unquoted, s.data[value:s.off]}, ok
}

// array skips an array.
func (s *jsonScanner) array() bool {
	s.off++ // '['
	s.space()
	if s.skip(']') {
		return true
	}
	for {
		if !s.value() {
			return false
		}
		s.space()
		if s.skip(']') {
			return true
		}
		if !s.skip(',') {
			return false
		}
		s.space()
	}
}

// string skips a string: no control characters, and only the escapes of
// RFC 8259 §7.
func (s *jsonScanner) string() bool {
	if !s.skip('"') {
		return false
	}
	for s.off < len(s.data) {
		c := s.data[s.off]
		s.off++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if !s.escape() {
				return false
			}
		}
	}
	return false
}

// escape skips what follows a backslash in a string.
func (s *jsonScanner) escape() bool {
	if s.off == len(s.data) {
		return false
	}
	c := s.data[s.off]
	s.off++
	switch c {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return true
	case 'u':
		if len(s.data)-s.off < 4 {
			return false
		}
		for _, h := range s.data[s.off : s.off+4] {
			if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
				return false
			}
		}
		s.off += 4
		return true
	}
	return false
}

// number skips a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() bool {
	s.skip('-')
	if !s.skip('0') && !s.digits() {
		return false
	}
	if s.skip('.') && !s.digits() {
		return false
	}
	if s.skip('e') || s.skip('E') {
		if !s.skip('+') {
			s.skip('-')
		}
		return s.digits()
	}
	return true
}

// digits skips one or more decimal digits.
func (s *jsonScanner) digits() bool {
	start := s.off
	for s.off < len(s.data) && '0' <= s.data[s.off] && s.data[s.off] <= '9' {
		s.off++
	}
	return s.off > start
}

// literal skips lit, if it comes next.
func (s *jsonScanner) literal(lit string) bool {
	if len(s.data)-s.off < len(lit) || string(s.data[s.off:s.off+len(lit)]) != lit {
		return false
	}
	s.off += len(lit)
	return true
}

package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tokens in these tests are signed with testKey and checked at testNow.
var (
	testKey = []byte("myapi-test-key-0123456789abcdef-0123")
	testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	future  = testNow.Add(time.Hour)
	past    = testNow.Add(-time.Second)
)

// pythonToken and pythonTokenMicro are signed with testKey the way the
// original service signs: python-jose's header (json.dumps with sorted keys)
// and json.dumps(claims, separators=(",", ":")) of
//
//	{"name":"Ada Lovelace","sub":"ada@example.com","expires_at":"2026-01-02 04:04:05"}
//
// and of the same claims with expires_at "2026-01-02 04:04:05.123456", as
// Python's str(datetime) writes it when there are microseconds. They were
// computed once with Python's hmac, hashlib, base64 and json modules.
const (
	pythonToken      = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lIjoiQWRhIExvdmVsYWNlIiwic3ViIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwaXJlc19hdCI6IjIwMjYtMDEtMDIgMDQ6MDQ6MDUifQ.ojYUZmwnQ_29GiXx8065MOaJmDEmT3T-U9dBdGSVqe4"
	pythonTokenMicro = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lIjoiQWRhIExvdmVsYWNlIiwic3ViIjoiYWRhQGV4YW1wbGUuY29tIiwiZXhwaXJlc19hdCI6IjIwMjYtMDEtMDIgMDQ6MDQ6MDUuMTIzNDU2In0.YwPoIWnr6ovsqj0qg2rTLV4rHctBm_zRFvkzBGyerCo"
)

// The example of RFC 7515, Appendix A.1: an HS256 JWS and its JWK key.
const (
	rfcToken = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9" +
		".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ" +
		".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	rfcKey = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
)

const (
	hdr = `{"alg":"HS256","typ":"JWT"}`
	sub = `"sub":"ada@example.com"`
)

// enc encodes s as a token segment.
func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// sign returns input, a signing input, then a dot and its HMAC-SHA256 under key.
func sign(key []byte, input string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(input))
	return input + "." + enc(string(mac.Sum(nil)))
}

// makeToken signs header and claims, JSON written as given, with testKey.
func makeToken(header, claims string) string {
	return sign(testKey, enc(header)+"."+enc(claims))
}

// claims returns a JSON object of the given members.
func claims(members ...string) string { return "{" + strings.Join(members, ",") + "}" }

func exp(t time.Time) string { return fmt.Sprintf(`"exp":%d`, t.Unix()) }

func iat(t time.Time) string { return fmt.Sprintf(`"iat":%d`, t.Unix()) }

func expiresAt(t time.Time) string {
	return fmt.Sprintf(`"expires_at":%q`, t.UTC().Format(expiresAtLayout))
}

// valid is a minimal claims set that verifies at testNow.
var valid = claims(sub, exp(future))

// dirtyTail returns seg with non-zero trailing bits: the same bytes to a
// lenient decoder, a different string to the MAC.
func dirtyTail(t *testing.T, seg string) string {
	t.Helper()
	if len(seg)%4 < 2 {
		t.Fatalf("segment %q has no trailing bits", seg)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + alphabet[last+1:last+2]
}

func TestVerifyTokenAccepts(t *testing.T) {
	tests := []struct {
		name, header, claims string
	}{
		{"ours", hdr, valid},
		{"keys reordered", `{"typ":"JWT","alg":"HS256"}`, valid},
		{"no typ", `{"alg":"HS256"}`, valid},
		{"typ lower case, kid", `{"alg":"HS256","typ":"jwt","kid":"2025-01"}`, valid},
		{"whitespace", " {\r\n \"alg\" : \"HS256\" }\n", " { \"sub\" :\t\"ada@example.com\" , \"exp\" : " + fmt.Sprint(future.Unix()) + " } "},
		{"escaped alg", `{"alg":"HS\u0032\u0035\u0036"}`, valid},
		{"escaped name", hdr, claims(`"s\u0075b":"ada@example.com"`, exp(future))},
		{"fractional exp", hdr, claims(sub, fmt.Sprintf(`"exp":%d.5`, testNow.Unix()))},
		{"exponent exp", hdr, claims(sub, `"exp":1.8e9`)},
		{"exp at the end of year 9999", hdr, claims(sub, `"exp":253402300799`)},
		{"expires_at only", hdr, claims(sub, expiresAt(future))},
		{"both expiries", hdr, claims(sub, exp(future), expiresAt(future))},
		{"nbf now", hdr, claims(sub, exp(future), fmt.Sprintf(`"nbf":%d`, testNow.Unix()))},
		{"iat an hour ahead: only information", hdr, claims(sub, exp(future), iat(testNow.Add(time.Hour)))},
		{"names differ in case", `{"alg":"HS256","ALG":"none","Crit":["x"]}`, claims(sub, `"SUB":7`, `"EXP":0`, `"Nbf":1e20`, exp(future))},
		{"unknown claims", hdr, claims(`"iss":"x"`, sub, exp(future), `"aud":["a",{"b":"}"}]`, `"x":null`)},
		{"name", hdr, claims(sub, `"name":"Zoë \"Z\" \u003cO'Brien\u003e"`, exp(future))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := verifyToken(makeToken(tt.header, tt.claims), [][]byte{testKey}, testNow)
			if err != nil {
				t.Fatalf("verifyToken: %v", err)
			}
			if c.Sub != "ada@example.com" {
				t.Errorf("Sub = %q", c.Sub)
			}
		})
	}
}

func TestVerifyTokenRejects(t *testing.T) {
	hdrSeg := enc(hdr)
	validSeg := enc(valid)
	tilde := enc(claims(sub, `"name":"~~~~~~"`, exp(future))) // encodes to '-' characters
	if !strings.Contains(tilde, "-") {
		t.Fatalf("%q has no '-' to swap", tilde)
	}
	std := strings.NewReplacer("-", "+", "_", "/").Replace(tilde)
	good := makeToken(hdr, valid)
	sigSeg := good[strings.LastIndexByte(good, '.')+1:]
	flipped, _ := base64.RawURLEncoding.DecodeString(sigSeg)
	flipped[0] ^= 1
	padded := base64.URLEncoding.EncodeToString([]byte(claims(sub, exp(future), `"x":12`)))
	if !strings.HasSuffix(padded, "=") {
		t.Fatalf("%q has no padding", padded)
	}
	hs512 := hmac.New(sha512.New, testKey)
	hs512.Write([]byte(hdrSeg + "." + validSeg))

	const (
		invalid = "invalid"
		expired = "expired"
	)
	tests := []struct {
		name, token, want string
	}{
		// Shape, checked before any decoding.
		{"empty", "", invalid},
		{"two segments", hdrSeg + "." + validSeg, invalid},
		{"four segments", good + "." + sigSeg, invalid},
		{"empty header", "." + validSeg + "." + sigSeg, invalid},
		{"empty payload", sign(testKey, hdrSeg+"."), invalid},
		{"unsigned", enc(`{"alg":"none","typ":"JWT"}`) + "." + validSeg + ".", invalid},
		{"dots only", "..", invalid},
		{"space", " " + good, invalid},
		{"newline in payload, signed", sign(testKey, hdrSeg+"."+validSeg[:10]+"\n"+validSeg[10:]), invalid},
		{"CRLF after signature", good + "\r\n", invalid},

		// Signature.
		{"other key", sign([]byte("another-key-0123456789abcdef-012345"), hdrSeg+"."+validSeg), invalid},
		{"flipped bit", hdrSeg + "." + validSeg + "." + enc(string(flipped)), invalid},
		{"empty key", sign(nil, hdrSeg+"."+validSeg), invalid},
		{"truncated MAC", hdrSeg + "." + validSeg + "." + sigSeg[:22], invalid},
		{"MAC one byte short", hdrSeg + "." + validSeg + "." + enc(string(flipped[:31])), invalid},
		{"MAC one byte long", good + "A", invalid},
		{"HS512 MAC", hdrSeg + "." + validSeg + "." + enc(string(hs512.Sum(nil))), invalid},
		{"signature trailing bits", hdrSeg + "." + validSeg + "." + dirtyTail(t, sigSeg), invalid},
		{"signature padded", good + "=", invalid},

		// Canonical base64url in the signed segments: each is signed as
		// written, so only the encoding check can refuse them.
		{"header padded", sign(testKey, enc(`{"alg":"HS256","kid":"1"}`)+"==."+validSeg), invalid},
		{"payload padded", sign(testKey, hdrSeg+"."+padded), invalid},
		{"standard alphabet", sign(testKey, hdrSeg+"."+std), invalid},
		{"payload trailing bits", sign(testKey, hdrSeg+"."+dirtyTail(t, enc(claims(sub, exp(future), `"x":12`)))), invalid},
		{"header trailing bits", sign(testKey, dirtyTail(t, enc(`{"alg":"HS256","kid":"1"}`))+"."+validSeg), invalid},

		// Header, correctly signed.
		{"alg none", makeToken(`{"alg":"none","typ":"JWT"}`, valid), invalid},
		{"alg None", makeToken(`{"alg":"None","typ":"JWT"}`, valid), invalid},
		{"alg NONE", makeToken(`{"alg":"NONE","typ":"JWT"}`, valid), invalid},
		{"alg nOnE", makeToken(`{"alg":"nOnE"}`, valid), invalid},
		{"alg empty", makeToken(`{"alg":""}`, valid), invalid},
		{"alg hs256", makeToken(`{"alg":"hs256","typ":"JWT"}`, valid), invalid},
		{"alg HS256 and space", makeToken(`{"alg":"HS256 "}`, valid), invalid},
		{"alg HS384", makeToken(`{"alg":"HS384","typ":"JWT"}`, valid), invalid},
		{"alg HS512", makeToken(`{"alg":"HS512","typ":"JWT"}`, valid), invalid},
		{"alg RS256", makeToken(`{"alg":"RS256","typ":"JWT"}`, valid), invalid},
		{"alg ES256", makeToken(`{"alg":"ES256","typ":"JWT"}`, valid), invalid},
		{"alg missing", makeToken(`{"typ":"JWT"}`, valid), invalid},
		{"alg only as ALG", makeToken(`{"ALG":"HS256","typ":"JWT"}`, valid), invalid},
		{"alg only as \u0041LG", makeToken(`{"\u0041LG":"HS256"}`, valid), invalid},
		{"alg number", makeToken(`{"alg":256}`, valid), invalid},
		{"alg null", makeToken(`{"alg":null}`, valid), invalid},
		{"alg list", makeToken(`{"alg":["HS256"]}`, valid), invalid},
		{"crit", makeToken(`{"alg":"HS256","crit":["exp"],"exp":1}`, valid), invalid},
		{"crit empty", makeToken(`{"alg":"HS256","crit":[]}`, valid), invalid},
		{"typ JWS", makeToken(`{"alg":"HS256","typ":"JWS"}`, valid), invalid},
		{"typ at+jwt", makeToken(`{"alg":"HS256","typ":"at+jwt"}`, valid), invalid},
		{"typ number", makeToken(`{"alg":"HS256","typ":1}`, valid), invalid},
		{"typ null", makeToken(`{"alg":"HS256","typ":null}`, valid), invalid},
		{"header empty object", makeToken(`{}`, valid), invalid},
		{"header list", makeToken(`["HS256"]`, valid), invalid},
		{"header string", makeToken(`"HS256"`, valid), invalid},
		{"header trailing data", makeToken(hdr+`x`, valid), invalid},
		{"header two objects", makeToken(hdr+`{}`, valid), invalid},
		{"header not JSON", makeToken(`alg=HS256`, valid), invalid},
		{"header invalid UTF-8", makeToken(`{"alg":"HS256","kid":"`+"\xff"+`"}`, valid), invalid},

		// Claims, correctly signed.
		{"claims list", makeToken(hdr, `[`+valid+`]`), invalid},
		{"claims null", makeToken(hdr, `null`), invalid},
		{"claims string", makeToken(hdr, `"ada@example.com"`), invalid},
		{"claims number", makeToken(hdr, `1`), invalid},
		{"claims truncated", makeToken(hdr, valid[:len(valid)-1]), invalid},
		{"claims trailing data", makeToken(hdr, valid+`x`), invalid},
		{"claims two objects", makeToken(hdr, valid+`{}`), invalid},
		{"claims trailing bracket", makeToken(hdr, valid+`]`), invalid},
		{"claims invalid UTF-8", makeToken(hdr, claims(sub, exp(future), `"name":"`+"\xc3\x28"+`"`)), invalid},
		{"claims with BOM", makeToken(hdr, "\ufeff"+valid), invalid},
		{"sub missing", makeToken(hdr, claims(exp(future))), invalid},
		{"sub only as SUB", makeToken(hdr, claims(`"SUB":"ada@example.com"`, exp(future))), invalid},
		{"sub empty", makeToken(hdr, claims(`"sub":""`, exp(future))), invalid},
		{"sub number", makeToken(hdr, claims(`"sub":1`, exp(future))), invalid},
		{"sub null", makeToken(hdr, claims(`"sub":null`, exp(future))), invalid},
		{"sub list", makeToken(hdr, claims(`"sub":["ada@example.com"]`, exp(future))), invalid},
		{"name number", makeToken(hdr, claims(sub, `"name":1`, exp(future))), invalid},
		{"name null", makeToken(hdr, claims(sub, `"name":null`, exp(future))), invalid},
		{"iat string", makeToken(hdr, claims(sub, exp(future), `"iat":"1767322800"`)), invalid},
		{"iat null", makeToken(hdr, claims(sub, exp(future), `"iat":null`)), invalid},
		{"iat past year 9999", makeToken(hdr, claims(sub, exp(future), `"iat":1e20`)), invalid},
		{"nbf in the future", makeToken(hdr, claims(sub, exp(future), fmt.Sprintf(`"nbf":%d`, testNow.Unix()+1))), invalid},
		{"nbf string", makeToken(hdr, claims(sub, exp(future), `"nbf":"0"`)), invalid},

		// Expiry.
		{"no expiry", makeToken(hdr, claims(sub)), invalid},
		{"expiry only as EXP", makeToken(hdr, claims(sub, fmt.Sprintf(`"EXP":%d`, future.Unix()))), invalid},
		{"expiry only as Expires_At", makeToken(hdr, claims(sub, `"Expires_At":"2026-01-02 04:04:05"`)), invalid},
		{"exp string", makeToken(hdr, claims(sub, fmt.Sprintf(`"exp":"%d"`, future.Unix()))), invalid},
		{"exp null", makeToken(hdr, claims(sub, `"exp":null`)), invalid},
		{"exp true", makeToken(hdr, claims(sub, `"exp":true`)), invalid},
		{"exp object", makeToken(hdr, claims(sub, `"exp":{}`)), invalid},
		{"exp overflows float64", makeToken(hdr, claims(sub, `"exp":1e400`)), invalid},
		{"exp past year 9999", makeToken(hdr, claims(sub, `"exp":1e20`)), invalid},
		{"exp huge integer", makeToken(hdr, claims(sub, `"exp":9223372036854775808`)), invalid},
		{"exp integer past year 9999", makeToken(hdr, claims(sub, `"exp":253402300800`)), invalid},
		{"nbf integer before year 1", makeToken(hdr, claims(sub, exp(future), `"nbf":-62135596801`)), invalid},
		{"exp before year 1", makeToken(hdr, claims(sub, `"exp":-1e300`)), invalid},
		{"exp malformed, expires_at good", makeToken(hdr, claims(sub, `"exp":"soon"`, expiresAt(future))), invalid},
		{"expires_at number", makeToken(hdr, claims(sub, fmt.Sprintf(`"expires_at":%d`, future.Unix()))), invalid},
		{"expires_at null", makeToken(hdr, claims(sub, `"expires_at":null`)), invalid},
		{"expires_at empty", makeToken(hdr, claims(sub, `"expires_at":""`)), invalid},
		{"expires_at ISO 8601", makeToken(hdr, claims(sub, `"expires_at":"2026-01-02T04:04:05"`)), invalid},
		{"expires_at with offset", makeToken(hdr, claims(sub, `"expires_at":"2026-01-02 04:04:05+00:00"`)), invalid},
		{"expires_at year 0", makeToken(hdr, claims(sub, `"expires_at":"0000-01-02 04:04:05"`)), invalid},
		{"expires_at five-digit year", makeToken(hdr, claims(sub, `"expires_at":"10000-01-02 04:04:05"`)), invalid},
		{"expires_at second 60", makeToken(hdr, claims(sub, `"expires_at":"2026-01-02 04:04:60"`)), invalid},
		{"expires_at Feb 30", makeToken(hdr, claims(sub, `"expires_at":"2026-02-30 04:04:05"`)), invalid},
		{"expires_at hour 24", makeToken(hdr, claims(sub, `"expires_at":"2026-01-02 24:00:00"`)), invalid},
		{"expires_at bare dot", makeToken(hdr, claims(sub, `"expires_at":"2026-01-02 04:04:05."`)), invalid},
		{"expires_at trailing space", makeToken(hdr, claims(sub, `"expires_at":"2026-01-02 04:04:05 "`)), invalid},
		{"expires_at malformed, exp good", makeToken(hdr, claims(sub, exp(future), `"expires_at":"tomorrow"`)), invalid},
		{"exp passed", makeToken(hdr, claims(sub, exp(past))), expired},
		{"exp now", makeToken(hdr, claims(sub, exp(testNow))), expired},
		{"exp long ago", makeToken(hdr, claims(sub, `"exp":0`)), expired},
		{"expires_at passed", makeToken(hdr, claims(sub, expiresAt(past))), expired},
		{"expires_at passed, exp good", makeToken(hdr, claims(sub, exp(future), expiresAt(past))), expired},
		{"exp passed, expires_at good", makeToken(hdr, claims(sub, exp(past), expiresAt(future))), expired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := verifyToken(tt.token, [][]byte{testKey}, testNow)
			if err == nil {
				t.Fatalf("verifyToken accepted %q: %+v", tt.token, c)
			}
			want, other := errTokenInvalid, errTokenExpired
			if tt.want == expired {
				want, other = other, want
			}
			if !errors.Is(err, want) || errors.Is(err, other) {
				t.Fatalf("verifyToken: %v, want %v", err, want)
			}
			if c != (tokenClaims{}) {
				t.Errorf("claims %+v returned with an error", c)
			}
		})
	}
}

// TestVerifyTokenReasons checks the reason each refusal gives the log, and so
// which check refused it: the shape before the MAC, the MAC before the JSON.
func TestVerifyTokenReasons(t *testing.T) {
	hdrSeg, validSeg := enc(hdr), enc(valid)
	good := makeToken(hdr, valid)
	mac, _ := base64.RawURLEncoding.DecodeString(good[strings.LastIndexByte(good, '.')+1:])
	other := []byte("another-key-0123456789abcdef-012345")
	tests := []struct{ token, reason string }{
		{strings.Repeat("A", maxTokenBytes-40) + "." + validSeg + "." + enc(string(mac)), "too long"},
		{"." + validSeg + "." + enc(string(mac)), "not a compact JWS"},
		{sign(testKey, "."+validSeg), "not a compact JWS"},
		{good + "." + enc(string(mac)), "not a compact JWS"},
		{hdrSeg + "." + validSeg, "not a compact JWS"},
		{good + "\n", "line break"},
		{hdrSeg + "." + validSeg + "." + enc(string(mac[:31])), "signature is not 32 bytes of base64url"},
		{hdrSeg + "." + validSeg + "." + enc(string(mac)+"x"), "signature is not 32 bytes of base64url"},
		{good + "=", "signature is not 32 bytes of base64url"},
		{sign(other, hdrSeg+"."+validSeg), "bad signature"},
		{sign(other, enc(`{"alg":"none"}`)+"."+enc("x")), "bad signature"},
		{makeToken(`{"alg":"none"}`, valid), "alg is not HS256"},
		{makeToken(`["HS256"]`, valid), "header is not a base64url JSON object"},
		{makeToken(hdr, `[]`), "claims are not a base64url JSON object"},
		{makeToken(hdr, claims(sub, exp(future), `"iat":null`)), "malformed claim"},
	}
	for _, tt := range tests {
		_, err := verifyToken(tt.token, [][]byte{testKey}, testNow)
		if !errors.Is(err, errTokenInvalid) || !strings.HasSuffix(err.Error(), ": "+tt.reason) {
			t.Errorf("verifyToken(%.40q...): got %v, want reason %q", tt.token, err, tt.reason)
		}
	}
}

func TestVerifyTokenSizeLimit(t *testing.T) {
	var largest string
	for n := 0; ; n++ {
		token := makeToken(hdr, claims(sub, exp(future), `"pad":"`+strings.Repeat("x", n)+`"`))
		if len(token) > maxTokenBytes {
			if _, err := verifyToken(token, [][]byte{testKey}, testNow); !errors.Is(err, errTokenInvalid) {
				t.Errorf("%d-byte token: got %v, want %v", len(token), err, errTokenInvalid)
			}
			break
		}
		largest = token
	}
	if _, err := verifyToken(largest, [][]byte{testKey}, testNow); err != nil {
		t.Errorf("%d-byte token: %v", len(largest), err)
	}
}

func TestVerifyTokenKeyRotation(t *testing.T) {
	newKey := []byte("the-new-key-0123456789abcdef-0123456")
	keys := [][]byte{newKey, testKey}
	for _, key := range [][]byte{newKey, testKey} {
		token := signToken(key, tokenClaims{Sub: "ada@example.com", IssuedAt: testNow, ExpiresAt: future})
		if _, err := verifyToken(token, keys, testNow); err != nil {
			t.Errorf("token signed with %q: %v", key, err)
		}
	}
	// A key left empty by mistake must not let anyone sign.
	unkeyed := signToken(nil, tokenClaims{Sub: "ada@example.com", IssuedAt: testNow, ExpiresAt: future})
	if _, err := verifyToken(unkeyed, [][]byte{testKey, nil, {}}, testNow); !errors.Is(err, errTokenInvalid) {
		t.Errorf("token signed with an empty key: got %v, want %v", err, errTokenInvalid)
	}
	old := signToken(testKey, tokenClaims{Sub: "ada@example.com", IssuedAt: testNow, ExpiresAt: future})
	for _, keys := range [][][]byte{{newKey}, nil, {{}}, {nil, newKey}} {
		if _, err := verifyToken(old, keys, testNow); !errors.Is(err, errTokenInvalid) {
			t.Errorf("keys %q: got %v, want %v", keys, err, errTokenInvalid)
		}
	}
}

func TestVerifyTokenIssuedAt(t *testing.T) {
	keys := [][]byte{testKey}
	// The original's tokens have no iat: they verify, and callers can tell.
	c, err := verifyToken(makeToken(hdr, valid), keys, testNow)
	if err != nil || !c.IssuedAt.IsZero() {
		t.Errorf("no iat: got %+v, %v; want zero IssuedAt", c, err)
	}
	for _, v := range []string{`"1767323045"`, `null`, `true`, `[1767323045]`, `1e20`, `-1e20`} {
		token := makeToken(hdr, claims(sub, exp(future), `"iat":`+v))
		if _, err := verifyToken(token, keys, testNow); !errors.Is(err, errTokenInvalid) || !strings.Contains(err.Error(), "malformed claim") {
			t.Errorf("iat %s: got %v, want a malformed claim", v, err)
		}
	}
}

// oursToken is signToken's output for fixed claims. The original service
// reads the same bytes, so they must not change.
const oursToken = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGFAZXhhbXBsZS5jb20iLCJuYW1lIjoiQWRhIExvdmVsYWNlIiwiaWF0IjoxNzY3MzIzMDQ1LCJleHAiOjE3NjczMjY2NDUsImV4cGlyZXNfYXQiOiIyMDI2LTAxLTAyIDA0OjA0OjA1In0.uFEFQfmyODCxF6d0M4DEuyxQePpp1ZYpX1uYXo_B8yg"

func TestSignTokenRoundTrip(t *testing.T) {
	if got := signToken(testKey, tokenClaims{Sub: "ada@example.com", Name: "Ada Lovelace", IssuedAt: testNow, ExpiresAt: future}); got != oursToken {
		t.Errorf("signToken = %q, want %q", got, oursToken)
	}
	in := tokenClaims{
		Sub:       "zoë@example.com",
		Name:      `Zoë "Z" <O'Brien> & \ co`,
		IssuedAt:  testNow.Add(123456789 * time.Nanosecond).In(time.FixedZone("CET", 3600)),
		ExpiresAt: future.Add(999 * time.Millisecond),
	}
	token := signToken(testKey, in)
	if !strings.HasPrefix(token, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.") {
		t.Errorf("header segment of %q is not the canonical one", token)
	}
	out, err := verifyToken(token, [][]byte{testKey}, testNow)
	if err != nil {
		t.Fatalf("verifyToken: %v", err)
	}
	if out.Sub != in.Sub || out.Name != in.Name ||
		!out.IssuedAt.Equal(in.IssuedAt.Truncate(time.Second)) ||
		!out.ExpiresAt.Equal(in.ExpiresAt.Truncate(time.Second)) {
		t.Errorf("verifyToken(signToken(%+v)) = %+v", in, out)
	}

	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Exp       int64  `json:"exp"`
		Iat       int64  `json:"iat"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	if want := "2026-01-02 04:04:05"; p.ExpiresAt != want {
		t.Errorf("expires_at = %q, want %q", p.ExpiresAt, want)
	}
	if e, err := time.Parse(time.DateTime, p.ExpiresAt); err != nil || e.Unix() != p.Exp {
		t.Errorf("expires_at %q and exp %d disagree", p.ExpiresAt, p.Exp)
	}
	if want := future.Unix(); p.Exp != want {
		t.Errorf("exp = %d, want %d", p.Exp, want)
	}
	if want := testNow.Unix(); p.Iat != want {
		t.Errorf("iat = %d, want %d", p.Iat, want)
	}
}

func TestVerifyTokenPython(t *testing.T) {
	tests := []struct {
		token string
		exp   time.Time
	}{
		{pythonToken, time.Date(2026, 1, 2, 4, 4, 5, 0, time.UTC)},
		{pythonTokenMicro, time.Date(2026, 1, 2, 4, 4, 5, 123456000, time.UTC)},
	}
	keys := [][]byte{testKey}
	for _, tt := range tests {
		c, err := verifyToken(tt.token, keys, tt.exp.Add(-time.Nanosecond))
		if err != nil {
			t.Fatalf("verifyToken(%q): %v", tt.token, err)
		}
		if c.Sub != "ada@example.com" || c.Name != "Ada Lovelace" || !c.IssuedAt.IsZero() || !c.ExpiresAt.Equal(tt.exp) {
			t.Errorf("verifyToken(%q) = %+v, want ExpiresAt %v", tt.token, c, tt.exp)
		}
		if _, err := verifyToken(tt.token, keys, tt.exp); !errors.Is(err, errTokenExpired) {
			t.Errorf("verifyToken(%q) at its expiry: got %v, want %v", tt.token, err, errTokenExpired)
		}
	}
}

func TestVerifySignatureRFC7515(t *testing.T) {
	key, err := base64.RawURLEncoding.DecodeString(rfcKey)
	if err != nil {
		t.Fatal(err)
	}
	header, payload, err := verifySignature(rfcToken, [][]byte{key})
	if err != nil {
		t.Fatalf("verifySignature: %v", err)
	}
	// The header has its members the other way round, across lines.
	if err := checkHeader(header); err != nil {
		t.Errorf("checkHeader: %v", err)
	}
	data, err := b64.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}"; string(data) != want {
		t.Errorf("payload = %q, want %q", data, want)
	}
	// The example has no sub, which myapi requires.
	_, err = verifyToken(rfcToken, [][]byte{key}, time.Unix(1300819379, 0))
	if !errors.Is(err, errTokenInvalid) || !strings.Contains(err.Error(), "no sub") {
		t.Errorf("verifyToken: got %v, want %v for the missing sub", err, errTokenInvalid)
	}
	if _, _, err := verifySignature(rfcToken, [][]byte{testKey}); !errors.Is(err, errTokenInvalid) {
		t.Errorf("verifySignature with another key: got %v, want %v", err, errTokenInvalid)
	}
}

// fuzzTokens are the seed tokens that a holder of testKey made and that
// verify at testNow.
var fuzzTokens = []string{
	signToken(testKey, tokenClaims{Sub: "ada@example.com", Name: "Ada Lovelace", IssuedAt: testNow, ExpiresAt: future}),
	pythonToken,
	pythonTokenMicro,
	makeToken(`{"typ":"JWT","alg":"HS256","kid":"1"}`, claims(sub, exp(future), `"nbf":1`, `"aud":["a",{"b":"}"}]`)),
	makeToken(`{"alg":"HS256"}`, claims(`"s\u0075b":"\u00e9\ud83d\ude00"`, `"exp":1.8e9`, expiresAt(future))),
	// A repeated name is read as encoding/json reads it, the last one
	// winning: only a key holder can write one.
	makeToken(hdr, claims(sub, `"sub":"eve@example.com"`, exp(future))),
}

func FuzzVerifyToken(f *testing.F) {
	for _, token := range fuzzTokens {
		f.Add(token)
	}
	hdrSeg := enc(hdr)
	for _, token := range []string{
		makeToken(`{"alg":"none"}`, valid),
		enc(`{"alg":"none"}`) + "." + enc(valid) + ".",
		makeToken(`{"alg":"HS256","crit":["b64"],"b64":false}`, valid),
		makeToken(hdr, claims(sub, exp(past))),
		makeToken(hdr, claims(sub, exp(future), `"stamp":1`)),
		makeToken(hdr, claims(sub, fmt.Sprintf(`"EXP":%d`, future.Unix()))),
		makeToken(hdr, claims(`"sub":1`, expiresAt(future))),
		sign([]byte("another-key-0123456789abcdef-012345"), hdrSeg+"."+enc(valid)),
		sign(testKey, hdrSeg+"."+base64.URLEncoding.EncodeToString([]byte(claims(sub, exp(future), `"x":12`)))),
		rfcToken,
	} {
		f.Add(token)
	}
	keys := [][]byte{testKey}
	// check verifies token and checks what it returns.
	check := func(t *testing.T, token string) (tokenClaims, bool) {
		c, err := verifyToken(token, keys, testNow)
		if err != nil {
			if !errors.Is(err, errTokenInvalid) && !errors.Is(err, errTokenExpired) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			return c, false
		}
		if c.Sub == "" || !testNow.Before(c.ExpiresAt) {
			t.Fatalf("%q: accepted claims %+v", token, c)
		}
		return c, true
	}
	f.Fuzz(func(t *testing.T, token string) {
		// No one without testKey can make a token that verifies, so an
		// accepted input must be one a key holder wrote, byte for byte: a
		// mutation that still verifies means some part of the token is
		// malleable.
		if c, ok := check(t, token); ok && token != signToken(testKey, c) && !slices.Contains(fuzzTokens, token) {
			t.Fatalf("accepted %q, which no key holder wrote", token)
		}
		// Signed anew, the same header and payload reach the JSON code,
		// which a forger never does.
		if i := strings.LastIndexByte(token, '.'); i >= 0 && len(token) <= maxTokenBytes {
			check(t, sign(testKey, token[:i]))
		}
	})
}

func BenchmarkSignToken(b *testing.B) {
	c := tokenClaims{Sub: "ada@example.com", Name: "Ada Lovelace", IssuedAt: testNow, ExpiresAt: future}
	b.ReportAllocs()
	for b.Loop() {
		signToken(testKey, c)
	}
}

func BenchmarkVerifyToken(b *testing.B) {
	token := signToken(testKey, tokenClaims{Sub: "ada@example.com", Name: "Ada Lovelace", IssuedAt: testNow, ExpiresAt: future})
	keys := [][]byte{testKey}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verifyToken(token, keys, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyTokenForged measures what a token with a bad MAC costs.
func BenchmarkVerifyTokenForged(b *testing.B) {
	token := sign([]byte("another-key-0123456789abcdef-012345"), enc(hdr)+"."+enc(valid))
	keys := [][]byte{testKey}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verifyToken(token, keys, testNow); err == nil {
			b.Fatal("forged token verified")
		}
	}
}

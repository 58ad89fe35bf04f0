package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
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

// oursToken is signToken's output for fixed claims. The original service
// reads the same bytes, so they must not change.
const oursToken = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGFAZXhhbXBsZS5jb20iLCJuYW1lIjoiQWRhIExvdmVsYWNlIiwiaWF0IjoxNzY3MzIzMDQ1LCJleHAiOjE3NjczMjY2NDUsImV4cGlyZXNfYXQiOiIyMDI2LTAxLTAyIDA0OjA0OjA1In0.uFEFQfmyODCxF6d0M4DEuyxQePpp1ZYpX1uYXo_B8yg"

const (
	hdr = `{"alg":"HS256","typ":"JWT"}`
	sub = `"sub":"ada@example.com"`
)

var (
	otherKey = []byte("another-key-0123456789abcdef-012345")
	valid    = claims(sub, exp(future)) // a minimal claims set that verifies at testNow
	ada      = tokenClaims{Sub: "ada@example.com", Name: "Ada Lovelace", IssuedAt: testNow, ExpiresAt: future}
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
func makeToken(header, claims string) string { return sign(testKey, enc(header)+"."+enc(claims)) }

// claims returns a JSON object of the given members.
func claims(members ...string) string { return "{" + strings.Join(members, ",") + "}" }

func exp(t time.Time) string { return fmt.Sprintf(`"exp":%d`, t.Unix()) }

func expiresAt(t time.Time) string {
	return fmt.Sprintf(`"expires_at":%q`, t.UTC().Format(expiresAtLayout))
}

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
	tests := []struct{ name, header, claims string }{
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
		{"iat an hour ahead: only information", hdr, claims(sub, exp(future), fmt.Sprintf(`"iat":%d`, future.Unix()))},
		{"names differ in case", `{"alg":"HS256","ALG":"none","Crit":["x"]}`, claims(sub, `"SUB":7`, `"EXP":0`, `"Nbf":1e20`, exp(future))},
		{"unknown claims", hdr, claims(`"iss":"x"`, sub, exp(future), `"aud":["a",{"b":"}"}]`, `"x":null`)},
		{"name", hdr, claims(sub, `"name":"Zoë \"Z\" \u003cO'Brien\u003e"`, exp(future))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := verifyToken(makeToken(tt.header, tt.claims), [][]byte{testKey}, testNow)
			if err != nil || c.Sub != "ada@example.com" {
				t.Fatalf("verifyToken = %+v, %v", c, err)
			}
		})
	}
}

// TestVerifyTokenRefuses checks each refusal and the reason it gives, which
// tells the check that refused it: the shape before the MAC, the MAC before
// any JSON, and the header before the claims. An expired token's error is
// errTokenExpired; every other wraps errTokenInvalid. Of two expiries, the
// earlier counts.
func TestVerifyTokenRefuses(t *testing.T) {
	hdrSeg, validSeg := enc(hdr), enc(valid)
	input := hdrSeg + "." + validSeg // the signing input of good
	good := makeToken(hdr, valid)
	sigSeg := good[strings.LastIndexByte(good, '.')+1:]
	mac, _ := base64.RawURLEncoding.DecodeString(sigSeg)
	flipped, lastFlipped := slices.Clone(mac), slices.Clone(mac)
	flipped[0] ^= 1
	lastFlipped[31] ^= 1
	hs512 := hmac.New(sha512.New, testKey)
	hs512.Write([]byte(input))
	x12 := claims(sub, exp(future), `"x":12`) // its encoding has trailing bits and padding
	kid := `{"alg":"HS256","kid":"1"}`        // likewise
	tilde := enc(claims(sub, `"name":"~~~~~~"`, exp(future)))
	if !strings.Contains(tilde, "-") {
		t.Fatalf("%q has no '-' to swap", tilde)
	}
	headers := func(hs ...string) (tokens []string) {
		for _, h := range hs {
			tokens = append(tokens, makeToken(h, valid))
		}
		return tokens
	}
	claimSets := func(cs ...string) (tokens []string) {
		for _, c := range cs {
			tokens = append(tokens, makeToken(hdr, c))
		}
		return tokens
	}
	refusals := []struct {
		reason string
		tokens []string
	}{
		{"too long", []string{strings.Repeat("A", maxTokenBytes-40) + "." + validSeg + "." + sigSeg}},
		{"not a compact JWS with a 32-byte MAC", []string{
			"", "..", input, good + "." + sigSeg, "." + validSeg + "." + sigSeg,
			sign(testKey, hdrSeg+"."), sign(testKey, "."+validSeg), enc(`{"alg":"none","typ":"JWT"}`) + "." + validSeg + ".",
			// CR and LF, which the strict decoder would skip, even where signed.
			sign(testKey, hdrSeg+"."+validSeg[:10]+"\n"+validSeg[10:]), good + "\r\n", good + "\n",
			// Only a full, canonical HS256 MAC.
			input + "." + sigSeg[:22], input + "." + enc(string(mac[:31])),
			good + "A", input + "." + enc(string(mac)+"x"), good + "=",
			input + "." + enc(string(hs512.Sum(nil))), input + "." + dirtyTail(t, sigSeg),
		}},
		{"bad signature", []string{" " + good, sign(otherKey, input), sign(nil, input), rfcToken,
			input + "." + enc(string(flipped)), input + "." + enc(string(lastFlipped)),
			sign(otherKey, enc(`{"alg":"none"}`)+"."+enc("x"))}},
		{"header is not a base64url JSON object", append(headers(`["HS256"]`, `"HS256"`, `null`, hdr+`x`, hdr+`{}`,
			`alg=HS256`, `{"alg":"HS256","kid":"`+"\xff"+`"}`),
			sign(testKey, enc(kid)+"==."+validSeg), sign(testKey, dirtyTail(t, enc(kid))+"."+validSeg))},
		{"alg is not HS256", headers(`{"alg":"none","typ":"JWT"}`, `{"alg":"None"}`, `{"alg":"NONE"}`, `{"alg":"nOnE"}`,
			`{"alg":""}`, `{"alg":"hs256"}`, `{"alg":"HS256 "}`, `{"alg":"HS384"}`, `{"alg":"HS512"}`, `{"alg":"RS256"}`,
			`{"alg":"ES256"}`, `{"typ":"JWT"}`, `{}`, `{"ALG":"HS256"}`, `{"\u0041LG":"HS256"}`, `{"alg":256}`,
			`{"alg":null}`, `{"alg":["HS256"]}`)},
		{"crit extension not understood", headers(`{"alg":"HS256","crit":["exp"],"exp":1}`, `{"alg":"HS256","crit":[]}`)},
		{"typ is not JWT", headers(`{"alg":"HS256","typ":"JWS"}`, `{"alg":"HS256","typ":"at+jwt"}`,
			`{"alg":"HS256","typ":1}`, `{"alg":"HS256","typ":null}`)},
		{"claims are not a base64url JSON object", append(claimSets(`[`+valid+`]`, `null`, `"ada@example.com"`, `1`,
			valid[:len(valid)-1], valid+`x`, valid+`{}`, valid+`]`, "\ufeff"+valid,
			claims(sub, exp(future), `"name":"`+"\xc3\x28"+`"`), claims(sub, `"exp":1e400`)),
			sign(testKey, hdrSeg+"."+base64.URLEncoding.EncodeToString([]byte(x12))),
			sign(testKey, hdrSeg+"."+dirtyTail(t, enc(x12))),
			sign(testKey, hdrSeg+"."+strings.NewReplacer("-", "+", "_", "/").Replace(tilde)))},
		{"malformed claim", claimSets(
			claims(`"sub":1`, exp(future)), claims(`"sub":null`, exp(future)), claims(`"sub":["ada@example.com"]`, exp(future)),
			claims(sub, exp(future), `"name":1`), claims(sub, exp(future), `"name":null`), claims(sub, exp(future), `"stamp":1`),
			claims(sub, exp(future), `"iat":"1767323045"`), claims(sub, exp(future), `"iat":null`),
			claims(sub, exp(future), `"iat":true`), claims(sub, exp(future), `"iat":[1767323045]`),
			claims(sub, exp(future), `"iat":1e20`), claims(sub, exp(future), `"iat":-1e20`),
			claims(sub, exp(future), `"nbf":"0"`), claims(sub, exp(future), `"nbf":-62135596801`),
			claims(sub, fmt.Sprintf(`"exp":"%d"`, future.Unix())), claims(sub, `"exp":null`), claims(sub, `"exp":true`),
			claims(sub, `"exp":{}`), claims(sub, `"exp":1e20`), claims(sub, `"exp":9223372036854775808`),
			claims(sub, `"exp":253402300800`), claims(sub, `"exp":-1e300`), claims(sub, `"exp":"soon"`, expiresAt(future)),
			claims(sub, fmt.Sprintf(`"expires_at":%d`, future.Unix())), claims(sub, `"expires_at":null`),
			claims(sub, `"expires_at":""`), claims(sub, `"expires_at":"2026-01-02T04:04:05"`),
			claims(sub, `"expires_at":"2026-01-02 04:04:05+00:00"`), claims(sub, `"expires_at":"0000-01-02 04:04:05"`),
			claims(sub, `"expires_at":"10000-01-02 04:04:05"`), claims(sub, `"expires_at":"2026-01-02 04:04:60"`),
			claims(sub, `"expires_at":"2026-02-30 04:04:05"`), claims(sub, `"expires_at":"2026-01-02 24:00:00"`),
			claims(sub, `"expires_at":"2026-01-02 04:04:05."`), claims(sub, `"expires_at":"2026-01-02 04:04:05 "`),
			claims(sub, exp(future), `"expires_at":"tomorrow"`))},
		{"no sub", claimSets(claims(exp(future)), claims(`"SUB":"ada@example.com"`, exp(future)), claims(`"sub":""`, exp(future)))},
		{"no expiry", claimSets(claims(sub), claims(sub, fmt.Sprintf(`"EXP":%d`, future.Unix())),
			claims(sub, `"Expires_At":"2026-01-02 04:04:05"`))},
		{"not valid yet", claimSets(claims(sub, exp(future), fmt.Sprintf(`"nbf":%d`, testNow.Unix()+1)))},
		{"token expired", claimSets(claims(sub, exp(past)), claims(sub, exp(testNow)), claims(sub, `"exp":0`),
			claims(sub, expiresAt(past)), claims(sub, exp(future), expiresAt(past)), claims(sub, exp(past), expiresAt(future)))},
	}
	// The RFC's example, its header members the other way round and across
	// lines, passes the MAC and the header under its own key, and fails only
	// for want of a sub, which myapi requires.
	key, _ := base64.RawURLEncoding.DecodeString(rfcKey)
	if _, err := verifyToken(rfcToken, [][]byte{key}, time.Unix(1300819379, 0)); err == nil || !strings.HasSuffix(err.Error(), ": no sub") {
		t.Errorf("RFC 7515's example with its key: got %v, want no sub", err)
	}
	for _, r := range refusals {
		for i, token := range r.tokens {
			c, err := verifyToken(token, [][]byte{testKey}, testNow)
			expired := r.reason == "token expired"
			if err == nil || !strings.HasSuffix(err.Error(), r.reason) || c != (tokenClaims{}) ||
				errors.Is(err, errTokenExpired) != expired || errors.Is(err, errTokenInvalid) == expired {
				t.Errorf("%s, token %d (%.50q...): got %+v, %v", r.reason, i, token, c, err)
			}
		}
	}
}

// TestVerifyTokenSizeLimit finds the largest token within maxTokenBytes: it
// verifies, and the next size up does not.
func TestVerifyTokenSizeLimit(t *testing.T) {
	padded := func(n int) string {
		return makeToken(hdr, claims(sub, exp(future), `"pad":"`+strings.Repeat("x", n)+`"`))
	}
	n := 0
	for len(padded(n+1)) <= maxTokenBytes {
		n++
	}
	_, errFits := verifyToken(padded(n), [][]byte{testKey}, testNow)
	_, errOver := verifyToken(padded(n+1), [][]byte{testKey}, testNow)
	if errFits != nil || !errors.Is(errOver, errTokenInvalid) {
		t.Errorf("%d bytes: %v; %d bytes: %v", len(padded(n)), errFits, len(padded(n+1)), errOver)
	}
}

func TestVerifyTokenKeyRotation(t *testing.T) {
	newKey := []byte("the-new-key-0123456789abcdef-0123456")
	for _, key := range [][]byte{newKey, testKey} {
		if _, err := verifyToken(signToken(key, ada), [][]byte{newKey, testKey}, testNow); err != nil {
			t.Errorf("token signed with %q: %v", key, err)
		}
	}
	// A key left empty by mistake must not let anyone sign.
	if _, err := verifyToken(signToken(nil, ada), [][]byte{testKey, nil, {}}, testNow); !errors.Is(err, errTokenInvalid) {
		t.Errorf("token signed with an empty key: got %v, want %v", err, errTokenInvalid)
	}
	for _, keys := range [][][]byte{{newKey}, nil, {{}}, {nil, newKey}} {
		if _, err := verifyToken(signToken(testKey, ada), keys, testNow); !errors.Is(err, errTokenInvalid) {
			t.Errorf("keys %q: got %v, want %v", keys, err, errTokenInvalid)
		}
	}
}

func TestSignTokenRoundTrip(t *testing.T) {
	if got := signToken(testKey, ada); got != oursToken {
		t.Errorf("signToken = %q, want %q", got, oursToken)
	}
	// Times are written to the second, and expires_at in UTC: were it written
	// in this zone, west of UTC, it would be the earlier expiry.
	in := tokenClaims{
		Sub:       "zoë@example.com",
		Name:      `Zoë "Z" <O'Brien> & \ co`,
		Stamp:     "a-stamp",
		IssuedAt:  testNow.Add(123456789 * time.Nanosecond).In(time.FixedZone("CET", 3600)),
		ExpiresAt: future.Add(999 * time.Millisecond).In(time.FixedZone("BRT", -3*3600)),
	}
	out, err := verifyToken(signToken(testKey, in), [][]byte{testKey}, testNow)
	if err != nil || out.Sub != in.Sub || out.Name != in.Name || out.Stamp != in.Stamp ||
		!out.IssuedAt.Equal(in.IssuedAt.Truncate(time.Second)) || !out.ExpiresAt.Equal(future) {
		t.Errorf("verifyToken(signToken(%+v)) = %+v, %v", in, out, err)
	}
}

// TestVerifyTokenPython verifies the original's tokens, which have no iat,
// until their expires_at, to the microsecond.
func TestVerifyTokenPython(t *testing.T) {
	for token, exp := range map[string]time.Time{
		pythonToken:      time.Date(2026, 1, 2, 4, 4, 5, 0, time.UTC),
		pythonTokenMicro: time.Date(2026, 1, 2, 4, 4, 5, 123456000, time.UTC),
	} {
		c, err := verifyToken(token, [][]byte{testKey}, exp.Add(-time.Nanosecond))
		if err != nil || c.Sub != "ada@example.com" || c.Name != "Ada Lovelace" || !c.IssuedAt.IsZero() || !c.ExpiresAt.Equal(exp) {
			t.Errorf("verifyToken(%q) = %+v, %v; want ExpiresAt %v", token, c, err, exp)
		}
		if _, err := verifyToken(token, [][]byte{testKey}, exp); !errors.Is(err, errTokenExpired) {
			t.Errorf("verifyToken(%q) at its expiry: got %v, want %v", token, err, errTokenExpired)
		}
	}
}

// fuzzTokens are the seed tokens that a holder of testKey made and that
// verify at testNow.
var fuzzTokens = []string{
	signToken(testKey, ada),
	pythonToken,
	pythonTokenMicro,
	makeToken(`{"typ":"JWT","alg":"HS256","kid":"1"}`, claims(sub, exp(future), `"nbf":1`, `"aud":["a",{"b":"}"}]`)),
	makeToken(`{"alg":"HS256"}`, claims(`"s\u0075b":"\u00e9\ud83d\ude00"`, `"exp":1.8e9`, expiresAt(future))),
	// A repeated name is read as encoding/json reads it, the last one
	// winning: only a key holder can write one.
	makeToken(hdr, claims(sub, `"sub":"eve@example.com"`, exp(future))),
}

func FuzzVerifyToken(f *testing.F) {
	for _, token := range slices.Concat(fuzzTokens, []string{ // and some that testdata/fuzz does not hold
		makeToken(`{"alg":"HS256","crit":["b64"],"b64":false}`, valid),
		makeToken(hdr, claims(sub, exp(future), `"stamp":1`)),
		makeToken(hdr, claims(sub, fmt.Sprintf(`"EXP":%d`, future.Unix()))),
		makeToken(hdr, claims(`"sub":1`, expiresAt(future))),
		sign(otherKey, enc(hdr)+"."+enc(valid)),
		rfcToken,
	}) {
		f.Add(token)
	}
	check := func(t *testing.T, token string) (tokenClaims, bool) {
		c, err := verifyToken(token, [][]byte{testKey}, testNow)
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

func BenchmarkVerifyToken(b *testing.B) {
	token := signToken(testKey, ada)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verifyToken(token, [][]byte{testKey}, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyTokenForged measures what a token with a bad MAC costs.
func BenchmarkVerifyTokenForged(b *testing.B) {
	token := sign(otherKey, enc(hdr)+"."+enc(valid))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verifyToken(token, [][]byte{testKey}, testNow); err == nil {
			b.Fatal("forged token verified")
		}
	}
}

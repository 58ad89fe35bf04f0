package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// multipartForm is a multipart/form-data body of fields (name, value
// pairs) and the header that sends it.
func multipartForm(fields ...string) (http.Header, *bytes.Buffer) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	mw.Close()
	return http.Header{"Content-Type": {mw.FormDataContentType()}}, &buf
}

func TestLoginAndProtectedRoute(t *testing.T) {
	t.Parallel()
	_, env := databaseWithAda(t)
	app := startApp(t, env)

	res := app.login(t, "ada@example.com", "correct horse")
	var body tokenResponse
	decodeJSON(t, res.body, &body)
	if res.status != 200 || body.TokenType != "bearer" || !strings.HasPrefix(res.body, `{"access_token":"`) {
		t.Errorf("login: %d %s", res.status, res.body)
	}
	res.expectHeader(t, "Cache-Control", "no-store")
	claims, err := verifyToken(body.AccessToken, [][]byte{[]byte(testTokenKey)}, time.Now())
	if err != nil || claims.Sub != "ada@example.com" || claims.Name != "Ada" || claims.ExpiresAt.Sub(claims.IssuedAt) != time.Hour {
		t.Errorf("token claims %+v, %v; want Ada's, for the default 60m", claims, err)
	}

	app.do(t, "GET", moviesPath, bearer(body.AccessToken), nil).expect(t, 200, `[]`)
	// The scheme is case-insensitive (RFC 7235 §2.1).
	app.do(t, "GET", moviesPath, http.Header{"Authorization": {"bEaReR " + body.AccessToken}}, nil).expect(t, 200, `[]`)

	// Multipart forms log in too, with grant_type as the spec allows.
	h, form := multipartForm("grant_type", "password", "username", "ada@example.com", "password", "correct horse")
	if res := app.do(t, "POST", "/token", h, form); res.status != 200 {
		t.Errorf("multipart login: %d %s", res.status, res.body)
	}

	// The form is read like a query: a field whose %-escape is malformed
	// counts as absent and does not hide the others, and the last of a
	// repeated field counts.
	createUser(t, env, "Bob", "bob@example.com", "50% off, 100%real")
	for fields, status := range map[string]int{
		"username=bob%40example.com&password=50%25+off,+100%25real":                         200,
		"username=bob%40example.com&password=50%25+off,+100%25real&scope=50%&&flag":         200,
		"password=wrong&username=bob%40example.com&password=50%25+off,+100%25real":          200,
		"username=bob%40example.com&password=50%+off,+100%real":                             422,
		"username=bob%40example.com&password=50%25+off,+100%25real&password=%zz":            200,
		"username=bob%40example.com&password=50%25+off,+100%25real&password=50%25+off,+100": 401,
	} {
		if res := app.do(t, "POST", "/token", formHeader, strings.NewReader(fields)); res.status != status {
			t.Errorf("%s: %d %s, want %d", fields, res.status, res.body, status)
		}
	}
}

// TestLoginFailuresLookTheSame: an unknown email, a wrong password, one
// too long for bcrypt, and a username PostgreSQL cannot hold as text all
// get the same 401, headers and all.
func TestLoginFailuresLookTheSame(t *testing.T) {
	t.Parallel()
	_, env := databaseWithAda(t)
	app := startApp(t, env)
	var first string
	for _, form := range []string{"username=nobody%40example.com&password=correct+horse",
		"username=ada%40example.com&password=wrong+horse", "username=ada%40example.com&password=" + strings.Repeat("x", 73),
		"username=a%00b@example.com&password=whatever1", "username=%ff%fe@example.com&password=whatever1"} {
		res := app.do(t, "POST", "/token", formHeader, strings.NewReader(form))
		res.expect(t, 401, `{"detail":"Incorrect username or password"}`)
		res.expectHeader(t, "WWW-Authenticate", "Bearer")
		res.header.Del("Date")
		res.header.Del("X-Request-Id")
		if shape := fmt.Sprint(res.header); first == "" {
			first = shape
		} else if shape != first {
			t.Errorf("%s: headers differ:\n%s\nvs\n%s", form, shape, first)
		}
	}
}

func TestLoginValidation(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	const (
		username  = `{"loc":["body","username"],"msg":"field required","type":"value_error.missing"}`
		password  = `{"loc":["body","password"],"msg":"field required","type":"value_error.missing"}`
		grantType = `{"loc":["body","grant_type"],"msg":"string does not match regex \"password\"","type":"value_error.str.regex","ctx":{"pattern":"password"}}`
	)
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	cases := []struct {
		target string
		header http.Header
		body   string
		want   string
	}{
		{"/token", formHeader, "", username + "," + password},
		{"/token", formHeader, "username=a%40b.c", password},
		{"/token", formHeader, "username=&password=x", username},
		{"/token", formHeader, "username=a&password=b&grant_type=client_credentials", grantType},
		{"/token", formHeader, "username=a&password=b&grant_type=passwordX", grantType},
		{"/token", formHeader, "grant_type=x", username + "," + password + "," + grantType},
		{"/token", jsonHeader, `{"username":"a","password":"b"}`, username + "," + password},
		{"/token", nil, "username=a&password=b", username + "," + password},
		// Credentials in the query string do not count: only the body does.
		{"/token?username=a&password=b", formHeader, "", username + "," + password},
	}
	for _, c := range cases {
		app.do(t, "POST", c.target, c.header, strings.NewReader(c.body)).expect(t, 422, `{"detail":[`+c.want+`]}`)
	}
}

// TestLoginBodyLimitsAndErrors covers bodies over the limit, which are
// 413 whatever they hold, and bodies that cannot be read as a form, which
// are 400: none waits for the read timeout, and none reads as an empty
// form (422).
func TestLoginBodyLimitsAndErrors(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	const (
		tooLarge = `{"detail":"Request body too large"}`
		badBody  = `{"detail":"There was an error parsing the body"}`
		wrong    = `{"detail":"Incorrect username or password"}`
	)
	huge := strings.Repeat("x", maxBodyBytes)
	multipartHeader, bigMultipart := multipartForm("username", "a", "password", huge)
	parts, many := http.Header{"Content-Type": {"multipart/form-data; boundary=b"}}, smallParts(1001)
	cases := []struct {
		name, target string
		header       http.Header
		body         io.Reader
		status       int
		want         string
	}{
		{"form", "/token", formHeader, strings.NewReader("username=a&password=" + huge), 413, tooLarge},
		{"multipart", "/token", multipartHeader, bigMultipart, 413, tooLarge},
		// Not a form at all, and too large: still 413, not 422.
		{"json", "/token", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"username":"` + huge + `"}`), 413, tooLarge},
		// More parts than mime/multipart reads, in a body under the limit
		// (or it would be 413), against a control with fewer; the query
		// string does not count.
		{"900 parts", "/token", parts, bytes.NewReader(smallParts(900)), 401, wrong},
		{"900 parts, odd query", "/token?a;b&x=%zz", parts, bytes.NewReader(smallParts(900)), 401, wrong},
		{"1001 parts", "/token", parts, bytes.NewReader(many), 400, badBody},
		// The same parts past the limit, sent without a Content-Length.
		{"1001 parts, padded", "/token", parts, io.MultiReader(bytes.NewReader(many), strings.NewReader(huge)), 413, tooLarge},
		{"no boundary", "/token", http.Header{"Content-Type": {"multipart/form-data"}}, strings.NewReader("username=a&password=b"), 400, badBody},
	}
	for _, c := range cases {
		if res := app.do(t, "POST", c.target, c.header, c.body); res.status != c.status || res.body != c.want {
			t.Errorf("%s: %d %s, want %d %s", c.name, res.status, res.body, c.status, c.want)
		}
	}

	// A declared length over the limit is refused before the body comes.
	addr := strings.TrimPrefix(app.url, "http://")
	head := "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
	rawExchange(t, addr, head+"Content-Length: 100000\r\n\r\nusername=a", false).expect(t, 413, tooLarge)
	// A body cut short is a bad request, answered at once.
	rawExchange(t, addr, head+"Content-Length: 100\r\n\r\nusername=a", true).expect(t, 400, badBody)
}

// smallParts is a multipart body with boundary "b": n one-byte parts,
// then a username and a password.
func smallParts(n int) []byte {
	var b bytes.Buffer
	part := func(name, value string) {
		fmt.Fprintf(&b, "--b\r\nContent-Disposition: form-data; name=%s\r\n\r\n%s\r\n", name, value)
	}
	for range n {
		part("s", "x")
	}
	part("username", "a@b.c")
	part("password", "12345678")
	b.WriteString("--b--\r\n")
	return b.Bytes()
}

// rawExchange writes req on a new connection, half-closes it when
// closeWrite is set, and reads the answer, which must come within 3s and
// close the connection. The server may hang up before it has read all of
// req: only the answer counts.
func rawExchange(t *testing.T, addr, req string, closeWrite bool) response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		if _, err := io.WriteString(conn, req); err == nil && closeWrite {
			conn.(*net.TCPConn).CloseWrite()
		}
	}()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil || !res.Close {
		t.Errorf("%d %s: %v; the connection must close with the answer", res.StatusCode, b, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

func TestBearerFailures(t *testing.T) {
	t.Parallel()
	dsn, env := databaseWithAda(t)
	createUser(t, env, "Gone", "gone@example.com", "correct horse")
	clock := &testClock{t: time.Now()}
	srv := newTestHandler(t, dsn, clock.now)
	app := &testApp{url: srv.URL, client: srv.Client()}

	ada := app.token(t, "ada@example.com", "correct horse")
	gone := app.token(t, "gone@example.com", "correct horse")
	now := clock.now()
	otherKey := signToken([]byte("another-key-0123456789-0123456789-0123"), tokenClaims{Sub: "ada@example.com", IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	noSub := signToken([]byte(testTokenKey), tokenClaims{Name: "x", IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	parts := strings.Split(ada, ".")
	mustExec(t, openTestDB(t, dsn), "DELETE FROM myapi.users WHERE email = 'gone@example.com'")

	const missing, invalid = "Bearer", `Bearer error="invalid_token"`
	cases := []struct {
		name, authorization, challenge, detail string
	}{
		{"no header", "", missing, "Invalid token"},
		{"basic", "Basic YWRhOmNvcnJlY3QgaG9yc2U=", missing, "Invalid token"},
		{"token without scheme", ada, missing, "Invalid token"},
		{"empty bearer", "Bearer ", invalid, "Invalid credentials"},
		{"two spaces", "Bearer  " + ada, invalid, "Invalid credentials"},
		{"malformed", "Bearer not.a.token", invalid, "Invalid credentials"},
		{"bad signature", "Bearer " + parts[0] + "." + parts[1] + ".AAAA" + parts[2][4:], invalid, "Invalid credentials"},
		{"alg none", "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".", invalid, "Invalid credentials"},
		{"another key", "Bearer " + otherKey, invalid, "Invalid credentials"},
		{"no sub", "Bearer " + noSub, invalid, "Invalid credentials"},
		{"deleted user", "Bearer " + gone, invalid, "Invalid credentials"},
	}
	for _, c := range cases {
		h := http.Header{}
		if c.authorization != "" {
			h.Set("Authorization", c.authorization)
		}
		res := app.do(t, "GET", moviesPath, h, nil)
		if res.status != 401 || res.body != `{"detail":"`+c.detail+`"}` || res.header.Get("WWW-Authenticate") != c.challenge {
			t.Errorf("%s: %d %s %q, want 401 %s %q", c.name, res.status, res.body, res.header.Get("WWW-Authenticate"), c.detail, c.challenge)
		}
	}
	// Never from the query string.
	app.do(t, "GET", moviesPath+"&access_token="+ada, nil, nil).expect(t, 401, `{"detail":"Invalid token"}`)
	// Authentication comes before the query: a bad query without a token is 401.
	app.do(t, "GET", "/movies/new?year=x", nil, nil).expect(t, 401, `{"detail":"Invalid token"}`)

	app.do(t, "GET", moviesPath, bearer(ada), nil).expect(t, 200, `[]`)
	clock.add(time.Hour + time.Second)
	res := app.do(t, "GET", moviesPath, bearer(ada), nil)
	res.expect(t, 401, `{"detail":"Token expired"}`)
	res.expectHeader(t, "WWW-Authenticate", invalid)
}

// TestDatabaseDownIs503 takes the database down under a serving handler:
// its backends are terminated (SQLSTATE 57P01) and new connections
// refused. Whatever the route, that is 503, never a 500.
func TestDatabaseDownIs503(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db := openTestDB(t, dsn)
	auth := signedBearer(t, db, "ada@example.com")
	app := serveHandler(t, newHandler(testDeps(newLogger(io.Discard, "text"), db)))
	takeDatabaseDown(t, dsn)
	unavailable := `{"detail":"Service unavailable"}`
	for range 2 { // first on the pool's broken connections, then on refused new ones
		app.do(t, "GET", "/movies/?movie_id=1", auth, nil).expect(t, 503, unavailable)
		app.login(t, "ada@example.com", "correct horse").expect(t, 503, unavailable)
		app.do(t, "GET", "/readyz", nil, nil).expect(t, 503, unavailable)
	}
}

// TestFullBcryptQueueAnswers503 fills the only bcrypt slot: a login then
// waits bcryptWait for it and is answered 503 with Retry-After, not 401,
// and does not count as a failure. Once the slot is free it logs in.
func TestFullBcryptQueueAnswers503(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db := openTestDB(t, dsn)
	d := testDeps(newLogger(io.Discard, "text"), db)
	app := serveHandler(t, newHandler(d))

	d.bcrypt.slots <- struct{}{} // a comparison that never ends
	start := time.Now()
	res := app.login(t, "ada@example.com", "correct horse")
	res.expect(t, 503, `{"detail":"Service unavailable"}`)
	res.expectHeader(t, "Retry-After", "1")
	if waited := time.Since(start); waited < bcryptWait {
		t.Errorf("answered 503 after %v, before bcryptWait (%v)", waited, bcryptWait)
	}
	if n := failures(t, db, accountKey("ada@example.com")); n != 0 {
		t.Errorf("a busy answer counted as %d failures", n)
	}
	<-d.bcrypt.slots
	app.token(t, "ada@example.com", "correct horse")
}

// BenchmarkLoginTiming shows that an unknown email costs what a wrong
// password costs (compare the two ns/op; they should agree within a few
// percent). It runs at the default cost, 12, the cost that matters.
func BenchmarkLoginTiming(b *testing.B) {
	dsn := newTestDatabase(b)
	env := testEnv(b, dsn, "MYAPI_BCRYPT_COST", "12")
	createUser(b, env, "Ada", "ada@example.com", "correct horse")
	s := newStore(openTestDB(b, dsn), time.Now)
	bc := newBcryptLimiter(12, 1)
	for _, c := range []struct{ name, email string }{{"wrong-password", "ada@example.com"}, {"unknown-email", "nobody@example.com"}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := authenticate(context.Background(), s, bc, c.email, "wrong horse"); !errors.Is(err, errBadCredentials) {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestKeyRotation: tokens signed with the key or a previous one verify;
// new tokens are signed with the key alone.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	const (
		newKey   = "the-new-key-0123456789-0123456789-0123"
		oldKey   = "the-old-key-0123456789-0123456789-0123"
		olderKey = "the-older-key-0123456789-0123456789-01"
	)
	dsn, _ := databaseWithAda(t)
	app := startApp(t, testEnv(t, dsn, "MYAPI_TOKEN_KEY", newKey, "MYAPI_TOKEN_KEY_PREVIOUS", oldKey+", "+olderKey))

	claims := accountClaims(t, openTestDB(t, dsn), "ada@example.com")
	for key, status := range map[string]int{newKey: 200, oldKey: 200, olderKey: 200, "an-unknown-key-0123456789-0123456789-0": 401} {
		if res := app.do(t, "GET", moviesPath, bearer(signToken([]byte(key), claims)), nil); res.status != status {
			t.Errorf("a token signed with %s: %d %s, want %d", key, res.status, res.body, status)
		}
	}
	token := app.token(t, "ada@example.com", "correct horse")
	if _, err := verifyToken(token, [][]byte{[]byte(newKey)}, time.Now()); err != nil {
		t.Errorf("a new token does not verify with the new key: %v", err)
	}
	if _, err := verifyToken(token, [][]byte{[]byte(oldKey), []byte(olderKey)}, time.Now()); err == nil {
		t.Error("a new token verifies with a previous key: previous keys must never sign")
	}
}

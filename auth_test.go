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
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoginAndProtectedRoute(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)

	res := app.login(t, "ada@example.com", "correct horse")
	if res.status != 200 {
		t.Fatalf("login: %d %s", res.status, res.body)
	}
	var body tokenResponse
	decodeJSON(t, res.body, &body)
	if body.TokenType != "bearer" || !strings.HasPrefix(res.body, `{"access_token":"`) {
		t.Errorf("login body %s", res.body)
	}
	if res.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", res.header.Get("Cache-Control"))
	}
	claims, err := verifyToken(body.AccessToken, [][]byte{[]byte(testTokenKey)}, time.Now())
	if err != nil || claims.Sub != "ada@example.com" || claims.Name != "Ada" {
		t.Errorf("token claims %+v, %v", claims, err)
	}
	if d := claims.ExpiresAt.Sub(claims.IssuedAt); d != time.Hour {
		t.Errorf("token lifetime %v, want the default 60m", d)
	}

	app.do(t, "GET", "/movies/new?year=2000&rating=1", bearer(body.AccessToken), nil).expect(t, 200, `[]`)
	// The scheme is case-insensitive (RFC 7235 §2.1).
	app.do(t, "GET", "/movies/new?year=2000&rating=1", http.Header{"Authorization": {"bEaReR " + body.AccessToken}}, nil).expect(t, 200, `[]`)

	// Multipart forms log in too, with grant_type as the spec allows.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("grant_type", "password")
	mw.WriteField("username", "ada@example.com")
	mw.WriteField("password", "correct horse")
	mw.Close()
	if res := app.do(t, "POST", "/token", http.Header{"Content-Type": {mw.FormDataContentType()}}, &buf); res.status != 200 {
		t.Errorf("multipart login: %d %s", res.status, res.body)
	}
}

// TestLoginFormIsReadLikeAQuery: a field whose %-escape is malformed
// counts as absent and does not hide the others, and the last of a
// repeated field counts.
func TestLoginFormIsReadLikeAQuery(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "50% off, 100%real")
	app := startApp(t, env)
	for body, status := range map[string]int{
		"username=ada%40example.com&password=50%25+off,+100%25real":                         200,
		"username=ada%40example.com&password=50%25+off,+100%25real&scope=50%&&flag":         200,
		"password=wrong&username=ada%40example.com&password=50%25+off,+100%25real":          200,
		"username=ada%40example.com&password=50%+off,+100%real":                             422,
		"username=ada%40example.com&password=50%25+off,+100%25real&password=%zz":            200,
		"username=ada%40example.com&password=50%25+off,+100%25real&password=50%25+off,+100": 401,
	} {
		if res := app.do(t, "POST", "/token", formHeader, strings.NewReader(body)); res.status != status {
			t.Errorf("%s: %d %s, want %d", body, res.status, res.body, status)
		}
	}
}

func TestLoginFailuresLookTheSame(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)

	unknown := app.login(t, "nobody@example.com", "correct horse")
	wrong := app.login(t, "ada@example.com", "wrong horse")
	tooLong := app.login(t, "ada@example.com", strings.Repeat("x", 73))
	want := `{"detail":"Incorrect username or password"}`
	for name, res := range map[string]response{"unknown email": unknown, "wrong password": wrong, "73-byte password": tooLong} {
		res.expect(t, 401, want)
		if got := res.header.Get("WWW-Authenticate"); got != "Bearer" {
			t.Errorf("%s: WWW-Authenticate = %q", name, got)
		}
	}
	for _, h := range []http.Header{wrong.header, tooLong.header} {
		if got, want := headerShape(h), headerShape(unknown.header); got != want {
			t.Errorf("headers differ:\n%s\nvs\n%s", got, want)
		}
	}
}

// headerShape lists a response's headers but for those that differ on
// every response.
func headerShape(h http.Header) string {
	var b strings.Builder
	for _, k := range []string{"Content-Type", "Content-Length", "Www-Authenticate", "Cache-Control", "X-Content-Type-Options", "Retry-After"} {
		fmt.Fprintf(&b, "%s: %q\n", k, h.Values(k))
	}
	return b.String()
}

func TestLoginValidation(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	const (
		username  = `{"loc":["body","username"],"msg":"field required","type":"value_error.missing"}`
		password  = `{"loc":["body","password"],"msg":"field required","type":"value_error.missing"}`
		grantType = `{"loc":["body","grant_type"],"msg":"string does not match regex \"password\"","type":"value_error.str.regex","ctx":{"pattern":"password"}}`
	)
	cases := []struct {
		name, contentType, body, want string
	}{
		{"empty form", "application/x-www-form-urlencoded", "", username + "," + password},
		{"no password", "application/x-www-form-urlencoded", "username=a%40b.c", password},
		{"empty username", "application/x-www-form-urlencoded", "username=&password=x", username},
		{"wrong grant", "application/x-www-form-urlencoded", "username=a&password=b&grant_type=client_credentials", grantType},
		{"grant with a suffix", "application/x-www-form-urlencoded", "username=a&password=b&grant_type=passwordX", grantType},
		{"everything wrong", "application/x-www-form-urlencoded", "grant_type=x", username + "," + password + "," + grantType},
		{"json", "application/json", `{"username":"a","password":"b"}`, username + "," + password},
		{"no content type", "", "username=a&password=b", username + "," + password},
	}
	for _, c := range cases {
		h := http.Header{}
		if c.contentType != "" {
			h.Set("Content-Type", c.contentType)
		}
		res := app.do(t, "POST", "/token", h, strings.NewReader(c.body))
		if want := `{"detail":[` + c.want + `]}`; res.status != 422 || res.body != want {
			t.Errorf("%s: %d %s\nwant 422 %s", c.name, res.status, res.body, want)
		}
	}
	// Credentials in the query string do not count: only the body does.
	res := app.do(t, "POST", "/token?username=a&password=b", formHeader, strings.NewReader(""))
	res.expect(t, 422, `{"detail":[`+username+","+password+`]}`)
}

func TestLoginBodyLimit(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	body := "username=a&password=" + strings.Repeat("x", maxBodyBytes)
	app.do(t, "POST", "/token", formHeader, strings.NewReader(body)).expect(t, 413, `{"detail":"Request body too large"}`)

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("username", "a")
	mw.WriteField("password", strings.Repeat("x", maxBodyBytes))
	mw.Close()
	app.do(t, "POST", "/token", http.Header{"Content-Type": {mw.FormDataContentType()}}, &buf).
		expect(t, 413, `{"detail":"Request body too large"}`)

	// Not a form at all, and too large: still 413, not 422.
	json := `{"username":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	app.do(t, "POST", "/token", http.Header{"Content-Type": {"application/json"}}, strings.NewReader(json)).
		expect(t, 413, `{"detail":"Request body too large"}`)
}

// TestLoginBodyErrors covers bodies that cannot be read as a form: none
// waits for the read timeout, and none reads as an empty form (422).
func TestLoginBodyErrors(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	const (
		tooLarge = `{"detail":"Request body too large"}`
		badBody  = `{"detail":"There was an error parsing the body"}`
	)

	// More parts than mime/multipart reads, in a body under the limit,
	// against a control with fewer.
	multipartHeader := http.Header{"Content-Type": {"multipart/form-data; boundary=b"}}
	for _, target := range []string{"/token", "/token?a;b&x=%zz"} { // the query string does not count
		app.do(t, "POST", target, multipartHeader, bytes.NewReader(smallParts(900))).
			expect(t, 401, `{"detail":"Incorrect username or password"}`)
	}
	parts := smallParts(1001)
	if len(parts) > maxBodyBytes {
		t.Fatalf("the test's body is %d bytes, over the limit", len(parts))
	}
	app.do(t, "POST", "/token", multipartHeader, bytes.NewReader(parts)).expect(t, 400, badBody)

	// The same parts past the limit, sent without a Content-Length: 413.
	padded := io.MultiReader(bytes.NewReader(parts), strings.NewReader(strings.Repeat("x", maxBodyBytes)))
	app.do(t, "POST", "/token", multipartHeader, padded).expect(t, 413, tooLarge)

	noBoundary := http.Header{"Content-Type": {"multipart/form-data"}}
	app.do(t, "POST", "/token", noBoundary, strings.NewReader("username=a&password=b")).expect(t, 400, badBody)

	// A declared length over the limit is refused before the body comes.
	addr := strings.TrimPrefix(app.url, "http://")
	head := "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
	res := rawExchange(t, addr, head+"Content-Length: 100000\r\n\r\nusername=a", false)
	expectRaw(t, res, 413, tooLarge)

	// A body cut short is a bad request, answered at once.
	res = rawExchange(t, addr, head+"Content-Length: 100\r\n\r\nusername=a", true)
	expectRaw(t, res, 400, badBody)
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
// closeWrite is set, and reads the answer, which must come within 3s.
func rawExchange(t *testing.T, addr, req string, closeWrite bool) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		conn.(*net.TCPConn).CloseWrite()
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return res
}

// expectRaw is response.expect for rawExchange's answer, which must also
// close the connection.
func expectRaw(t *testing.T, res *http.Response, status int, body string) {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	response{status: res.StatusCode, header: res.Header, body: string(b)}.expect(t, status, body)
	if !res.Close {
		t.Error("the connection stays open with the body unread")
	}
}

func TestBearerFailures(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	env := testEnv(t, dsn)
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	createUser(t, env, "Gone", "gone@example.com", "correct horse")

	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	srv := newTestHandler(t, dsn, now)
	app := &testApp{url: srv.URL, client: srv.Client()}

	ada := app.token(t, "ada@example.com", "correct horse")
	gone := app.token(t, "gone@example.com", "correct horse")
	key := []byte(testTokenKey)
	noSub := signToken(key, tokenClaims{Name: "x", IssuedAt: clock, ExpiresAt: clock.Add(time.Hour)})
	otherKey := signToken([]byte("another-key-0123456789-0123456789-0123"), tokenClaims{Sub: "ada@example.com", IssuedAt: clock, ExpiresAt: clock.Add(time.Hour)})
	parts := strings.Split(ada, ".")
	algNone := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + "."
	db := openTestDB(t, dsn)
	if _, err := db.Exec("DELETE FROM myapi.users WHERE email = 'gone@example.com'"); err != nil {
		t.Fatal(err)
	}

	const path = "/movies/new?year=1&rating=1"
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
		{"alg none", "Bearer " + algNone, invalid, "Invalid credentials"},
		{"another key", "Bearer " + otherKey, invalid, "Invalid credentials"},
		{"no sub", "Bearer " + noSub, invalid, "Invalid credentials"},
		{"deleted user", "Bearer " + gone, invalid, "Invalid credentials"},
	}
	for _, c := range cases {
		h := http.Header{}
		if c.authorization != "" {
			h.Set("Authorization", c.authorization)
		}
		res := app.do(t, "GET", path, h, nil)
		if res.status != 401 || res.body != `{"detail":"`+c.detail+`"}` || res.header.Get("WWW-Authenticate") != c.challenge {
			t.Errorf("%s: %d %s %q, want 401 %s %q", c.name, res.status, res.body, res.header.Get("WWW-Authenticate"), c.detail, c.challenge)
		}
	}
	// Never from the query string.
	app.do(t, "GET", path+"&access_token="+ada, nil, nil).expect(t, 401, `{"detail":"Invalid token"}`)
	// Authentication comes before the query: a bad query without a token is 401.
	app.do(t, "GET", "/movies/new?year=x", nil, nil).expect(t, 401, `{"detail":"Invalid token"}`)

	app.do(t, "GET", path, bearer(ada), nil).expect(t, 200, `[]`)
	mu.Lock()
	clock = clock.Add(time.Hour + time.Second)
	mu.Unlock()
	res := app.do(t, "GET", path, bearer(ada), nil)
	res.expect(t, 401, `{"detail":"Token expired"}`)
	if got := res.header.Get("WWW-Authenticate"); got != invalid {
		t.Errorf("expired: WWW-Authenticate = %q", got)
	}
}

// TestDatabaseDownIs503 takes the database down under a serving handler:
// its backends are terminated (SQLSTATE 57P01) and new connections
// refused. Whatever the route, that is 503, never a 500.
func TestDatabaseDownIs503(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	db := openTestDB(t, dsn)
	token := signToken([]byte(testTokenKey), accountClaims(t, db, "ada@example.com"))
	srv := httptest.NewServer(newHandler(testDeps(newLogger(io.Discard, "text"), db)))
	t.Cleanup(srv.Close)
	app := &testApp{url: srv.URL, client: srv.Client()}
	takeDatabaseDown(t, dsn)
	unavailable := `{"detail":"Service unavailable"}`
	for range 2 { // first on the pool's broken connections, then on refused new ones
		app.do(t, "GET", "/movies/?movie_id=1", bearer(token), nil).expect(t, 503, unavailable)
		app.login(t, "ada@example.com", "correct horse").expect(t, 503, unavailable)
		app.do(t, "GET", "/readyz", nil, nil).expect(t, 503, unavailable)
	}
}

// TestFullBcryptQueueAnswers503 fills the only bcrypt slot: a login then
// waits bcryptWait for it and is answered 503 with Retry-After, not 401,
// and does not count as a failure. Once the slot is free it logs in.
func TestFullBcryptQueueAnswers503(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	db := openTestDB(t, dsn)
	d := testDeps(newLogger(io.Discard, "text"), db)
	h := newHandler(d)
	login := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/token", strings.NewReader("username=ada%40example.com&password=correct+horse"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	d.bcrypt.slots <- struct{}{} // a comparison that never ends
	start := time.Now()
	w := login()
	if w.Code != 503 || w.Body.String() != `{"detail":"Service unavailable"}` || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("queue full: got %d %s Retry-After %q, want 503 with Retry-After 1", w.Code, w.Body, w.Header().Get("Retry-After"))
	}
	if waited := time.Since(start); waited < bcryptWait {
		t.Errorf("answered 503 after %v, before bcryptWait (%v)", waited, bcryptWait)
	}
	if n := failures(t, db, accountKey("ada@example.com")); n != 0 {
		t.Errorf("a busy answer counted as %d failures", n)
	}

	<-d.bcrypt.slots
	if w := login(); w.Code != 200 {
		t.Errorf("slot free again: got %d %s, want 200", w.Code, w.Body)
	}
}

// The original service's users keep logging in: this hash is the one the
// FastAPI tutorial ships for the password "secret", made by passlib.
func TestPasslibHashLogsIn(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	db := openTestDB(t, dsn)
	if _, err := db.Exec(`INSERT INTO myapi.users (name, email, hashed_password) VALUES
		('John Doe', 'johndoe@example.com', '$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW')`); err != nil {
		t.Fatal(err)
	}
	app := startApp(t, testEnv(t, dsn))
	app.token(t, "johndoe@example.com", "secret")
	app.login(t, "johndoe@example.com", "secreT").expect(t, 401, `{"detail":"Incorrect username or password"}`)
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

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	const (
		newKey   = "the-new-key-0123456789-0123456789-0123"
		oldKey   = "the-old-key-0123456789-0123456789-0123"
		olderKey = "the-older-key-0123456789-0123456789-01"
		unknown  = "an-unknown-key-0123456789-0123456789-0"
	)
	dsn := newTestDatabase(t)
	env := testEnv(t, dsn, "MYAPI_TOKEN_KEY", newKey, "MYAPI_TOKEN_KEY_PREVIOUS", oldKey+", "+olderKey)
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)

	claims := accountClaims(t, openTestDB(t, dsn), "ada@example.com")
	for _, key := range []string{newKey, oldKey, olderKey} {
		app.do(t, "GET", "/movies/new?year=1&rating=1", bearer(signToken([]byte(key), claims)), nil).expect(t, 200, `[]`)
	}
	app.do(t, "GET", "/movies/new?year=1&rating=1", bearer(signToken([]byte(unknown), claims)), nil).
		expect(t, 401, `{"detail":"Invalid credentials"}`)

	token := app.token(t, "ada@example.com", "correct horse")
	if _, err := verifyToken(token, [][]byte{[]byte(newKey)}, time.Now()); err != nil {
		t.Errorf("a new token does not verify with the new key: %v", err)
	}
	if _, err := verifyToken(token, [][]byte{[]byte(oldKey), []byte(olderKey)}, time.Now()); err == nil {
		t.Error("a new token verifies with a previous key: previous keys must never sign")
	}
}

// A username PostgreSQL cannot hold as text is a failed login, not an
// outage.
func TestLoginWithBinaryUsername(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	for _, name := range []string{"a%00b@example.com", "%ff%fe@example.com"} {
		res := app.do(t, "POST", "/token", formHeader, strings.NewReader("username="+name+"&password=whatever1"))
		res.expect(t, 401, `{"detail":"Incorrect username or password"}`)
	}
	err := run(context.Background(), []string{"create-user", "-name", "A\x00B", "-email", "a@example.com", "-password", "correct horse"},
		testEnv(t, newTestDatabase(t)), nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-name must be UTF-8 text") {
		t.Errorf("create-user with a NUL in the name: %v", err)
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRequestLogAndRequestID(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	app := startApp(t, testEnv(t, dsn, "MYAPI_LOG_FORMAT", "json"))
	h := bearer(app.token(t, "ada@example.com", "correct horse"))
	h.Set("X-Request-ID", "trace-42_a.b")
	app.do(t, "GET", "/movies/?movie_id=7&secret=x", h, nil).expectHeader(t, "X-Request-ID", "trace-42_a.b")
	for _, bad := range []string{"has space", strings.Repeat("a", 65), "quote\"", "semi;colon", "a=b"} {
		res := app.do(t, "GET", "/healthz", http.Header{"X-Request-Id": {bad}}, nil)
		if got := res.header.Get("X-Request-ID"); got == bad || len(got) < 8 {
			t.Errorf("X-Request-ID %q came back as %q, want a fresh id", bad, got)
		}
	}

	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(app.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["request_id"] == "trace-42_a.b" && m["msg"] == "request" {
			line = m
		}
	}
	want := map[string]any{"method": "GET", "path": "/movies/", "status": 404.0, "user": "ada@example.com",
		"detail": "Movie not found", "bytes": float64(len(`{"detail":"Movie not found"}`))}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v", k, line[k], v)
		}
	}
	if line["duration"] == nil || strings.Contains(app.logs.String(), "secret=x") {
		t.Errorf("the request line %v lacks the duration, or the log shows the query string", line)
	}
}

func TestPanicIsA500AndTheServerGoesOn(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, "fine") })
	app := serveHandler(t, withMiddleware(newLogger(logs, "text"), mux))

	app.do(t, "GET", "/panic", http.Header{"X-Request-Id": {"req-1"}}, nil).expect(t, 500, `{"detail":"Internal Server Error"}`)
	app.do(t, "GET", "/ok", nil, nil).expect(t, 200, `"fine"`)
	log := logs.String()
	if !strings.Contains(log, "panic=boom") || !strings.Contains(log, "server_test.go") || !strings.Contains(log, "request_id=req-1") {
		t.Errorf("the log lacks the panic, its stack or its request id:\n%s", log)
	}
}

// TestHeaderLimits serves through newHTTPServer, with the header timeout
// cut short so that the test need not wait long: headers too large are
// 431, and a client that sends its headers slowly is cut off.
func TestHeaderLimits(t *testing.T) {
	t.Parallel()
	srv := newHTTPServer(withMiddleware(newLogger(io.Discard, "text"), handleHealthz()), newLogger(io.Discard, "text"))
	if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 || srv.MaxHeaderBytes != maxHeaderBytes {
		t.Fatalf("a limit is unset: %+v", srv)
	}
	const timeout = 300 * time.Millisecond
	srv.ReadHeaderTimeout = timeout
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	big := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2*maxHeaderBytes) + "\r\n\r\n"
	if res := rawExchange(t, ln.Addr().String(), big, false); res.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", res.status)
	}

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	req := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100)
	for i := range len(req) {
		if _, err := conn.Write([]byte{req[i]}); err != nil {
			break // the server hung up: what we want
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The server hangs up: the read ends with EOF or a reset, not with
	// our own deadline.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept the connection open")
	}
	if d := time.Since(start); d > 3*timeout {
		t.Errorf("hung up after %v, want about %v", d, timeout)
	}
}

// TestLogsHoldNoSecrets sends the traffic that carries secrets (logins,
// failed logins, good and bad tokens, a bad DSN at start) and checks that
// no log line or error shows one. It also checks that a 422's list reads
// as a sentence in text logs and stays FastAPI's list in JSON logs.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		password = "pw-correct-horse-93f1"
		wrong    = "pw-wrong-horse-5a7c"
		dbSecret = "db-hunter2-7e55"
	)
	dsn := newTestDatabase(t)
	detail := map[string]string{
		"text": `detail="query.year: value is not a valid integer; query.rating: field required"`,
		"json": `"detail":[{"loc":["query","year"],"msg":"value is not a valid integer","type":"type_error.integer"},{"loc":["query","rating"]`,
	}
	for format, want := range detail {
		env := testEnv(t, dsn, "MYAPI_LOG_FORMAT", format)
		email := "ada-" + format + "@example.com"
		createUser(t, env, "Ada", email, password)
		app := startApp(t, env)
		token := app.token(t, email, password)
		app.login(t, email, wrong)
		app.login(t, "nobody@example.com", wrong)
		app.do(t, "POST", "/token", formHeader, strings.NewReader("username=x&password="+password+"&grant_type=bad"))
		app.do(t, "GET", "/movies/?movie_id=1", bearer(token), nil)
		app.do(t, "GET", "/movies/?movie_id=1", bearer(token+"x"), nil)
		app.do(t, "GET", "/movies/?movie_id=1&access_token="+token, nil, nil)
		app.do(t, "GET", "/movies/?movie_id=1", http.Header{"Authorization": {"Basic " + password}}, nil)
		app.do(t, "GET", "/movies/new?year=soon", bearer(token), nil)
		app.stop()
		logs := app.logs.String()
		if !strings.Contains(logs, "login failed") || !strings.Contains(logs, want) {
			t.Errorf("%s log lacks the failed login or %s:\n%s", format, want, logs)
		}
		for _, s := range []string{password, wrong, testTokenKey, token, strings.Split(token, ".")[2]} {
			if strings.Contains(logs, s) {
				t.Errorf("%s log shows %q:\n%s", format, s, logs)
			}
		}
	}

	for _, bad := range []string{
		"postgres://app:" + dbSecret + "@127.0.0.1:1/app?connect_timeout=1",
		"postgres://app:" + dbSecret + "@[::1/app",
		"host=127.0.0.1 port=1 password=" + dbSecret + " connect_timeout=1",
		"host=127.0.0.1 port=1 password='" + dbSecret + " connect_timeout=1",
	} {
		stdout, stderr, err := runCmd(t, testEnv(t, bad), "", "serve")
		if err == nil || strings.Contains(err.Error()+stdout+stderr, dbSecret) {
			t.Errorf("serve on a bad DSN: %v, and the DSN's password must not show:\n%s", err, stderr)
		}
	}
}

// TestPoolConnections checks that serve opens its whole pool before it
// listens.
func TestPoolConnections(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	startApp(t, testEnv(t, dsn, "MYAPI_DB_MAX_CONNS", "5"))
	db := openTestDB(t, dsn) // opens 4 of its own
	var n int
	err := db.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'").Scan(&n)
	if err != nil || n != 5+4 {
		t.Errorf("%d connections to the database, %v; want serve's 5 and the test's 4", n, err)
	}

}

// TestBusyPoolAnswers503 holds the pool's only connection: a request must
// wait for it no longer than the query timeout, then get 503, and the
// next request after the connection is back must succeed.
func TestBusyPoolAnswers503(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db, err := openDB(t.Context(), dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := serveHandler(t, newHandler(testDeps(newLogger(io.Discard, "text"), db)))
	auth := signedBearer(t, db, "ada@example.com")

	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	app.do(t, "GET", "/movies/?movie_id=1", auth, nil).expect(t, 503, `{"detail":"Service unavailable"}`)
	if d := time.Since(start); d < queryTimeout/2 || d > queryTimeout+time.Second {
		t.Errorf("answered after %v, want about the query timeout, %v", d, queryTimeout)
	}
	conn.Close()
	app.do(t, "GET", "/movies/?movie_id=1", auth, nil).expect(t, 404, `{"detail":"Movie not found"}`)
}

// TestQueriesShareOneTimeout slows both of a request's queries: the user
// lookup waits 2 s for a lock, the movie query for good. The request must
// still be answered 503 within the one query timeout, not 2 s + 3 s, and
// the timeout logged as the database's fault.
func TestQueriesShareOneTimeout(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db := openTestDB(t, dsn)
	var logs syncBuffer
	app := serveHandler(t, newHandler(testDeps(newLogger(&logs, "text"), db)))
	auth := signedBearer(t, db, "ada@example.com")
	users := lockTables(t, dsn, "ACCESS EXCLUSIVE", "myapi.users")
	lockTables(t, dsn, "ACCESS EXCLUSIVE", "myapi.movies")
	time.AfterFunc(2*time.Second, func() { users.Rollback() })

	start := time.Now()
	app.do(t, "GET", "/movies/?movie_id=1", auth, nil).expect(t, 503, `{"detail":"Service unavailable"}`)
	if d := time.Since(start); d > queryTimeout+time.Second {
		t.Errorf("answered after %v, want within the query timeout, %v", d, queryTimeout)
	}
	if got := logs.String(); !strings.Contains(got, "level=ERROR msg=\"database unavailable\"") {
		t.Errorf("log after the timeout:\n%s", got)
	}
}

// TestClientGoneIsNotADatabaseFault cancels a request while its query
// waits for a lock: the log must say the client went away, not that the
// database failed, or every impatient client would page an operator.
func TestClientGoneIsNotADatabaseFault(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	var logs syncBuffer
	db := openTestDB(t, dsn)
	h := newHandler(testDeps(newLogger(&logs, "text"), db))
	auth := signedBearer(t, db, "ada@example.com")
	lockTables(t, dsn, "ACCESS EXCLUSIVE", "myapi.movies")

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	r := httptest.NewRequestWithContext(ctx, "GET", "/movies/?movie_id=1", nil)
	r.Header = auth
	h.ServeHTTP(httptest.NewRecorder(), r)
	if got := logs.String(); !strings.Contains(got, `level=WARN msg="query canceled: client went away"`) || strings.Contains(got, "database unavailable") {
		t.Errorf("log after the client left:\n%s", got)
	}
}

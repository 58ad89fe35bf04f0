package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
)

func TestRequestLogAndRequestID(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t), "MYAPI_LOG_FORMAT", "json")
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)
	token := app.token(t, "ada@example.com", "correct horse")

	h := bearer(token)
	h.Set("X-Request-ID", "trace-42_a.b")
	res := app.do(t, "GET", "/movies/?movie_id=7&secret=x", h, nil)
	if got := res.header.Get("X-Request-ID"); got != "trace-42_a.b" {
		t.Errorf("X-Request-ID = %q, want the client's", got)
	}
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
	if line == nil {
		t.Fatalf("no request line with the client's id in:\n%s", app.logs)
	}
	want := map[string]any{"method": "GET", "path": "/movies/", "status": 404.0, "user": "ada@example.com", "detail": "Movie not found"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v", k, line[k], v)
		}
	}
	if line["bytes"] != float64(len(`{"detail":"Movie not found"}`)) || line["duration"] == nil {
		t.Errorf("log line %v lacks bytes or duration", line)
	}
	if strings.Contains(app.logs.String(), "secret=x") {
		t.Error("the log shows the query string")
	}
}

// TestValidationDetailInLogs checks that a 422's list reads as a sentence
// in text logs and stays FastAPI's list in JSON logs.
func TestValidationDetailInLogs(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	for _, format := range []string{"text", "json"} {
		app := startApp(t, testEnv(t, dsn, "MYAPI_LOG_FORMAT", format))
		app.do(t, "GET", "/movies/new?year=soon", bearer(app.token(t, "ada@example.com", "correct horse")), nil)
		want := `detail="query.year: value is not a valid integer; query.rating: field required"`
		if format == "json" {
			want = `"detail":[{"loc":["query","year"],"msg":"value is not a valid integer","type":"type_error.integer"},{"loc":["query","rating"]`
		}
		if !strings.Contains(app.logs.String(), want) {
			t.Errorf("%s log lacks %s:\n%s", format, want, app.logs)
		}
	}
}

func TestPanicIsA500AndTheServerGoesOn(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, "fine") })
	srv := httptest.NewServer(withMiddleware(newLogger(logs, "text"), mux))
	defer srv.Close()
	app := &testApp{url: srv.URL, client: srv.Client()}

	res := app.do(t, "GET", "/panic", http.Header{"X-Request-Id": {"req-1"}}, nil)
	res.expect(t, 500, `{"detail":"Internal Server Error"}`)
	app.do(t, "GET", "/ok", nil, nil).expect(t, 200, `"fine"`)
	log := logs.String()
	if !strings.Contains(log, "panic=boom") || !strings.Contains(log, "server_test.go") || !strings.Contains(log, "request_id=req-1") {
		t.Errorf("the log lacks the panic, its stack or its request id:\n%s", log)
	}
}

func TestHTTPServerLimits(t *testing.T) {
	t.Parallel()
	srv := newHTTPServer(http.NotFoundHandler(), newLogger(io.Discard, "text"))
	if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 || srv.MaxHeaderBytes != maxHeaderBytes {
		t.Fatalf("a limit is unset: %+v", srv)
	}
}

// startLimitedServer serves the real handler stack through newHTTPServer,
// with the header timeout cut short so that the test need not wait long.
func startLimitedServer(t *testing.T, headerTimeout time.Duration) string {
	t.Helper()
	srv := newHTTPServer(withMiddleware(newLogger(io.Discard, "text"), handleHealthz()), newLogger(io.Discard, "text"))
	srv.ReadHeaderTimeout = headerTimeout
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	conn, err := net.Dial("tcp", startLimitedServer(t, timeout))
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
		if time.Since(start) > 10*timeout {
			t.Fatal("the server still reads a client that sends a byte every 10ms")
		}
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

func TestOversizedHeaderIs431(t *testing.T) {
	t.Parallel()
	conn, err := net.Dial("tcp", startLimitedServer(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2*maxHeaderBytes) + "\r\n\r\n"))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", res.StatusCode)
	}
}

// TestLogsHoldNoSecrets sends the traffic that carries secrets (logins,
// failed logins, good and bad tokens, a bad DSN at start) and checks that
// no log line or error shows one.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		password = "pw-correct-horse-93f1"
		wrong    = "pw-wrong-horse-5a7c"
		dbSecret = "db-hunter2-7e55"
	)
	dsn := newTestDatabase(t)
	var seen strings.Builder
	for _, format := range []string{"text", "json"} {
		env := testEnv(t, dsn, "MYAPI_LOG_FORMAT", format)
		createUser(t, env, "Ada", "ada-"+format+"@example.com", password)
		app := startApp(t, env)
		token := app.token(t, "ada-"+format+"@example.com", password)
		app.login(t, "ada-"+format+"@example.com", wrong)
		app.login(t, "nobody@example.com", wrong)
		app.do(t, "POST", "/token", formHeader, strings.NewReader("username=x&password="+password+"&grant_type=bad"))
		app.do(t, "GET", "/movies/?movie_id=1", bearer(token), nil)
		app.do(t, "GET", "/movies/?movie_id=1", bearer(token+"x"), nil)
		app.do(t, "GET", "/movies/?movie_id=1&access_token="+token, nil, nil)
		app.do(t, "GET", "/movies/?movie_id=1", http.Header{"Authorization": {"Basic " + password}}, nil)
		app.stop()
		seen.WriteString(app.logs.String())
		for _, s := range []string{password, wrong, testTokenKey, token, strings.Split(token, ".")[2]} {
			if strings.Contains(app.logs.String(), s) {
				t.Errorf("%s log shows %q:\n%s", format, s, app.logs)
			}
		}
	}
	if !strings.Contains(seen.String(), "login failed") {
		t.Fatalf("the logs did not record the traffic:\n%s", seen.String())
	}

	for _, bad := range []string{
		"postgres://app:" + dbSecret + "@127.0.0.1:1/app?connect_timeout=1",
		"postgres://app:" + dbSecret + "@[::1/app",
		"host=127.0.0.1 port=1 password=" + dbSecret + " connect_timeout=1",
		"host=127.0.0.1 port=1 password='" + dbSecret + " connect_timeout=1",
	} {
		logs := &syncBuffer{}
		err := run(t.Context(), []string{"serve"}, testEnv(t, bad), nil, io.Discard, logs)
		if err == nil {
			t.Fatalf("serve started on %q", bad)
		}
		if strings.Contains(err.Error()+logs.String(), dbSecret) {
			t.Errorf("the DSN's password shows: %v\n%s", err, logs)
		}
	}
}

// TestBusyPoolAnswers503 holds the pool's only connection: a request must
// wait for it no longer than the query timeout, then get 503, and the
// next request after the connection is back must succeed.
// TestPoolIsOpenBeforeServing checks that serve opens its whole pool
// before it listens, and that the connections stay open while idle.
func TestPoolIsOpenBeforeServing(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	startApp(t, testEnv(t, dsn, "MYAPI_DB_MAX_CONNS", "5"))
	db := openTestDB(t, dsn) // opens 4 of its own
	var n int
	err := db.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5+4 {
		t.Errorf("%d connections to the database, want serve's 5 and the test's 4", n)
	}
}

// TestConnectionsRetire checks that a connection past its lifetime is
// replaced before it is used again.
func TestConnectionsRetire(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
	pid := func() (pid int) {
		if err := db.QueryRow("SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	db.SetMaxOpenConns(1)
	first := pid()
	if pid() != first {
		t.Fatal("a connection was replaced before its time")
	}
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Raw(func(c any) error {
		c.(*stdlib.Conn).Conn().PgConn().CustomData()["retireAt"] = time.Now().Add(-time.Second)
		return nil
	})
	conn.Close()
	if pid() == first {
		t.Error("a connection past its lifetime was used again")
	}
}

func TestBusyPoolAnswers503(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	db, err := openDB(t.Context(), dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := []byte(testTokenKey)
	srv := httptest.NewServer(newHandler(testDeps(newLogger(io.Discard, "text"), db)))
	defer srv.Close()
	app := &testApp{url: srv.URL, client: srv.Client()}
	auth := bearer(signToken(key, accountClaims(t, db, "ada@example.com")))

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
	dsn := newTestDatabase(t)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	db := openTestDB(t, dsn)
	key := []byte(testTokenKey)
	var logs syncBuffer
	h := newHandler(testDeps(newLogger(&logs, "text"), db))
	token := signToken(key, accountClaims(t, db, "ada@example.com"))

	lock := func(table string) *sql.Tx {
		tx, err := openTestDB(t, dsn).Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec("LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	users, movies := lock("myapi.users"), lock("myapi.movies")
	defer movies.Rollback()
	time.AfterFunc(2*time.Second, func() { users.Rollback() })

	start := time.Now()
	r := httptest.NewRequest("GET", "/movies/?movie_id=1", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 503 || w.Body.String() != `{"detail":"Service unavailable"}` {
		t.Errorf("got %d %s, want 503", w.Code, w.Body)
	}
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
	dsn := newTestDatabase(t)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	var logs syncBuffer
	key := []byte(testTokenKey)
	db := openTestDB(t, dsn)
	h := newHandler(testDeps(newLogger(&logs, "text"), db))
	token := signToken(key, accountClaims(t, db, "ada@example.com"))

	tx, err := openTestDB(t, dsn).Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("LOCK TABLE myapi.movies IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	r := httptest.NewRequestWithContext(ctx, "GET", "/movies/?movie_id=1", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	h.ServeHTTP(httptest.NewRecorder(), r)
	if got := logs.String(); !strings.Contains(got, `level=WARN msg="query canceled: client went away"`) || strings.Contains(got, "database unavailable") {
		t.Errorf("log after the client left:\n%s", got)
	}
}

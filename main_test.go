package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests run against a real PostgreSQL: MYAPI_TEST_DATABASE_URL when it
// is set, else a throwaway cluster started with localdb.go's code. Each
// test gets its own database, copied from a migrated template.

const testTokenKey = "test-key-0123456789-0123456789-0123456789"

var testServer struct {
	admin    *sql.DB                // connected to the maintenance database
	dsnFor   func(db string) string // DSN for a database on the test server
	template string
	seq      atomic.Int64
}

func TestMain(m *testing.M) {
	if os.Getenv("MYAPI_TEST_AS_MAIN") == "1" {
		// startProcess runs this binary as the real program.
		main()
		os.Exit(0)
	}
	code, err := testMain(m)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nmyapi tests need PostgreSQL and could not get it:\n  %v\n"+
			"Install the server binaries (apt-get install postgresql, or brew install postgresql),\n"+
			"or set MYAPI_TEST_DATABASE_URL to a server where this user may CREATE DATABASE.\n\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func testMain(m *testing.M) (int, error) {
	ctx := context.Background()
	baseDSN := os.Getenv("MYAPI_TEST_DATABASE_URL")
	if baseDSN == "" {
		dir, err := os.MkdirTemp("", "myapi-test-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		cluster, err := startLocalDB(ctx, dir, testClusterSettings...)
		if err != nil {
			return 0, err
		}
		defer killCluster(cluster)
		baseDSN = cluster.DSN("postgres")
	}
	testServer.dsnFor = func(db string) string { return dsnWithDatabase(baseDSN, db) }

	admin, err := openDB(ctx, baseDSN, 4)
	if err != nil {
		return 0, err
	}
	defer admin.Close()
	testServer.admin = admin

	// A unique name lets several test runs share one server.
	testServer.template = fmt.Sprintf("myapi_template_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(testServer.template)); err != nil {
		return 0, fmt.Errorf("create template database: %w", err)
	}
	defer admin.Exec("DROP DATABASE IF EXISTS " + quoteIdent(testServer.template) + " WITH (FORCE)")
	tdb, err := openDB(ctx, testServer.dsnFor(testServer.template), 1)
	if err != nil {
		return 0, err
	}
	err = migrate(ctx, tdb, false)
	tdb.Close()
	if err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// killCluster stops a cluster at once, whoever started it, as when
// PostgreSQL goes away under the server.
func killCluster(db *localDB) error {
	return db.pgctl(context.Background(), "stop", "-m", "immediate")
}

// testClusterSettings trade durability, which a throwaway cluster does not
// need, for speed.
var testClusterSettings = []string{"fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200"}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// dsnWithDatabase returns dsn naming database db instead.
func dsnWithDatabase(dsn, db string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		return u.String()
	}
	return dsn + " dbname=" + db // a later keyword wins
}

// newTestDatabase creates a migrated, empty database for one test and
// returns its DSN.
func newTestDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d", testServer.template, testServer.seq.Add(1))
	mustExec(t, testServer.admin, "CREATE DATABASE "+quoteIdent(name)+" TEMPLATE "+quoteIdent(testServer.template))
	t.Cleanup(func() {
		if _, err := testServer.admin.Exec("DROP DATABASE " + quoteIdent(name) + " WITH (FORCE)"); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	return testServer.dsnFor(name)
}

// openTestDB opens a pool on dsn, closed when the test ends.
func openTestDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := openDB(context.Background(), dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testEnv is a getenv for run: a test environment on dsn, with overrides.
func testEnv(t testing.TB, dsn string, overrides ...string) func(string) string {
	vars := processEnv(t, dsn, overrides...)
	return func(k string) string { return vars[k] }
}

// processEnv is the environment of a test on database dsn, with overrides
// as name, value pairs.
func processEnv(t testing.TB, dsn string, overrides ...string) map[string]string {
	vars := map[string]string{
		"MYAPI_ENV": "test", "MYAPI_DATABASE__TEST": dsn, "MYAPI_TOKEN_KEY": testTokenKey,
		"MYAPI_ADDR": "127.0.0.1:0", "MYAPI_DOTENV": "testdata/no.env", "MYAPI_DIR": t.TempDir(),
		"MYAPI_BCRYPT_COST": "4", // bcrypt.MinCost: the cost is in each hash, so checks still work
	}
	for i := 0; i+1 < len(overrides); i += 2 {
		vars[overrides[i]] = overrides[i+1]
	}
	return vars
}

// databaseWithAda is a test database holding the user Ada, whose password
// is "correct horse", and the environment to serve it.
func databaseWithAda(t testing.TB) (dsn string, env func(string) string) {
	t.Helper()
	dsn = newTestDatabase(t)
	env = testEnv(t, dsn)
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	return dsn, env
}

// syncBuffer is a bytes.Buffer that the server's goroutines may write to
// while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

// testApp is myapi serving in-process through run.
type testApp struct {
	url    string      // http://127.0.0.1:port
	logs   *syncBuffer // everything the server logged
	stop   func() error
	client *http.Client
}

// startApp runs "myapi serve" in-process and waits until it answers
// /healthz. It is stopped, and must exit cleanly, when the test ends.
func startApp(t testing.TB, getenv func(string) string) *testApp {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"serve"}, getenv, strings.NewReader(""), pw, logs)
		pw.CloseWithError(fmt.Errorf("serve returned: %v", err))
		done <- err
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("serve did not start: %v\nlogs:\n%s", err, logs)
	}
	go io.Copy(io.Discard, pr)
	app := &testApp{
		url:    strings.TrimSpace(strings.TrimPrefix(line, "myapi listening on ")),
		logs:   logs,
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
	app.stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() {
		if err := app.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("the server's log:\n%s", logs)
		}
	})
	if res := app.do(t, "GET", "/healthz", nil, nil); res.status != 200 {
		t.Fatalf("/healthz = %d", res.status)
	}
	return app
}

// response is a finished HTTP response.
type response struct {
	status int
	header http.Header
	body   string
}

// do sends a request to the app; body, if any, is sent as is.
func (a *testApp) do(t testing.TB, method, path string, header http.Header, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, a.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	res, err := a.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

// expect checks a response's status and exact body.
func (r response) expect(t testing.TB, status int, body string) {
	t.Helper()
	if r.status != status || r.body != body {
		t.Errorf("got %d %s\nwant %d %s", r.status, r.body, status, body)
	}
}

// expectHeader checks a response's header k.
func (r response) expectHeader(t testing.TB, k, want string) {
	t.Helper()
	if got := r.header.Get(k); got != want {
		t.Errorf("%s = %q, want %q", k, got, want)
	}
}

// decodeJSON decodes a response body into v.
func decodeJSON(t testing.TB, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
}

func mustRequest(t testing.TB, method, url string, h http.Header) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	return req
}

// runCmd runs a myapi command with stdin and returns what it printed.
func runCmd(t testing.TB, env func(string) string, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, env, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

// createUser runs the create-user command against getenv's database.
func createUser(t testing.TB, getenv func(string) string, name, email, password string) {
	t.Helper()
	if _, stderr, err := runCmd(t, getenv, "", "create-user", "-name", name, "-email", email, "-password", password); err != nil {
		t.Fatalf("create-user: %v\n%s", err, stderr)
	}
}

var formHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}

// login posts the password grant and returns the response.
func (a *testApp) login(t testing.TB, email, password string) response {
	t.Helper()
	form := url.Values{"username": {email}, "password": {password}}
	return a.do(t, "POST", "/token", formHeader, strings.NewReader(form.Encode()))
}

// token logs in and returns the access token.
func (a *testApp) token(t testing.TB, email, password string) string {
	t.Helper()
	res := a.login(t, email, password)
	var body tokenResponse
	decodeJSON(t, res.body, &body)
	if res.status != 200 || body.AccessToken == "" {
		t.Fatalf("login %s: %d %s", email, res.status, res.body)
	}
	return body.AccessToken
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// accountClaims are claims for a token signed by hand for the user with
// email in db, carrying their security stamp.
func accountClaims(t testing.TB, db *sql.DB, email string) tokenClaims {
	t.Helper()
	var stamp sql.NullString
	if err := db.QueryRow("SELECT security_stamp FROM myapi.users WHERE email = $1", email).Scan(&stamp); err != nil {
		t.Fatalf("stamp of %s: %v", email, err)
	}
	now := time.Now()
	return tokenClaims{Sub: email, Stamp: stamp.String, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
}

// signedBearer is an Authorization header with a token signed by hand
// for the user with email in db.
func signedBearer(t testing.TB, db *sql.DB, email string) http.Header {
	t.Helper()
	return bearer(signToken([]byte(testTokenKey), accountClaims(t, db, email)))
}

// newTestHandler is the real handler stack on a test database with a
// clock the test controls.
func newTestHandler(t testing.TB, dsn string, now func() time.Time) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(newHandler(testDepsAt(t, dsn, now)))
	t.Cleanup(srv.Close)
	return srv
}

// testDepsAt are testDeps on the database dsn, with the clock now.
func testDepsAt(t testing.TB, dsn string, now func() time.Time) deps {
	d := testDeps(newLogger(io.Discard, "text"), openTestDB(t, dsn))
	d.now = now
	d.store = newStore(d.store.db, now)
	return d
}

// testDeps are the handler's dependencies on db, as serve makes them, with
// the test key and the cheapest bcrypt cost.
func testDeps(log *slog.Logger, db *sql.DB) deps {
	return deps{log: log, store: newStore(db, time.Now), keys: [][]byte{[]byte(testTokenKey)},
		tokenTTL: time.Hour, sessionTTL: 720 * time.Hour, sessionIdle: 168 * time.Hour, now: time.Now, bcrypt: newBcryptLimiter(4, 1)}
}

// serveHandler serves h until the test ends.
func serveHandler(t testing.TB, h http.Handler) *testApp {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testApp{url: srv.URL, client: srv.Client()}
}

// testClock is a clock that moves only when the test moves it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// execer is a pool or a transaction.
type execer interface {
	Exec(string, ...any) (sql.Result, error)
}

// mustExec runs a statement on db or fails the test.
func mustExec(t testing.TB, db execer, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// lockTables takes a lock in mode on tables, in a transaction of its own
// connection to dsn that lasts until the test rolls it back or ends.
func lockTables(t testing.TB, dsn, mode string, tables ...string) *sql.Tx {
	t.Helper()
	tx, err := openTestDB(t, dsn).Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	for _, table := range tables {
		mustExec(t, tx, "LOCK TABLE "+table+" IN "+mode+" MODE")
	}
	return tx
}

func TestServeOperationalRoutes(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	const notFound = `{"detail":"Not Found"}`
	cases := []struct {
		method, path string
		status       int
		body         string
		header       map[string]string
	}{
		{"GET", "/healthz", 200, `{"status":"ok"}`, map[string]string{"Content-Type": "application/json"}},
		{"GET", "/readyz", 200, `{"status":"ok"}`, nil},
		{"HEAD", "/healthz", 200, ``, nil},
		{"GET", "/no/such/path", 404, notFound, map[string]string{"Content-Type": "application/json"}},
		{"POST", "/healthz", 405, `{"detail":"Method Not Allowed"}`, map[string]string{"Allow": "GET, HEAD"}},
		{"DELETE", "/token", 405, `{"detail":"Method Not Allowed"}`, map[string]string{"Allow": "POST"}},
		{"GET", "/movies/new/?year=1&rating=2", 307, ``, map[string]string{"Location": "/movies/new?year=1&rating=2"}},
		{"POST", "/token/", 307, ``, map[string]string{"Location": "/token"}},
		{"GET", "/healthz/", 307, ``, map[string]string{"Location": "/healthz"}},
		// ServeMux would redirect these to the clean path; the original has no route.
		{"GET", "/movies//?movie_id=1", 404, notFound, map[string]string{"Content-Type": "application/json"}},
		{"GET", "//healthz", 404, notFound, nil},
		{"GET", "/token/../healthz", 404, notFound, nil},
		{"GET", "/./healthz", 404, notFound, nil},
		// Escaped paths route as their decoded form, as in the original.
		{"GET", "/%68ealthz", 200, `{"status":"ok"}`, nil},
		{"GET", "/movies%2Fnew?year=1&rating=2", 401, `{"detail":"Invalid token"}`, map[string]string{"WWW-Authenticate": "Bearer"}},
		{"GET", "/movies%2F?movie_id=1", 401, `{"detail":"Invalid token"}`, nil},
		{"POST", "/token%2F", 307, ``, map[string]string{"Location": "/token"}},
		{"GET", "/movies%2F..%2Fhealthz", 404, notFound, nil},
	}
	for _, c := range cases {
		res := app.do(t, c.method, c.path, nil, nil)
		res.expect(t, c.status, c.body)
		for k, v := range c.header {
			if got := res.header.Get(k); got != v {
				t.Errorf("%s %s: %s = %q, want %q", c.method, c.path, k, got, v)
			}
		}
		if got := res.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: X-Content-Type-Options = %q", c.method, c.path, got)
		}
	}
	// Request targets that are no path: the same JSON 404.
	for _, target := range []string{"OPTIONS *", "GET *", "CONNECT x:1"} {
		res := rawExchange(t, strings.TrimPrefix(app.url, "http://"), target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false)
		res.expect(t, 404, notFound)
		res.expectHeader(t, "X-Content-Type-Options", "nosniff")
	}
}

func TestReadyzFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	// A cluster of its own, since this test stops it under the server;
	// durable, since it stops it the hard way.
	cluster, err := startLocalDB(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killCluster(cluster) })
	env := testEnv(t, cluster.DSN(localDBName))
	if _, _, err := runCmd(t, env, "", "migrate"); err != nil {
		t.Fatal(err)
	}
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)
	app.do(t, "GET", "/readyz", nil, nil).expect(t, 200, `{"status":"ok"}`)
	auth := bearer(app.token(t, "ada@example.com", "correct horse"))

	if err := killCluster(cluster); err != nil {
		t.Fatal(err)
	}
	unavailable := `{"detail":"Service unavailable"}`
	app.do(t, "GET", "/readyz", nil, nil).expect(t, 503, unavailable)
	app.do(t, "GET", "/movies/?movie_id=1", auth, nil).expect(t, 503, unavailable)
	app.login(t, "ada@example.com", "correct horse").expect(t, 503, unavailable)
	app.do(t, "GET", "/healthz", nil, nil).expect(t, 200, `{"status":"ok"}`)

	if _, err := startLocalDB(context.Background(), cluster.dir); err != nil {
		t.Fatal(err)
	}
	// The pool may hold connections the restart broke; it drops each
	// as it fails, so readiness returns within a few tries.
	for deadline := time.Now().Add(10 * time.Second); app.do(t, "GET", "/readyz", nil, nil).status != 200; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still fails 10s after the database came back")
		}
	}
	app.do(t, "GET", "/movies/?movie_id=1", auth, nil).expect(t, 404, `{"detail":"Movie not found"}`)
	if strings.Contains(app.logs.String(), "password") {
		t.Errorf("a log line mentions a password:\n%s", app.logs)
	}
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	getenv := func(string) string { return "" }
	for _, args := range [][]string{nil, {"frobnicate"}, {"serve", "-nope"}, {"migrate", "extra"}, {"create-user", "-name", "x"}} {
		if _, stderr, err := runCmd(t, getenv, "", args...); !errors.Is(err, errUsage) || stderr == "" {
			t.Errorf("run %q = %v, stderr %q; want errUsage and the usage", args, err, stderr)
		}
	}
	for _, arg := range []string{"help", "-h"} {
		if stdout, _, err := runCmd(t, getenv, "", arg); err != nil || !strings.Contains(stdout, "create-user") {
			t.Errorf("run %s = %v, printed %q; want the usage", arg, err, stdout)
		}
	}
	// A command's -h comes before the configuration, which here is bad.
	prod := testEnv(t, "", "MYAPI_ENV", "prod", "MYAPI_TOKEN_KEY", "")
	for _, cmd := range []string{"serve", "create-user", "set-password", "migrate"} {
		if _, stderr, err := runCmd(t, prod, "", cmd, "-h"); err != nil || !strings.Contains(stderr, "Usage of "+cmd) {
			t.Errorf("%s -h = %v, stderr %q; want its usage", cmd, err, stderr)
		}
	}
}

func TestServeRefusesMissingProductionSettings(t *testing.T) {
	t.Parallel()
	env := testEnv(t, "", "MYAPI_ENV", "prod", "MYAPI_TOKEN_KEY", "", "MYAPI_TOKEN_KEY_PREVIOUS", "short-secret-value")
	stdout, stderr, err := runCmd(t, env, "", "serve")
	if err == nil {
		t.Fatal("serve started without a database or key")
	}
	// One line per problem, in order.
	want := regexp.MustCompile(`^MYAPI_DATABASE__PROD is required.*\nMYAPI_TOKEN_KEY is required.*\nMYAPI_TOKEN_KEY_PREVIOUS: key 1 is too short.*$`)
	if !want.MatchString(err.Error()) {
		t.Errorf("got the problems\n%v\nwant them to match %s", err, want)
	}
	if strings.Contains(err.Error()+stdout+stderr, "short-secret-value") {
		t.Error("the error shows a secret")
	}
}

// TestMigrate runs migrate four times at once while a transaction writes
// to every table: a migration with nothing to do takes no lock that
// waits. Then the command, twice in each environment: outside dev it
// loads no movies; in dev the eight samples, idempotently too.
func TestMigrate(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	db := openTestDB(t, dsn)
	write := lockTables(t, dsn, "ROW EXCLUSIVE", "myapi.users", "myapi.movies", "myapi.login_failures")
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := migrate(context.Background(), db, false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > migrateLockTimeout/2 {
		t.Errorf("migrate took %v beside a write", d)
	}
	write.Rollback()
	for _, c := range []struct{ env, want string }{{"test", "0 movies, movie 6 NULL"}, {"dev", "8 movies, movie 6 'Schindler''s List'"}} {
		for range 2 {
			if _, stderr, err := runCmd(t, testEnv(t, dsn, "MYAPI_ENV", c.env, "MYAPI_DATABASE__DEV", dsn), "", "migrate"); err != nil {
				t.Fatalf("migrate: %v\n%s", err, stderr)
			}
		}
		var got string
		err := db.QueryRow("SELECT format('%s movies, movie 6 %L', count(*), max(title) FILTER (WHERE movie_id = 6)) FROM myapi.movies").Scan(&got)
		if err != nil || got != c.want {
			t.Errorf("MYAPI_ENV=%s: %s, %v; want %s", c.env, got, err, c.want)
		}
	}
}

// process is myapi running as a real process: this test binary, which
// runs main when MYAPI_TEST_AS_MAIN is set.
type process struct {
	cmd    *exec.Cmd
	url    string
	stderr *syncBuffer
	exited chan error
}

// startProcess runs "myapi serve" as a child process with the variables
// vars and waits until it listens.
func startProcess(t *testing.T, vars map[string]string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve")
	cmd.Env = []string{"MYAPI_TEST_AS_MAIN=1", "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.exited })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("myapi did not start: %v\n%s", err, p.stderr)
	}
	p.url = strings.TrimSpace(strings.TrimPrefix(line, "myapi listening on "))
	return p
}

func TestSIGTERMLetsInFlightRequestsFinish(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	// A slow hash makes a login that is surely in flight when the signal
	// comes.
	createUser(t, testEnv(t, dsn, "MYAPI_BCRYPT_COST", "10"), "Ada", "ada@example.com", "correct horse")
	seedMovies(t, openTestDB(t, dsn))
	p := startProcess(t, processEnv(t, dsn, "MYAPI_SHUTDOWN_TIMEOUT", "20s"))
	app := &testApp{url: p.url, client: &http.Client{}}
	auth := bearer(app.token(t, "ada@example.com", "correct horse"))

	// Clients loop until the server stops taking requests. Every
	// response that started must arrive whole.
	var wg sync.WaitGroup
	var completed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				res, err := app.client.Do(mustRequest(t, "GET", p.url+"/movies/?movie_id=1", auth))
				if err != nil {
					return // refused: the server has stopped accepting
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || string(body) != shawshank {
					t.Errorf("a response was cut off: %d %q %v", res.StatusCode, body, err)
					return
				}
				completed.Add(1)
			}
		})
	}
	login := make(chan response, 1)
	go func() { login <- app.login(t, "ada@example.com", "correct horse") }()
	time.Sleep(30 * time.Millisecond) // the login is now hashing (75ms at cost 10, more under -race)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if res := <-login; res.status != 200 {
		t.Errorf("the in-flight login got %d %s", res.status, res.body)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("exit: %v\n%s", err, p.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("myapi did not exit after SIGTERM")
	}
	wg.Wait()
	if completed.Load() == 0 {
		t.Error("no request completed")
	}
	if _, err := http.Get(p.url + "/healthz"); err == nil {
		t.Error("still accepting after exit")
	}
	p.exited <- nil // for the cleanup
	if !strings.Contains(p.stderr.String(), "stopped") {
		t.Errorf("no clean stop in the log:\n%s", p.stderr)
	}
}

// sampleApp serves a fresh database with samples.sql (see seedMovies) and
// the user Ada, and returns it with her bearer token.
func sampleApp(t *testing.T) (*testApp, http.Header) {
	t.Helper()
	dsn, env := databaseWithAda(t)
	seedMovies(t, openTestDB(t, dsn))
	app := startApp(t, env)
	return app, bearer(app.token(t, "ada@example.com", "correct horse"))
}

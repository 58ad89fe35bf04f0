package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgbouncer in transaction mode runs each transaction on whichever server
// connection is free. pgx's default statement cache names the statements
// it prepares and expects to find them again on its connection; behind the
// pooler the name is missing there, or already taken by another client's.
// default_query_exec_mode=exec sends each query with an unnamed statement
// in one round trip, so nothing outlives the query.
func TestBehindPgbouncer(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	seedMovies(t, openTestDB(t, dsn))
	bouncer := startPgbouncer(t, dsn)

	// A pool of 16 over pgbouncer's 4 server connections: they are shared.
	env := testEnv(t, bouncer+"&default_query_exec_mode=exec", "MYAPI_DB_MAX_CONNS", "16")
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env) // migrates through pgbouncer too
	auth := bearer(app.token(t, "ada@example.com", "correct horse"))
	if failed := loadThrough(t, app, auth); failed != 0 {
		t.Errorf("%d requests failed through pgbouncer with default_query_exec_mode=exec", failed)
	}
	if logs := app.logs.String(); strings.Contains(logs, "level=ERROR") || strings.Contains(logs, "level=WARN") {
		t.Errorf("errors logged:\n%s", logs)
	}

	// The same load without the parameter: the statement cache collides.
	plain := startApp(t, testEnv(t, bouncer, "MYAPI_DB_MAX_CONNS", "16"))
	if failed := loadThrough(t, plain, auth); failed == 0 {
		t.Error("no request failed without default_query_exec_mode=exec: this test no longer shows what it is for")
	} else if !strings.Contains(plain.logs.String(), "stmtcache_") {
		t.Errorf("%d requests failed, not for the statement cache:\n%s", failed, plain.logs)
	}
}

// loadThrough sends 16 clients × 50 GETs and 4 logins at once, and
// returns how many were not answered 200.
func loadThrough(t *testing.T, app *testApp, auth http.Header) int64 {
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 16 {
		wg.Go(func() {
			for j := range 50 {
				path := []string{"/movies/?movie_id=1", "/movies/new?year=1990&rating=8"}[(i+j)%2]
				res, err := app.client.Do(mustRequest(t, "GET", app.url+path, auth))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					failed.Add(1)
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			if app.login(t, "ada@example.com", "correct horse").status != 200 {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	return failed.Load()
}

// startPgbouncer runs pgbouncer in transaction mode in front of the
// database of dsn, on a free port, and returns a DSN that reaches the
// database through it.
func startPgbouncer(t *testing.T, dsn string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/pgbouncer")
	}
	if err != nil {
		t.Fatal("pgbouncer is not on PATH or at /usr/sbin/pgbouncer: install it (apt-get install pgbouncer, or brew install pgbouncer)")
	}
	cfg, err := pgconn.ParseConfig(dsn)
	port, err2 := freePort()
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	ini := fmt.Sprintf("[databases]\nmyapi = host=%s port=%d dbname=%s user=%s password=%s\n\n"+
		"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"+
		"auth_type = any\npool_mode = transaction\ndefault_pool_size = 4\n",
		q(cfg.Host), cfg.Port, q(cfg.Database), q(cfg.User), q(cfg.Password), port)
	// From 1.21 pgbouncer can track prepared statements itself; keep that
	// off to test the setting that needs default_query_exec_mode=exec.
	out, _ := exec.Command(bin, "--version").Output()
	var major, minor int
	if fmt.Sscanf(string(out), "PgBouncer %d.%d", &major, &minor); major > 1 || minor >= 21 {
		ini += "max_prepared_statements = 0\n"
	}
	path := filepath.Join(t.TempDir(), "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, path)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if os.Geteuid() == 0 {
		// pgbouncer refuses to run as root; run it as the cluster's user,
		// who can reach the cluster's socket.
		cred, err := serverUser(filepath.Dir(path))
		if err == nil {
			err = os.Chown(path, int(cred.Uid), int(cred.Gid))
		}
		if err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "postgres://myapi@" + addr + "/myapi?sslmode=disable"
		}
		select {
		case <-exited:
			t.Fatalf("pgbouncer exited:\n%s", logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer did not listen on %s:\n%s", addr, logs)
		}
	}
}

// TestQueryAllNoDataFound: a set-returning function raises no_data_found
// for a missing parent row, which queryAll returns as errNotFound (404);
// a parent without rows is [] (README: Adding a new service).
func TestQueryAllNoDataFound(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
	mustExec(t, db, `CREATE FUNCTION children(parent int) RETURNS SETOF int LANGUAGE plpgsql STABLE AS $$
		BEGIN IF parent <> 1 THEN RAISE no_data_found; END IF; END $$`)
	scan := func(n *int) []any { return []any{n} }
	if rows, err := queryAll(t.Context(), db, "SELECT * FROM children($1)", []any{1}, scan); err != nil || rows == nil || len(rows) != 0 {
		t.Errorf("a parent without rows: %v, %v; want []", rows, err)
	}
	if _, err := queryAll(t.Context(), db, "SELECT * FROM children($1)", []any{2}, scan); !errors.Is(err, errNotFound) {
		t.Errorf("a missing parent: %v, want errNotFound", err)
	}
}

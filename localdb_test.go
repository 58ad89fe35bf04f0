package main

import (
	"errors"
	"io/fs"
	"os"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestDevServeStartsAndStopsItsCluster runs serve the way a fresh clone
// does, in dev with no database URL: it must create its own cluster, stop
// it when it stops, and reuse the cluster on the next start.
func TestDevServeStartsAndStopsItsCluster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := testEnv(t, "", "MYAPI_ENV", "dev", "MYAPI_DIR", dir, "MYAPI_TOKEN_KEY", "")
	pidfile := filepath.Join(dir, "pgdata", "postmaster.pid")
	for start := range 2 {
		app := startApp(t, env)
		app.do(t, "GET", "/readyz", nil, nil).expect(t, 200, `{"status":"ok"}`)
		if _, err := os.Stat(pidfile); err != nil {
			t.Fatalf("start %d: the cluster does not run: %v", start+1, err)
		}
		if err := app.stop(); err != nil {
			t.Fatalf("start %d: serve: %v", start+1, err)
		}
		if _, err := os.Stat(pidfile); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("start %d: the cluster still runs after serve stopped (%v)", start+1, err)
		}
	}
}

// TestLocalDBConcurrentStarts starts one cluster from two goroutines at once:
// the lock must let one make and start it and the other reuse it, and only
// the one that started it may stop it. The cluster is where its socket's path
// would be too long for the kernel: it listens on 127.0.0.1 instead, behind
// its password, and the start that reuses it finds the port it chose.
func TestLocalDBConcurrentStarts(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", maxSocketPath))
	var dbs [2]*localDB
	var errs [2]error
	var wg sync.WaitGroup
	for i := range dbs {
		wg.Go(func() { dbs[i], errs[i] = startLocalDB(t.Context(), dir, testClusterSettings...) })
	}
	wg.Wait()
	for _, db := range dbs {
		if db != nil {
			t.Cleanup(func() { db.Stop() }) // a no-op unless it started the cluster
		}
	}
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("start: %v; %v", errs[0], errs[1])
	}
	owner, other := dbs[0], dbs[1]
	if other.started {
		owner, other = other, owner
	}
	if !owner.started || other.started || owner.host != "127.0.0.1" || owner.DSN(localDBName) != other.DSN(localDBName) {
		t.Fatalf("started = %v and %v, DSNs %s and %s; want one start of one cluster on 127.0.0.1",
			owner.started, other.started, owner.DSN(localDBName), other.DSN(localDBName))
	}
	db, err := openDB(t.Context(), other.DSN(localDBName), 1)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	other.pass = "wrong"
	if db, err := openDB(t.Context(), other.DSN(localDBName), 1); err == nil {
		db.Close()
		t.Error("127.0.0.1 let a wrong password in")
	}
	pidfile := filepath.Join(dir, "pgdata", "postmaster.pid")
	if err := other.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pidfile); err != nil {
		t.Fatalf("the cluster stopped when the start that reused it stopped: %v", err)
	}
	if err := owner.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pidfile); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the cluster still runs after the start that started it stopped (%v)", err)
	}
	// pg_ctl's errors name its mode and end with the last line it printed.
	err = owner.pgctl(t.Context(), "stop")
	if err == nil || !strings.HasPrefix(err.Error(), "pg_ctl stop: exit status 1: ") || !strings.HasSuffix(err.Error(), "Is server running?") {
		t.Errorf("stopping a stopped cluster: %v", err)
	}
}

func TestPgVersion(t *testing.T) {
	t.Parallel()
	for bindir, want := range map[string]int{
		"/usr/lib/postgresql/9/bin":           9,
		"/usr/lib/postgresql/17/bin":          17,
		"/opt/homebrew/opt/postgresql@16/bin": 16,
		"/usr/local/opt/postgresql/bin":       0,
	} {
		if got := pgVersion(bindir); got != want {
			t.Errorf("pgVersion(%s) = %d, want %d", bindir, got, want)
		}
	}
}

// TestServerUser picks postgres, or else nobody, and gives search permission
// to the directory and each parent that lacks it, keeping every other bit.
func TestServerUser(t *testing.T) {
	t.Parallel()
	parent := filepath.Join(t.TempDir(), "parent")
	dir := filepath.Join(parent, "dir")
	if err := errors.Join(os.MkdirAll(dir, 0o700), os.Chmod(parent, 0o750|fs.ModeSetgid)); err != nil {
		t.Fatal(err)
	}
	cred, err := serverUser(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, err := osuser.Lookup("postgres")
	if err != nil {
		u, err = osuser.Lookup("nobody")
	}
	if err != nil || strconv.FormatUint(uint64(cred.Uid), 10) != u.Uid || strconv.FormatUint(uint64(cred.Gid), 10) != u.Gid {
		t.Errorf("serverUser = %+v, want %+v (%v)", cred, u, err)
	}
	for path, want := range map[string]fs.FileMode{dir: 0o701, parent: 0o751 | fs.ModeSetgid} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() &^ fs.ModeDir; got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
}

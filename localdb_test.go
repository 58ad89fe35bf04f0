package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

// TestLocalDBFallsBackToTCP puts the cluster where its socket's path would
// be too long for the kernel: it must listen on 127.0.0.1 instead.
func TestLocalDBFallsBackToTCP(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", maxSocketPath))
	cluster, err := startLocalDB(t.Context(), dir, testClusterOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	if dsn := cluster.DSN("postgres"); !strings.Contains(dsn, "host=127.0.0.1") {
		t.Errorf("the DSN does not use 127.0.0.1: host=%s", cluster.host)
	}
	db, err := openDB(t.Context(), cluster.DSN("postgres"), 1)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
}

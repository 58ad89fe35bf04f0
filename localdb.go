package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

const (
	localDBUser   = "myapi"
	localDBName   = "myapi"
	maxSocketPath = 103 // sun_path is 104 bytes on macOS, 108 on Linux
)

// localDB is the dev database, and the tests': a private cluster made from
// the installed server binaries. Its dir holds the start-up lock, the
// superuser's password and, owned by the server's user, pgdata/ and pgrun/.
type localDB struct {
	bindir, dir, dataDir, runDir string
	runAs                        *syscall.Credential // nil unless we are root
	host                         string              // socket directory or 127.0.0.1
	port                         int
	pass                         string // the superuser's
	started                      bool   // this process started it, so it stops it
}

// startLocalDB starts the cluster under dir, made on first use, or reuses it
// when it runs, and waits until it accepts connections. settings are extra
// "name=value" server settings (the tests turn durability off).
func startLocalDB(ctx context.Context, dir string, settings ...string) (*localDB, error) {
	bindir, err := findPostgres()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// One process at a time runs initdb and pg_ctl start; closing the file unlocks.
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock local database: %w", err)
	}
	db := &localDB{bindir: bindir, dir: dir, dataDir: filepath.Join(dir, "pgdata"), runDir: filepath.Join(dir, "pgrun")}
	if err := db.initdb(ctx); err != nil {
		return nil, err
	}
	if err := db.start(ctx, settings); err != nil {
		db.Stop() // if it got as far as starting the server
		return nil, err
	}
	return db, nil
}

// DSN is the connection string for database name on this cluster.
func (db *localDB) DSN(name string) string {
	q := url.Values{"host": {db.host}, "port": {strconv.Itoa(db.port)}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.UserPassword(localDBUser, db.pass), Path: "/" + name, RawQuery: q.Encode()}).String()
}

// Stop stops the cluster if this process started it.
func (db *localDB) Stop() error {
	if !db.started {
		return nil
	}
	db.started = false
	return db.pgctl(context.Background(), "stop", "-m", "fast")
}

// findPostgres returns the directory of the PostgreSQL server binaries:
// pg_config's, one on the PATH, else the newest Debian or Homebrew one.
func findPostgres() (string, error) {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = slices.Insert(dirs, 0, strings.TrimSpace(string(out)))
	}
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin", "/opt/homebrew/opt/postgresql*/bin", "/usr/local/opt/postgresql*/bin"} {
		found, _ := filepath.Glob(pattern)
		slices.SortFunc(found, func(a, b string) int { return pgVersion(b) - pgVersion(a) })
		dirs = append(dirs, found...)
	}
	for _, d := range dirs {
		if filepath.IsAbs(d) && isExecutable(d, "initdb") && isExecutable(d, "pg_ctl") && isExecutable(d, "postgres") {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries found: install them (apt-get install postgresql, or brew install postgresql) or set MYAPI_DATABASE__DEV to a PostgreSQL URL")
}

// pgVersion reads N out of /usr/lib/postgresql/N/bin or .../postgresql@N/bin.
func pgVersion(bindir string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(filepath.Dir(bindir)), "postgresql@"))
	return n
}

func isExecutable(dir, name string) bool {
	fi, err := os.Stat(filepath.Join(dir, name))
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// serverUser picks the account the server runs as when we are root, postgres
// or else nobody, and gives dir and its parents search permission for it.
func serverUser(dir string) (*syscall.Credential, error) {
	u, err := osuser.Lookup("postgres")
	if err != nil {
		u, err = osuser.Lookup("nobody")
	}
	if err != nil {
		return nil, errors.New("running as root, and there is no postgres or nobody user to run the local PostgreSQL as")
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s: uid %q or gid %q is not a number", u.Username, u.Uid, u.Gid)
	}
	for d, child := dir, ""; d != child; d, child = filepath.Dir(d), d { // up to the root
		fi, err := os.Stat(d)
		if err == nil && fi.Mode()&0o001 == 0 {
			err = os.Chmod(d, fi.Mode()|0o001) // keeps setgid and sticky bits
		}
		if err != nil {
			return nil, fmt.Errorf("let the database user traverse %s: %w", d, err)
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// initdb makes the cluster on first use, and its superuser's password. The
// cluster trusts its own unix socket, which only its owner can reach; the
// password guards the 127.0.0.1 fallback, which every local user can reach.
func (db *localDB) initdb(ctx context.Context) error {
	pwfile := filepath.Join(db.dir, "pg_password")
	pass, err := readOrCreateSecret(pwfile, 1)
	if err != nil {
		return fmt.Errorf("local database password: %w", err)
	}
	db.pass = string(pass)
	if err := errors.Join(os.MkdirAll(db.dataDir, 0o700), os.MkdirAll(db.runDir, 0o700)); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		// initdb refuses root, and rightly: the server would have every privilege.
		if db.runAs, err = serverUser(db.dir); err != nil {
			return err
		}
		for _, p := range []string{db.dataDir, db.runDir, pwfile} {
			if err := os.Chown(p, int(db.runAs.Uid), int(db.runAs.Gid)); err != nil {
				return fmt.Errorf("hand %s to the database user: %w", p, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(db.dataDir, "PG_VERSION")); !errors.Is(err, os.ErrNotExist) {
		return nil // made already
	}
	return db.run(ctx, "initdb", "-D", db.dataDir, "-U", localDBUser, "--pwfile", pwfile,
		"-E", "UTF8", "--locale", "C", "--auth-local", "trust", "--auth-host", "scram-sha-256")
}

// start runs pg_ctl start unless the cluster runs, reads where it listens
// from postmaster.pid (lines 4 to 6), and creates localDBName if need be.
func (db *localDB) start(ctx context.Context, extra []string) error {
	if db.pgctl(ctx, "status") != nil {
		// A unix socket in pgrun/ only; if its path is too long for the kernel, a
		// free 127.0.0.1 port and no socket, which PostgreSQL would fail to make.
		settings := []string{"unix_socket_directories='" + db.runDir + "'", "unix_socket_permissions=0700", "listen_addresses=''", "port=5432"}
		if len(db.runDir)+len("/.s.PGSQL.5432") > maxSocketPath {
			port, err := freePort()
			if err != nil {
				return err
			}
			settings = []string{"unix_socket_directories=''", "listen_addresses='127.0.0.1'", "port=" + strconv.Itoa(port)}
		}
		if err := db.pgctl(ctx, "start", "-w", "-l", filepath.Join(db.runDir, "postgres.log"),
			"-o", "-c "+strings.Join(append(settings, extra...), " -c ")); err != nil {
			return err
		}
		db.started = true
	}
	b, err := os.ReadFile(filepath.Join(db.dataDir, "postmaster.pid"))
	lines := strings.Split(string(b), "\n")
	if err != nil || len(lines) < 6 {
		return errors.Join(errors.New("local database: no address in postmaster.pid"), err)
	}
	db.host = cmp.Or(strings.TrimSpace(lines[5]), strings.TrimSpace(lines[4]))
	if db.port, err = strconv.Atoi(strings.TrimSpace(lines[3])); err != nil {
		return fmt.Errorf("local database: postmaster.pid: %w", err)
	}
	conn, err := openDB(ctx, db.DSN("postgres"), 1)
	if err != nil {
		return fmt.Errorf("local database: %w", err)
	}
	defer conn.Close()
	var exists bool
	err = conn.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", localDBName).Scan(&exists)
	if err == nil && !exists {
		_, err = conn.ExecContext(ctx, "CREATE DATABASE "+localDBName)
	}
	return err
}

func (db *localDB) pgctl(ctx context.Context, mode string, args ...string) error {
	return db.run(ctx, "pg_ctl", append([]string{mode, "-D", db.dataDir}, args...)...)
}

// run runs a PostgreSQL binary as the server's user; its error ends with
// the last line the binary printed.
func (db *localDB) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(db.bindir, name), args...)
	cmd.Dir = db.runDir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: db.runAs} // nil: as ourselves
	if out, err := cmd.CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return fmt.Errorf("%s %s: %w: %s", name, args[0], err, lines[len(lines)-1])
	}
	return nil
}

// freePort asks the kernel for an unused TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

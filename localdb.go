package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The local dev database: a private PostgreSQL cluster under .myapi/, made
// from the server binaries installed on the machine, so that a fresh clone
// serves with nothing else set up. The test suite uses the same code for its
// throwaway cluster.
//
// Layout of dir:
//
//	pgdata/        the cluster (owned by the server's user)
//	pgrun/         its unix socket and log (owned by the server's user)
//	pg_password    the superuser's password, for the 127.0.0.1 fallback
//	lock           serialises start-up between processes
const (
	localDBUser    = "myapi"
	localDBName    = "myapi"
	maxSocketPath  = 103 // sun_path is 104 bytes on macOS, 108 on Linux
	localDBTimeout = 60  // seconds pg_ctl waits for start or stop
)

var errNoPostgres = errors.New("no PostgreSQL server binaries found: install them (apt-get install postgresql, or brew install postgresql) or set MYAPI_DATABASE__DEV to a PostgreSQL URL")

// localDB is a running local cluster.
type localDB struct {
	bindir  string
	dir     string
	runAs   *syscall.Credential // nil unless we are root
	host    string              // socket directory or 127.0.0.1
	port    int
	started bool // this process started it, so it stops it
	pass    string
}

// localDBOptions tune a cluster; tests turn durability off for speed.
type localDBOptions struct {
	settings []string // extra "name=value" server settings
}

// startLocalDB starts the cluster under dir (creating it on first use), or
// reuses it when it is already running, and waits until it accepts
// connections.
func startLocalDB(ctx context.Context, dir string, opts localDBOptions) (*localDB, error) {
	bindir, err := findPostgres()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	db := &localDB{bindir: bindir, dir: dir}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root, and rightly: the server would
		// run with every privilege. Run it as an unprivileged user.
		if db.runAs, err = unprivilegedUser(); err != nil {
			return nil, err
		}
		if err := makeTraversable(dir); err != nil {
			return nil, err
		}
	}
	if db.pass, err = db.password(); err != nil {
		return nil, err
	}
	if err := db.ensureDirs(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(db.dataDir(), "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := db.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if err := db.start(ctx, opts); err != nil {
		return nil, err
	}
	return db, db.createDatabase(ctx, localDBName)
}

func (db *localDB) dataDir() string { return filepath.Join(db.dir, "pgdata") }
func (db *localDB) runDir() string  { return filepath.Join(db.dir, "pgrun") }

// DSN is the connection string for database name on this cluster.
func (db *localDB) DSN(name string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(localDBUser, db.pass),
		Path:     "/" + name,
		RawQuery: url.Values{"host": {db.host}, "port": {strconv.Itoa(db.port)}, "sslmode": {"disable"}}.Encode(),
	}
	return u.String()
}

// Stop stops the cluster if this process started it.
func (db *localDB) Stop() error {
	if !db.started {
		return nil
	}
	db.started = false
	ctx, cancel := context.WithTimeout(context.Background(), localDBTimeout*time.Second)
	defer cancel()
	return db.pgctl(ctx, "stop", "-m", "fast")
}

// findPostgres returns the directory of the PostgreSQL server binaries.
func findPostgres() (string, error) {
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versions, func(i, j int) bool { return pgVersion(versions[i]) > pgVersion(versions[j]) })
	dirs = append(dirs, versions...)
	brew, _ := filepath.Glob("/opt/homebrew/opt/postgresql@*/bin")
	dirs = append(dirs, "/opt/homebrew/bin", "/usr/local/bin", "/usr/local/opt/postgresql/bin")
	dirs = append(dirs, brew...)
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "pg_ctl")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errNoPostgres
}

// pgVersion reads the major version out of /usr/lib/postgresql/N/bin.
func pgVersion(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// unprivilegedUser picks the account the server runs as when we are root.
func unprivilegedUser() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := osuser.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
		}
	}
	return nil, errors.New("running as root, and there is no postgres or nobody user to run the local PostgreSQL as")
}

// makeTraversable lets the server's user reach dir by adding search (not
// read) permission to each of its parents that lacks it.
func makeTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("let the database user traverse %s: %w", d, err)
			}
		}
		if parent := filepath.Dir(d); parent == d {
			return nil
		}
	}
}

// password returns the superuser's password, generated on first use. The
// cluster trusts its own unix socket, which only its owner can reach; the
// password guards the 127.0.0.1 fallback, which every local user can reach.
func (db *localDB) password() (string, error) {
	path := filepath.Join(db.dir, "pg_password")
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return string(b), nil
	}
	pass := rand.Text()
	if err := os.WriteFile(path, []byte(pass), 0o600); err != nil {
		return "", fmt.Errorf("write local database password: %w", err)
	}
	return pass, nil
}

func (db *localDB) ensureDirs() error {
	for _, d := range []string{db.dataDir(), db.runDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if db.runAs != nil {
			if err := os.Chown(d, int(db.runAs.Uid), int(db.runAs.Gid)); err != nil {
				return fmt.Errorf("hand %s to the database user: %w", d, err)
			}
		}
	}
	return nil
}

func (db *localDB) initdb(ctx context.Context) error {
	pwfile := filepath.Join(db.runDir(), "initdb_pw")
	if err := db.writeOwned(pwfile, db.pass); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	return db.command(ctx, "initdb", "-D", db.dataDir(), "-U", localDBUser, "--pwfile", pwfile,
		"-E", "UTF8", "--locale", "C", "--auth-local", "trust", "--auth-host", "scram-sha-256").run()
}

// start runs pg_ctl start unless the cluster already runs, then learns
// where it listens from postmaster.pid.
func (db *localDB) start(ctx context.Context, opts localDBOptions) error {
	if db.pgctl(ctx, "status") != nil {
		if err := db.pgctl(ctx, "start", "-w", "-t", strconv.Itoa(localDBTimeout),
			"-l", filepath.Join(db.runDir(), "postgres.log"), "-o", db.serverOptions(opts)); err != nil {
			return err
		}
		db.started = true
	}
	return db.readPostmasterPid()
}

// serverOptions listen on a unix socket in pgrun/ only, or on a free
// 127.0.0.1 port when the socket's path would be too long for the kernel.
func (db *localDB) serverOptions(opts localDBOptions) string {
	var settings []string
	if len(db.runDir())+len("/.s.PGSQL.5432") <= maxSocketPath {
		settings = []string{"unix_socket_directories='" + db.runDir() + "'", "unix_socket_permissions=0700",
			"listen_addresses=''", "port=5432"}
	} else {
		// No socket at all: PostgreSQL refuses to start when it cannot make one.
		settings = []string{"unix_socket_directories=''", "listen_addresses='127.0.0.1'", "port=" + strconv.Itoa(freePort())}
	}
	settings = append(settings, opts.settings...)
	var b strings.Builder
	for _, s := range settings {
		fmt.Fprintf(&b, " -c %s", s)
	}
	return strings.TrimSpace(b.String())
}

// freePort asks the kernel for an unused TCP port on 127.0.0.1.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 5432
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// readPostmasterPid reads the port (line 4), socket directory (line 5) and
// listen address (line 6) of the running server.
func (db *localDB) readPostmasterPid() error {
	b, err := os.ReadFile(filepath.Join(db.dataDir(), "postmaster.pid"))
	if err != nil {
		return fmt.Errorf("local database: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 6 {
		return errors.New("local database: postmaster.pid is incomplete")
	}
	if db.port, err = strconv.Atoi(strings.TrimSpace(lines[3])); err != nil {
		return fmt.Errorf("local database: bad port in postmaster.pid: %w", err)
	}
	db.host = strings.TrimSpace(lines[4])
	if addr := strings.TrimSpace(lines[5]); addr != "" {
		db.host = addr
	}
	return nil
}

// createDatabase creates database name on first use, connecting through
// psql-free SQL over the maintenance database.
func (db *localDB) createDatabase(ctx context.Context, name string) error {
	conn, err := openDB(ctx, db.DSN("postgres"), 1)
	if err != nil {
		return fmt.Errorf("local database: %w", err)
	}
	defer conn.Close()
	var exists bool
	if err := conn.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("local database: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(name)); err != nil {
		return fmt.Errorf("local database: create %s: %w", name, err)
	}
	return nil
}

// pgctl runs pg_ctl mode with args on the cluster. The mode goes first,
// so that an error names it.
func (db *localDB) pgctl(ctx context.Context, mode string, args ...string) error {
	return db.command(ctx, "pg_ctl", append([]string{mode, "-D", db.dataDir()}, args...)...).run()
}

// pgCommand is a PostgreSQL binary run as the server's user.
type pgCommand struct{ cmd *exec.Cmd }

func (db *localDB) command(ctx context.Context, name string, args ...string) pgCommand {
	cmd := exec.CommandContext(ctx, filepath.Join(db.bindir, name), args...)
	cmd.Dir = db.runDir()
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if db.runAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: db.runAs}
	}
	return pgCommand{cmd}
}

// run runs the command and turns a failure into one error carrying the
// last line the tool printed.
func (c pgCommand) run() error {
	var out bytes.Buffer
	c.cmd.Stdout, c.cmd.Stderr = &out, &out
	if err := c.cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(c.cmd.Path), c.cmd.Args[1], err, msg)
	}
	return nil
}

// writeOwned writes a 0600 file that the server's user can read.
func (db *localDB) writeOwned(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if db.runAs != nil {
		return os.Chown(path, int(db.runAs.Uid), int(db.runAs.Gid))
	}
	return nil
}

// lockFile takes an exclusive lock on path, so that two processes starting
// at once do not both run initdb or pg_ctl start.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock local database: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock local database: %w", err)
	}
	return func() { f.Close() }, nil
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

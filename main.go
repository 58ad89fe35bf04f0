// Command myapi serves a movies catalogue as a JSON API, with OAuth2
// password login and JWT bearer tokens, on PostgreSQL. It is a Go port of a
// FastAPI tutorial service, and keeps that service's HTTP contract.
//
// A request flows through the handler that newHandler builds:
//
//	logRequests → recoverPanics → secureHeaders → decodedPaths → http.ServeMux
//	  POST /token          handleToken: form → login throttle → bcrypt → signToken
//	  GET  /movies/...     requireUser: Bearer → verifyToken → user lookup
//	                       → handleGetMovie / handleNewMovies → store → JSON
//
// README.md lists the files and what each owns.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// errUsage means the command line was wrong; the usage has been printed.
var errUsage = errors.New("usage error")

const usage = `myapi serves a movies catalogue as a JSON API.

Usage:
  myapi serve                                         listen on MYAPI_ADDR
  myapi create-user -name NAME -email EMAIL -password PW
  myapi create-user -name NAME -email EMAIL -password-stdin < pw.txt
  myapi list-users [-json]                            id, name, email; never a hash
  myapi set-password -email EMAIL (-password PW | -password-stdin)
  myapi delete-user -email EMAIL                      their tokens stop working
  myapi unblock (-email EMAIL | -client ADDRESS)      clear login failures
  myapi migrate                                       apply schema.sql and exit
  myapi help                                          this text

Configuration comes from the environment and ./.env; see README.md.
`

// run is the whole program: main only adds the process's signals,
// environment and exit status, so tests can run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, args, getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args, getenv, stdout, stderr)
	case "create-user":
		return runCreateUser(ctx, args, getenv, stdin, stdout, stderr)
	case "list-users":
		return runListUsers(ctx, args, getenv, stdout, stderr)
	case "set-password":
		return runSetPassword(ctx, args, getenv, stdin, stdout, stderr)
	case "delete-user":
		return runDeleteUser(ctx, args, getenv, stdout, stderr)
	case "unblock":
		return runUnblock(ctx, args, getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "myapi: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}

// parseFlags parses a subcommand's flags; a subcommand takes no arguments.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if err := parseFlags(flag.NewFlagSet("migrate", flag.ContinueOnError), args, stderr); err != nil {
		return err
	}
	_, _, closeDB, err := openStore(ctx, "migrate", getenv, stderr)
	if err != nil {
		return err
	}
	closeDB()
	fmt.Fprintln(stdout, "migrate: schema is up to date")
	return nil
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if err := parseFlags(flag.NewFlagSet("serve", flag.ContinueOnError), args, stderr); err != nil {
		return err
	}
	s, cfg, closeDB, err := openStore(ctx, "serve", getenv, stderr)
	if err != nil {
		return err
	}
	defer closeDB()
	keys, err := signingKeys(cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}

	log := newLogger(stderr, cfg.LogFormat)
	handler := newHandler(deps{
		log: log, store: s, keys: keys, tokenTTL: cfg.TokenTTL, now: time.Now,
		bcrypt: newBcryptLimiter(cfg.BcryptCost, shareCores(getenv)), trusted: cfg.TrustedProxies,
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(stdout, "myapi listening on http://%s\n", ln.Addr())
	log.Info("serving", "addr", ln.Addr().String(), "env", cfg.Env)
	return serveUntilDone(ctx, newHTTPServer(handler, log), ln, cfg.ShutdownTimeout, log)
}

// serveUntilDone serves on ln until ctx is cancelled, then shuts down
// gracefully: no new connections, and in-flight requests get up to
// timeout to finish.
func serveUntilDone(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", timeout.String())
	// A fresh context: ctx is already cancelled, and shutting down with
	// it would cut every in-flight request off at once.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	log.Info("stopped")
	return nil
}

// signingKeys returns the token keys, current first, taking the dev key
// from the state directory when none is configured.
func signingKeys(cfg config) ([][]byte, error) {
	key := cfg.TokenKey
	if key == nil {
		var err error
		if key, err = devTokenKey(cfg.Dir); err != nil {
			return nil, err
		}
	}
	return append([][]byte{key}, cfg.PreviousKeys...), nil
}

// openDatabase connects to the configured database, or in dev with none
// configured to the local cluster, started if need be. closeDB closes the
// pool and stops the cluster if this call started it.
func openDatabase(ctx context.Context, cfg config, log *slog.Logger) (db *sql.DB, closeDB func(), err error) {
	dsn := cfg.DatabaseURL
	var local *localDB
	if dsn == "" {
		if local, err = startLocalDB(ctx, cfg.Dir, localDBOptions{}); err != nil {
			return nil, nil, err
		}
		dsn = local.DSN(localDBName)
		log.Info("using the local dev database", "dir", cfg.Dir, "started", local.started)
	}
	stopLocal := func() {
		if local == nil {
			return
		}
		if err := local.Stop(); err != nil {
			log.Error("stop the local dev database", "error", err.Error())
		}
	}
	if db, err = openDB(ctx, dsn, cfg.DBMaxConns); err != nil {
		stopLocal()
		return nil, nil, err
	}
	return db, func() { db.Close(); stopLocal() }, nil
}

// newLogger logs to w as text or JSON lines, adding each request's id.
func newLogger(w io.Writer, format string) *slog.Logger {
	var h slog.Handler = slog.NewTextHandler(w, nil)
	if format == "json" {
		h = slog.NewJSONHandler(w, nil)
	}
	return slog.New(requestIDHandler{h})
}

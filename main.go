// Command myapi serves a movies catalogue as a JSON API, with OAuth2
// password login and JWT bearer tokens, on PostgreSQL: a Go port of a FastAPI
// tutorial service that keeps its HTTP contract.
//
// A request flows through the handler that newHandler builds:
//
//	logRequests → recoverPanics → secureHeaders → decodedPaths → http.ServeMux
//	  POST /token          handleToken: form → login throttle → bcrypt → signToken
//	  GET  /movies/...     requireUser: Bearer → verifyToken → account (stamp)
//	                       → handleGetMovie / handleNewMovies → store → JSON
//
// README.md lists the files and what each owns.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	// A bcrypt comparison holds its P for the quarter second it computes,
	// and serve runs one per two cores: half as many Ps again as cores
	// keep the cheap requests one per core while logins run
	// (docs/performance.md). Unless the operator chose GOMAXPROCS.
	if os.Getenv("GOMAXPROCS") == "" {
		cores := runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(cores + max(1, cores/2))
	}
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
  myapi create-user -name NAME -email EMAIL (-password PW | -password-stdin)
  myapi list-users [-json]                            id, name, email; never a hash
  myapi set-password -email EMAIL (-password PW | -password-stdin)
  myapi delete-user -email EMAIL                      their tokens stop working
  myapi unblock (-email EMAIL | -client ADDRESS)      clear login failures
  myapi migrate                                       apply schema.sql and exit
  myapi help                                          this text

Configuration comes from the environment and ./.env; see README.md.
`

// run is the whole program: main only adds the process's signals,
// environment and exit status, so tests can run it in-process. It loads
// the configuration, then runs the command with it.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	if h := args[0]; h == "help" || h == "-h" || h == "-help" || h == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	commands := map[string]func(ctx context.Context, cfg config, args []string, stdin io.Reader, stdout, stderr io.Writer) error{
		"serve": runServe, "migrate": runMigrate, "create-user": runCreateUser, "list-users": runListUsers,
		"set-password": runSetPassword, "delete-user": runDeleteUser, "unblock": runUnblock,
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "myapi: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	return cmd(ctx, cfg, args[1:], stdin, stdout, stderr)
}

// parseFlags parses a command's flags; those named in required must not be
// empty, and there must be no arguments.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, required ...string) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		return usageError(fs, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	for _, name := range required {
		if fs.Lookup(name).Value.String() == "" {
			return usageError(fs, "-"+name+" is required")
		}
	}
	return nil
}

// usageError prints a command's problem and usage, and returns errUsage.
func usageError(fs *flag.FlagSet, problem string) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), problem)
	fs.Usage()
	return errUsage
}

func runMigrate(ctx context.Context, cfg config, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if err := parseFlags(flag.NewFlagSet("migrate", flag.ContinueOnError), args, stderr); err != nil {
		return err
	}
	return withStore(ctx, "migrate", cfg, stderr, func(s *store) error {
		err := migrate(ctx, s.db, cfg.Env == "dev")
		if err == nil {
			fmt.Fprintln(stdout, "migrate: schema is up to date")
		}
		return err
	})
}

func runServe(ctx context.Context, cfg config, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if err := parseFlags(flag.NewFlagSet("serve", flag.ContinueOnError), args, stderr); err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogFormat)
	s, closeDB, err := openStore(ctx, "serve", cfg, log)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := migrate(ctx, s.db, cfg.Env == "dev"); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	key := cfg.TokenKey // nil in dev with none configured: cfg.Dir keeps one
	if key == nil {
		if key, err = devTokenKey(cfg.Dir); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	handler := newHandler(deps{
		log: log, store: s, keys: append([][]byte{key}, cfg.PreviousKeys...), tokenTTL: cfg.TokenTTL, now: time.Now,
		// A third of the Ps: the half of the cores that main added (see main).
		bcrypt: newBcryptLimiter(cfg.BcryptCost, runtime.GOMAXPROCS(0)/3), trusted: cfg.TrustedProxies,
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(stdout, "myapi listening on http://%s\n", ln.Addr())
	log.Info("serving", "addr", ln.Addr().String(), "env", cfg.Env)
	return serveUntilDone(ctx, newHTTPServer(handler, log), ln, cfg.ShutdownTimeout, log)
}

// serveUntilDone serves on ln until ctx is cancelled, then shuts down:
// no new connections, and in-flight requests get up to timeout to finish.
func serveUntilDone(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", timeout.String())
	// A fresh context: shutting down with ctx, already cancelled, would
	// cut every in-flight request off at once.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	log.Info("stopped")
	return nil
}

// openStore opens cfg's database for the command cmd: the configured one,
// or in dev with none configured the local cluster, started if need be.
// closeDB closes the pool, and stops the cluster if this call started it.
func openStore(ctx context.Context, cmd string, cfg config, log *slog.Logger) (s *store, closeDB func(), err error) {
	dsn, stopLocal := cfg.DatabaseURL, func() {}
	if dsn == "" {
		local, err := startLocalDB(ctx, cfg.Dir)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", cmd, err)
		}
		dsn = local.DSN(localDBName)
		log.Info("using the local dev database", "dir", cfg.Dir, "started", local.started)
		stopLocal = func() {
			if err := local.Stop(); err != nil {
				log.Error("stop the local dev database", "error", err.Error())
			}
		}
	}
	db, err := openDB(ctx, dsn, cfg.DBMaxConns)
	if err != nil {
		stopLocal()
		return nil, nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return newStore(db, time.Now), func() { db.Close(); stopLocal() }, nil
}

// newLogger logs to w as text or JSON lines, adding each request's id.
func newLogger(w io.Writer, format string) *slog.Logger {
	var h slog.Handler = slog.NewTextHandler(w, nil)
	if format == "json" {
		h = slog.NewJSONHandler(w, nil)
	}
	return slog.New(requestIDHandler{h})
}

// Command myapi serves a movies catalogue as a JSON API, with OAuth2
// password login and JWT bearer tokens, on PostgreSQL: a Go port of a FastAPI
// tutorial service that keeps its HTTP contract.
//
// A request flows through the handler that newHandler builds:
//
//	logRequests → recoverPanics → secureHeaders → decodedPaths → http.ServeMux
//	  POST /token          handleToken: form → login throttle → bcrypt → signToken
//	  GET  /movies/...     requireUser: Bearer → verifyToken → account, session
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
  myapi create-user -name NAME -email EMAIL (-password PW | -password-stdin)
  myapi list-users [-json]                            id, name, email; never a hash
  myapi set-password -email EMAIL (-password PW | -password-stdin)
  myapi delete-user -email EMAIL                      their tokens stop working
  myapi unblock (-email EMAIL | -client ADDRESS)      clear login failures
  myapi logout-everywhere -email EMAIL                end every session and token
  myapi migrate                                       apply schema.sql and exit
  myapi help                                          this text

Configuration comes from the environment and ./.env; see README.md.
`

// command runs one of myapi's commands with the arguments after its name.
type command func(ctx context.Context, args []string, env commandEnv) error

// run is the whole program: main only adds the process's signals,
// environment and exit status, so tests can run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	if h := args[0]; h == "help" || h == "-h" || h == "-help" || h == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	commands := map[string]command{
		"serve": runServe, "migrate": runMigrate, "create-user": runCreateUser, "list-users": runListUsers,
		"set-password": runSetPassword, "unblock": runUnblock,
		"delete-user":       accountCommand("delete-user", "deleted", (*store).deleteUser),
		"logout-everywhere": accountCommand("logout-everywhere", "ended every session and token of", (*store).logoutEverywhere),
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "myapi: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
	err := cmd(ctx, args[1:], commandEnv{getenv, stdin, stdout, stderr})
	if errors.Is(err, flag.ErrHelp) {
		return nil // the command's usage, asked for, is printed
	}
	return err
}

// runServe is the serve command: it migrates, then serves until ctx ends.
func runServe(ctx context.Context, args []string, env commandEnv) error {
	if err := parseFlags(newFlagSet("serve"), args, env.stderr); err != nil {
		return err
	}
	cfg, err := loadConfig(env.getenv)
	if err != nil {
		return err
	}
	log := newLogger(env.stderr, cfg.LogFormat)
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
		log: log, store: s, keys: append([][]byte{key}, cfg.PreviousKeys...), now: time.Now,
		tokenTTL: cfg.TokenTTL, sessionTTL: cfg.SessionTTL, sessionIdle: cfg.SessionIdle,
		bcrypt: newBcryptLimiter(cfg.BcryptCost, raiseProcsForBcrypt()), trusted: cfg.TrustedProxies,
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(env.stdout, "myapi listening on http://%s\n", ln.Addr())
	log.Info("serving", "addr", ln.Addr().String(), "env", cfg.Env)
	return serveUntilDone(ctx, newHTTPServer(handler, log), ln, cfg.ShutdownTimeout, log)
}

// serveUntilDone serves until ctx ends, then lets requests finish within timeout.
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

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The commands besides serve. Each parses its flags before withStore loads
// the configuration, so that -h prints its usage under any environment.

// commandEnv is what a command reads and writes besides its arguments.
type commandEnv struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
}

func newFlagSet(name string) *flag.FlagSet { return flag.NewFlagSet(name, flag.ContinueOnError) }

// parseFlags parses a command's flags; those named in required must not be
// empty, and there must be no arguments. After -h it returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, required ...string) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
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

// withStore loads the configuration, opens its database for the command cmd
// and runs f, whose error names cmd, or says to run migrate first.
func withStore(ctx context.Context, cmd string, env commandEnv, f func(*store, config) error) error {
	cfg, err := loadConfig(env.getenv)
	if err != nil {
		return err
	}
	s, closeDB, err := openStore(ctx, cmd, cfg, newLogger(env.stderr, cfg.LogFormat))
	if err != nil {
		return err
	}
	defer closeDB()
	err = f(s, cfg)
	if cmd != "migrate" && schemaMissing(err) {
		return fmt.Errorf("%s: the database's myapi schema is missing or out of date: run the migrate command first", cmd)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}

// noUser says that no user has email, for errNotFound.
func noUser(err error, email string) error {
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("no user with email %s", email)
	}
	return err
}

// waitOutCaches returns once every server's cache has forgotten what it
// read before the change just committed: then the change holds everywhere.
func waitOutCaches(ctx context.Context) error {
	select {
	case <-time.After(cacheTTL):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func runMigrate(ctx context.Context, args []string, env commandEnv) error {
	if err := parseFlags(newFlagSet("migrate"), args, env.stderr); err != nil {
		return err
	}
	return withStore(ctx, "migrate", env, func(s *store, cfg config) error {
		err := migrate(ctx, s.db, cfg.Env == "dev")
		if err == nil {
			fmt.Fprintln(env.stdout, "migrate: schema is up to date")
		}
		return err
	})
}

func runCreateUser(ctx context.Context, args []string, env commandEnv) error {
	fs := newFlagSet("create-user")
	name := fs.String("name", "", "the user's name")
	email := fs.String("email", "", "the user's email, their login")
	readPassword := passwordFlags(fs)
	if err := parseFlags(fs, args, env.stderr); err != nil {
		return err
	}
	password, err := readPassword(env.stdin)
	if err != nil {
		return err
	}
	if err := validateNewUser(*name, *email, password); err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	return withStore(ctx, "create-user", env, func(s *store, cfg config) error {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), cfg.BcryptCost)
		if err != nil {
			return err // only for a cost out of range, which config rules out
		}
		id, err := s.createUser(ctx, *name, *email, string(hash))
		if errors.Is(err, errDuplicate) {
			return fmt.Errorf("a user with email %s already exists", *email)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "create-user: created user %d, %s\n", id, *email)
		return nil
	})
}

// runListUsers prints a tab-separated line per user, or a JSON array.
func runListUsers(ctx context.Context, args []string, env commandEnv) error {
	fs := newFlagSet("list-users")
	asJSON := fs.Bool("json", false, "print a JSON array of objects with keys id, name and email")
	if err := parseFlags(fs, args, env.stderr); err != nil {
		return err
	}
	return withStore(ctx, "list-users", env, func(s *store, _ config) error {
		users, err := s.listUsers(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(env.stdout).Encode(users)
		}
		for _, u := range users {
			fmt.Fprintf(env.stdout, "%d\t%s\t%s\n", u.ID, fieldEscaper.Replace(u.Name), fieldEscaper.Replace(u.Email))
		}
		return nil
	})
}

// fieldEscaper keeps list-users' lines one user each, one field per tab.
var fieldEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

// runSetPassword sets a password, and a new security stamp, which revokes
// every token and session; the account's login failures are cleared.
func runSetPassword(ctx context.Context, args []string, env commandEnv) error {
	fs := newFlagSet("set-password")
	email := fs.String("email", "", "the user's email")
	readPassword := passwordFlags(fs)
	if err := parseFlags(fs, args, env.stderr, "email"); err != nil {
		return err
	}
	password, err := readPassword(env.stdin)
	if err != nil {
		return err
	}
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("set-password: %s: %w", *email, err)
	}
	return withStore(ctx, "set-password", env, func(s *store, cfg config) error {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), cfg.BcryptCost)
		if err == nil {
			err = errors.Join(noUser(s.renewStamp(ctx, *email, string(hash)), *email), s.clearFailures(ctx, accountKey(*email)))
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "set-password: changed the password of %s; older tokens are refused\n", *email)
		return waitOutCaches(ctx)
	})
}

// accountCommand is a command that makes change to the account -email
// names, says it did what done says, and waits until that holds everywhere.
func accountCommand(name, done string, change func(*store, context.Context, string) error) command {
	return func(ctx context.Context, args []string, env commandEnv) error {
		fs := newFlagSet(name)
		email := fs.String("email", "", "the account's email")
		if err := parseFlags(fs, args, env.stderr, "email"); err != nil {
			return err
		}
		return withStore(ctx, name, env, func(s *store, _ config) error {
			if err := noUser(change(s, ctx, *email), *email); err != nil {
				return err
			}
			fmt.Fprintf(env.stdout, "%s: %s %s\n", name, done, *email)
			return waitOutCaches(ctx)
		})
	}
}

// runUnblock clears the login failures of an account or a client address.
func runUnblock(ctx context.Context, args []string, env commandEnv) error {
	fs := newFlagSet("unblock")
	email := fs.String("email", "", "the account's email")
	client := fs.String("client", "", "the client's IP address (IPv6: its /64, which the throttle counts as one)")
	if err := parseFlags(fs, args, env.stderr); err != nil {
		return err
	}
	if (*email == "") == (*client == "") {
		return usageError(fs, "give exactly one of -email and -client")
	}
	key, who := accountKey(*email), "account "+*email
	if *client != "" {
		addr, err := netip.ParseAddr(*client)
		if err != nil {
			return usageError(fs, fmt.Sprintf("-client %q is not an IP address", *client))
		}
		key, who = clientKey(addr), "client "+*client
	}
	return withStore(ctx, "unblock", env, func(s *store, _ config) error {
		if err := s.clearFailures(ctx, key); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "unblock: cleared the login failures of %s\n", who)
		return waitOutCaches(ctx)
	})
}

// passwordFlags adds -password and -password-stdin to fs. After parsing,
// read returns -password's value, or stdin's first line without its ending.
func passwordFlags(fs *flag.FlagSet) (read func(stdin io.Reader) (string, error)) {
	value := fs.String("password", "", "the password (visible to other users of this machine: prefer -password-stdin)")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	return func(stdin io.Reader) (string, error) {
		if (*value == "") == !*fromStdin {
			return "", usageError(fs, "give exactly one of -password and -password-stdin")
		}
		if !*fromStdin {
			return *value, nil
		}
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("%s: read password from stdin: %w", fs.Name(), err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
}

// checkPassword checks a new password's length (auth.go says why).
func checkPassword(password string) error {
	if n := len(password); n < minPasswordBytes || n > maxPasswordBytes {
		return fmt.Errorf("the password must be %d to %d bytes long", minPasswordBytes, maxPasswordBytes)
	}
	return nil
}

// validateNewUser checks a new user's fields; the email is a bare address.
func validateNewUser(name, email, password string) error {
	var problems []string
	if strings.TrimSpace(name) == "" {
		problems = append(problems, "-name is required")
	} else if !isText(name) {
		problems = append(problems, "-name must be UTF-8 text without NUL bytes")
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Name != "" || a.Address != email {
		problems = append(problems, fmt.Sprintf("-email %q is not an email address", email))
	}
	if err := checkPassword(password); err != nil {
		problems = append(problems, err.Error())
	}
	if problems != nil {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

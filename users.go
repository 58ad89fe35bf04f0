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

// runCreateUser is the create-user command.
func runCreateUser(ctx context.Context, cfg config, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("create-user", flag.ContinueOnError)
	name := fs.String("name", "", "the user's name")
	email := fs.String("email", "", "the user's email, their login")
	readPassword := passwordFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	password, err := readPassword(stdin)
	if err != nil {
		return err
	}
	if err := validateNewUser(*name, *email, password); err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	return withStore(ctx, "create-user", cfg, stderr, func(s *store) error {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), cfg.BcryptCost)
		if err != nil {
			return fmt.Errorf("hash password: %w", err)
		}
		id, err := s.createUser(ctx, *name, *email, string(hash))
		if errors.Is(err, errDuplicate) {
			return fmt.Errorf("a user with email %s already exists", *email)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "create-user: created user %d, %s\n", id, *email)
		return nil
	})
}

// runListUsers is the list-users command: a line per user, its fields
// separated by tabs, or with -json a JSON array.
func runListUsers(ctx context.Context, cfg config, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("list-users", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print a JSON array of objects with keys id, name and email")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	return withStore(ctx, "list-users", cfg, stderr, func(s *store) error {
		accounts, err := s.listAccounts(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(accounts)
		}
		for _, a := range accounts {
			fmt.Fprintf(stdout, "%d\t%s\t%s\n", a.ID, fieldEscaper.Replace(a.Name), fieldEscaper.Replace(a.Email))
		}
		return nil
	})
}

// fieldEscaper keeps list-users' lines one user each, one field per tab.
var fieldEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

// runSetPassword is the set-password command. The account's new security
// stamp revokes every token issued before; its login failures are cleared.
func runSetPassword(ctx context.Context, cfg config, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("set-password", flag.ContinueOnError)
	email := fs.String("email", "", "the user's email")
	readPassword := passwordFlags(fs)
	if err := parseFlags(fs, args, stderr, "email"); err != nil {
		return err
	}
	password, err := readPassword(stdin)
	if err != nil {
		return err
	}
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("set-password: %s: %w", *email, err)
	}
	return withStore(ctx, "set-password", cfg, stderr, func(s *store) error {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), cfg.BcryptCost)
		if err != nil {
			return fmt.Errorf("hash password: %w", err)
		}
		err = s.setPassword(ctx, *email, string(hash))
		if errors.Is(err, errNotFound) {
			return fmt.Errorf("no user with email %s", *email)
		}
		if err := errors.Join(err, s.clearFailures(ctx, accountKey(*email))); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "set-password: changed the password of %s; older tokens are refused\n", *email)
		return waitForServers(ctx)
	})
}

// runDeleteUser is the delete-user command: requireUser refuses the
// tokens of a subject that is no user.
func runDeleteUser(ctx context.Context, cfg config, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("delete-user", flag.ContinueOnError)
	email := fs.String("email", "", "the user's email")
	if err := parseFlags(fs, args, stderr, "email"); err != nil {
		return err
	}
	return withStore(ctx, "delete-user", cfg, stderr, func(s *store) error {
		err := s.deleteUser(ctx, *email)
		if errors.Is(err, errNotFound) {
			return fmt.Errorf("no user with email %s", *email)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "delete-user: deleted %s\n", *email)
		return waitForServers(ctx)
	})
}

// runUnblock is the unblock command: it clears the login failures of an
// account or of a client address, keyed as the throttle keys them.
func runUnblock(ctx context.Context, cfg config, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("unblock", flag.ContinueOnError)
	email := fs.String("email", "", "the account's email")
	client := fs.String("client", "", "the client's IP address (IPv6: its /64, which the throttle counts as one)")
	if err := parseFlags(fs, args, stderr); err != nil {
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
	return withStore(ctx, "unblock", cfg, stderr, func(s *store) error {
		if err := s.clearFailures(ctx, key); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unblock: cleared the login failures of %s\n", who)
		return waitForServers(ctx)
	})
}

// withStore opens cfg's database for the command cmd and runs f. f's error
// names cmd, or says to migrate first: only serve and migrate apply schema.sql.
func withStore(ctx context.Context, cmd string, cfg config, stderr io.Writer, f func(*store) error) error {
	s, closeDB, err := openStore(ctx, cmd, cfg, newLogger(stderr, cfg.LogFormat))
	if err != nil {
		return err
	}
	defer closeDB()
	err = f(s)
	if cmd != "migrate" && schemaMissing(err) {
		return fmt.Errorf("%s: the database's myapi schema is missing or out of date: run the migrate command first", cmd)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}

// waitForServers returns once every server has forgotten what it read
// before the change just committed (memory.go): then the change holds on all.
func waitForServers(ctx context.Context) error {
	select {
	case <-time.After(memoryTTL):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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

// validateNewUser checks a new user's fields. The email, stored as given and
// the login, must be a bare address (no display name).
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

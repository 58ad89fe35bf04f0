package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// The account commands: what an operator does to users from the command line.

// runCreateUser is the create-user command.
func runCreateUser(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("create-user", flag.ContinueOnError)
	name := fs.String("name", "", "the user's name")
	email := fs.String("email", "", "the user's email, their login")
	password := fs.String("password", "", "the password (visible to other users of this machine: prefer -password-stdin)")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if (*password == "") == !*fromStdin {
		fmt.Fprintln(stderr, "create-user: give exactly one of -password and -password-stdin")
		fs.Usage()
		return errUsage
	}
	if *fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return fmt.Errorf("create-user: read password from stdin: %w", err)
		}
		*password = strings.TrimRight(line, "\r\n")
	}
	if err := validateNewUser(*name, *email, *password); err != nil {
		return fmt.Errorf("create-user: %w", err)
	}

	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(*password), cfg.BcryptCost)
	if err != nil {
		return fmt.Errorf("create-user: hash password: %w", err)
	}
	db, closeDB, err := openDatabase(ctx, cfg, newLogger(stderr, cfg.LogFormat))
	if err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	defer closeDB()
	if err := migrate(ctx, db, cfg.Env == "dev"); err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	id, err := (&store{db: db}).createUser(ctx, *name, *email, string(hash))
	if errors.Is(err, errDuplicate) {
		return fmt.Errorf("create-user: a user with email %s already exists", *email)
	}
	if err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	fmt.Fprintf(stdout, "create-user: created user %d, %s\n", id, *email)
	return nil
}

// validateNewUser checks a new user's fields. The email must be a bare
// address (no display name), since it is stored as given and is the login.
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
	if n := len(password); n < minPasswordBytes || n > maxPasswordBytes {
		problems = append(problems, fmt.Sprintf("the password must be %d to %d bytes long", minPasswordBytes, maxPasswordBytes))
	}
	if problems != nil {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

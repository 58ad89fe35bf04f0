package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCreateUser(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	const pw = "a secret password"
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"create-user", "-name", "Ada", "-email", "ada@example.com", "-password-stdin"}, env,
		strings.NewReader(pw+"\nsecond line\n"), &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout.String()+stderr.String(), pw) || !strings.Contains(stdout.String(), "ada@example.com") {
		t.Errorf("output %q %q", stdout.String(), stderr.String())
	}
	app := startApp(t, env)
	app.token(t, "ada@example.com", pw) // the first line only, without its newline

	err = run(context.Background(), []string{"create-user", "-name", "Ada", "-email", "ada@example.com", "-password", pw}, env, nil, io.Discard, io.Discard)
	if err == nil || err.Error() != "create-user: a user with email ada@example.com already exists" {
		t.Errorf("duplicate: %v", err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-name", "", "-email", "b@example.com", "-password", pw}, "-name is required"},
		{[]string{"-name", "B", "-email", "B <b@example.com>", "-password", pw}, "is not an email address"},
		{[]string{"-name", "B", "-email", "not-an-email", "-password", pw}, "is not an email address"},
		{[]string{"-name", "B", "-email", "b@example.com", "-password", "short"}, "8 to 72 bytes"},
		{[]string{"-name", "B", "-email", "b@example.com", "-password", strings.Repeat("x", 73)}, "8 to 72 bytes"},
	} {
		err := run(context.Background(), append([]string{"create-user"}, c.args...), env, nil, io.Discard, io.Discard)
		if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error containing %q", c.args, err, c.want)
		}
	}
	err = run(context.Background(), []string{"create-user", "-name", "B", "-email", "b@example.com", "-password", pw, "-password-stdin"}, env, nil, io.Discard, io.Discard)
	if !errors.Is(err, errUsage) {
		t.Errorf("both password flags: %v, want a usage error", err)
	}
}

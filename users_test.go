package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

const moviesPath = "/movies/new?year=1&rating=1"

// usersTable is myapi.users, hashes and all, as text.
func usersTable(t *testing.T, db *sql.DB) string {
	t.Helper()
	var s sql.NullString
	err := db.QueryRow("SELECT string_agg(u::text, E'\\n' ORDER BY user_id) FROM myapi.users AS u").Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s.String
}

// TestCreateAndListUsers: create-user reads the password from the first
// line of stdin, without its newline, and never prints it; list-users
// prints every user in id order, one a line, or as JSON, never a hash.
func TestCreateAndListUsers(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	env := testEnv(t, dsn)
	for args, want := range map[string]string{"list-users": "", "list-users -json": "[]\n"} {
		if out, _, err := runCmd(t, env, "", strings.Fields(args)...); err != nil || out != want {
			t.Errorf("%s with no users: %q, %v; want %q", args, out, err, want)
		}
	}

	const pw = "a secret password"
	stdout, stderr, err := runCmd(t, env, pw+"\nsecond line\n", "create-user", "-name", "Ada", "-email", "ada@example.com", "-password-stdin")
	if err != nil || strings.Contains(stdout+stderr, pw) || !strings.Contains(stdout, "ada@example.com") {
		t.Fatalf("create-user: %v, output %q %q", err, stdout, stderr)
	}
	startApp(t, env).token(t, "ada@example.com", pw)
	createUser(t, env, "Tab\there, new\nline, back\\slash", "odd@example.com", "correct horse")
	// An email the original's command line could store; and an update,
	// which moves user 1 to the end of the table, so that order is by id.
	mustExec(t, openTestDB(t, dsn), `INSERT INTO myapi.users (name, email, hashed_password) VALUES ('Raw', E'raw\tmail@example.com', 'x');
		UPDATE myapi.users SET name = 'Ada Lovelace' WHERE user_id = 1`)
	out, _, err := runCmd(t, env, "", "list-users")
	want := "1\tAda Lovelace\tada@example.com\n" +
		`2	Tab\there, new\nline, back\\slash	odd@example.com` + "\n" +
		`3	Raw	raw\tmail@example.com` + "\n"
	if err != nil || out != want {
		t.Errorf("list-users:\n%q, %v\nwant\n%q", out, err, want)
	}

	out, _, err = runCmd(t, env, "", "list-users", "-json")
	var got []map[string]any
	decodeJSON(t, out, &got)
	wantJSON := []map[string]any{
		{"id": 1.0, "name": "Ada Lovelace", "email": "ada@example.com"},
		{"id": 2.0, "name": "Tab\there, new\nline, back\\slash", "email": "odd@example.com"},
		{"id": 3.0, "name": "Raw", "email": "raw\tmail@example.com"},
	}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(wantJSON) || strings.Contains(out, "$2") {
		t.Errorf("list-users -json: %v\n%v\nwant\n%v, and never a hash", err, got, wantJSON)
	}
}

// TestAccountCommandFailures checks that each failure is a usage error
// (exit status 2) or one line naming the problem (exit status 1), and
// that it changes nothing.
func TestAccountCommandFailures(t *testing.T) {
	t.Parallel()
	dsn, env := databaseWithAda(t)
	db := openTestDB(t, dsn)
	before := usersTable(t, db)
	const pw = "battery staple"
	const tooShort = "set-password: ada@example.com: the password must be 8 to 72 bytes long"
	const badLength = "create-user: the password must be 8 to 72 bytes long"
	create := func(name, email, password string, more ...string) []string {
		return append([]string{"create-user", "-name", name, "-email", email, "-password", password}, more...)
	}

	for _, c := range []struct {
		args  []string
		stdin string
		want  string // "" for a usage error
	}{
		{[]string{"set-password", "-email", "nobody@example.com", "-password", pw}, "", "set-password: no user with email nobody@example.com"},
		{[]string{"set-password", "-email", "ada@example.com", "-password", "short"}, "", tooShort},
		{[]string{"set-password", "-email", "ada@example.com", "-password", strings.Repeat("x", 73)}, "", tooShort},
		{[]string{"set-password", "-email", "ada@example.com", "-password-stdin"}, "short\n", tooShort},
		{[]string{"delete-user", "-email", "nobody@example.com"}, "", "delete-user: no user with email nobody@example.com"},
		{create("Ada", "ada@example.com", pw), "", "create-user: a user with email ada@example.com already exists"},
		{create("", "b@example.com", pw), "", "create-user: -name is required"},
		{create("A\x00B", "b@example.com", pw), "", "create-user: -name must be UTF-8 text without NUL bytes"},
		{create("B", "B <b@example.com>", pw), "", `create-user: -email "B <b@example.com>" is not an email address`},
		{create("B", "not-an-email", pw), "", `create-user: -email "not-an-email" is not an email address`},
		{create("B", "b@example.com", "short"), "", badLength},
		{create("B", "b@example.com", strings.Repeat("x", 73)), "", badLength},
		{create("B", "b@example.com", pw, "-password-stdin"), pw, ""},
		{[]string{"set-password", "-password", pw}, "", ""},
		{[]string{"set-password", "-email", "ada@example.com"}, "", ""},
		{[]string{"set-password", "-email", "ada@example.com", "-password", pw, "-password-stdin"}, pw, ""},
		{[]string{"set-password", "-email", "ada@example.com", "-password", pw, "extra"}, "", ""},
		{[]string{"delete-user"}, "", ""},
		{[]string{"delete-user", "-email", "ada@example.com", "extra"}, "", ""},
		{[]string{"list-users", "-csv"}, "", ""},
		{[]string{"unblock"}, "", ""},
		{[]string{"unblock", "-email", "ada@example.com", "-client", "192.0.2.1"}, "", ""},
		{[]string{"unblock", "-client", "not-an-address"}, "", ""},
		{[]string{"unblock", "-client", "192.0.2.0/24"}, "", ""},
	} {
		stdout, stderr, err := runCmd(t, env, c.stdin, c.args...)
		switch {
		case c.want == "" && (!errors.Is(err, errUsage) || !strings.Contains(stderr, "Usage of "+c.args[0])):
			t.Errorf("%q: %v, stderr %q; want a usage error with the usage", c.args, err, stderr)
		case c.want != "" && (err == nil || errors.Is(err, errUsage) || err.Error() != c.want):
			t.Errorf("%q: %v; want %q", c.args, err, c.want)
		}
		if strings.Contains(stdout+stderr, pw) {
			t.Errorf("%q shows the password: %q %q", c.args, stdout, stderr)
		}
	}
	if _, stderr, _ := runCmd(t, env, "", "unblock", "-client", "not-an-address"); !strings.HasPrefix(stderr, `unblock: -client "not-an-address" is not an IP address`+"\n") {
		t.Errorf("unblock with a bad address: stderr %q", stderr)
	}
	if after := usersTable(t, db); after != before {
		t.Errorf("failures changed the users:\n%s\nwas\n%s", after, before)
	}
}

// blockAccount fails enough logins for email on a to block the account.
func (a *testApp) blockAccount(t testing.TB, email string) {
	t.Helper()
	for range maxAccountFailures {
		a.login(t, email, "a wrong guess")
	}
}

// TestCommandsHoldOnEveryServer runs two servers on one database: each
// change a command makes holds on the second server the moment the
// command returns, even right after that server has served the account.
func TestCommandsHoldOnEveryServer(t *testing.T) {
	t.Parallel()
	dsn, env := databaseWithAda(t)
	a, b := startApp(t, env), startApp(t, env)
	const pw = "battery staple"
	command := func(stdin string, args ...string) string {
		t.Helper()
		stdout, stderr, err := runCmd(t, env, stdin, args...)
		if err != nil || strings.Contains(stdout+stderr, pw) {
			t.Fatalf("%s: %v\n%s%s", args[0], err, stdout, stderr)
		}
		return stdout
	}
	blocked := func(password string) {
		t.Helper()
		a.blockAccount(t, "ada@example.com")
		if res := b.login(t, "ada@example.com", password); res.status != 429 {
			t.Fatalf("blocked account on the second server: %d, want 429", res.status)
		}
	}

	// set-password revokes every token issued before, and clears the
	// account's failures: the new password logs in at once.
	old := bearer(a.token(t, "ada@example.com", "correct horse"))
	b.do(t, "GET", moviesPath, old, nil).expect(t, 200, `[]`)
	blocked("correct horse")
	if out := command(pw+"\n", "set-password", "-email", "ada@example.com", "-password-stdin"); !strings.Contains(out, "ada@example.com") {
		t.Errorf("set-password printed %q", out)
	}
	b.do(t, "GET", moviesPath, old, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)
	b.login(t, "ada@example.com", "correct horse").expect(t, 401, `{"detail":"Incorrect username or password"}`)
	current := bearer(b.token(t, "ada@example.com", pw))

	// The throttle counts case variants of an email as one account.
	blocked(pw)
	if out := command("", "unblock", "-email", "ADA@example.com"); out != "unblock: cleared the login failures of account ADA@example.com\n" {
		t.Errorf("unblock -email printed %q", out)
	}
	b.token(t, "ada@example.com", pw)

	// unblock -client clears a client's failures, and for an IPv6 address
	// those of its /64, as the throttle counts them.
	db := openTestDB(t, dsn)
	for _, addr := range []string{"127.0.0.1", "2001:db8:1:2::1"} {
		mustExec(t, db, `INSERT INTO myapi.login_failures VALUES ($1, $2, now() + interval '1 hour')
			ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, reset_at = excluded.reset_at`, clientKey(netip.MustParseAddr(addr)), maxClientFailures)
	}
	if res := b.login(t, "ada@example.com", pw); res.status != 429 {
		t.Fatalf("blocked client on the second server: %d, want 429", res.status)
	}
	command("", "unblock", "-client", "127.0.0.1")
	command("", "unblock", "-client", "2001:db8:1:2:ffff::9")
	b.token(t, "ada@example.com", pw)
	if n := failures(t, db, clientKey(netip.MustParseAddr("2001:db8:1:2::1"))); n != 0 {
		t.Errorf("the /64 keeps %d failures", n)
	}

	b.do(t, "GET", moviesPath, current, nil).expect(t, 200, `[]`)
	command("", "delete-user", "-email", "ada@example.com")
	b.do(t, "GET", moviesPath, current, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)

	// The email again, for someone else: the old tokens stay refused. A
	// server remembers the email as missing for up to a second.
	createUser(t, env, "Ada Two", "ada@example.com", "correct horse")
	time.Sleep(cacheTTL)
	b.do(t, "GET", moviesPath, current, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)
	b.do(t, "GET", moviesPath, bearer(b.token(t, "ada@example.com", "correct horse")), nil).expect(t, 200, `[]`)
}

// TestServersRememberForASecond drives a server's clock: what it read of
// an account or a block counts for a second after its query started, and
// no longer. A refused login it remembers makes no statement: it is still
// 429 with the database down.
func TestServersRememberForASecond(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db := openTestDB(t, dsn)
	clock := &testClock{t: time.Now()}
	srv := newTestHandler(t, dsn, clock.now)
	app := &testApp{url: srv.URL, client: srv.Client()}

	token := bearer(app.token(t, "ada@example.com", "correct horse"))
	app.do(t, "GET", moviesPath, token, nil).expect(t, 200, `[]`)
	mustExec(t, db, "UPDATE myapi.users SET security_stamp = 'changed by hand'")
	clock.add(cacheTTL - time.Millisecond)
	app.do(t, "GET", moviesPath, token, nil).expect(t, 200, `[]`)
	clock.add(time.Millisecond)
	app.do(t, "GET", moviesPath, token, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)

	blocked := `{"detail":"Too many failed login attempts, try again later"}`
	app.blockAccount(t, "ada@example.com")
	app.login(t, "ada@example.com", "correct horse").expect(t, 429, blocked)
	mustExec(t, db, "DELETE FROM myapi.login_failures")
	clock.add(cacheTTL / 2)
	res := app.login(t, "ada@example.com", "correct horse")
	res.expect(t, 429, blocked)
	if wait, _ := strconv.Atoi(res.header.Get("Retry-After")); wait < 1 || wait > int(failureWindow.Seconds()) {
		t.Errorf("Retry-After %q", res.header.Get("Retry-After"))
	}
	clock.add(cacheTTL / 2)
	app.token(t, "ada@example.com", "correct horse")

	app.blockAccount(t, "ada@example.com")
	app.login(t, "ada@example.com", "correct horse").expect(t, 429, blocked)
	takeDatabaseDown(t, dsn)
	app.login(t, "ada@example.com", "correct horse").expect(t, 429, blocked)
}

func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	m := newCache[int](time.Now)
	for i := range cacheCap + 10 {
		m.put(strconv.Itoa(i), i, time.Now())
	}
	if n := len(m.entries); n > cacheCap {
		t.Errorf("%d entries, want at most %d", n, cacheCap)
	}
	if v, ok := m.get(strconv.Itoa(cacheCap + 9)); !ok || v != cacheCap+9 {
		t.Errorf("the newest entry: %d, %v", v, ok)
	}
	m.put("old", -1, time.Now().Add(-cacheTTL)) // its query started a second ago
	if _, ok := m.get("old"); ok {
		t.Error("an answer outlived its query's start by a second")
	}
}

// originalSchema is the database of the service myapi ports, as API.md
// lists it, and password_changed_at, which an earlier myapi added.
const originalSchema = `
DROP SCHEMA myapi CASCADE;
CREATE SCHEMA myapi;
CREATE TABLE myapi.movies (movie_id INTEGER PRIMARY KEY, title TEXT NOT NULL,
                           released INTEGER NOT NULL, rating NUMERIC(2,1) NOT NULL);
CREATE TABLE myapi.users (user_id SERIAL PRIMARY KEY, name TEXT NOT NULL,
                          email TEXT NOT NULL UNIQUE, hashed_password TEXT NOT NULL);
ALTER TABLE myapi.users ADD COLUMN password_changed_at TIMESTAMPTZ;`

// originalToken is a token as the original service signs it: sub and
// expires_at, no iat.
func originalToken(sub string, expires time.Time) string {
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	claims := fmt.Sprintf(`{"sub":%q,"expires_at":%q}`, sub, expires.UTC().Format(time.DateTime))
	input := seg(`{"alg":"HS256","typ":"JWT"}`) + "." + seg(claims)
	mac := hmac.New(sha256.New, []byte(testTokenKey))
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestMigrateOriginalDatabase migrates a database with an account the
// original made and one an earlier myapi made: only the second gets a
// stamp, so tokens without one keep working for the first alone, until
// its password is set. Their hash is the one the FastAPI tutorial ships
// for the password "secret", made by passlib: the original's users keep
// logging in.
func TestMigrateOriginalDatabase(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	db := openTestDB(t, dsn)
	mustExec(t, db, originalSchema)
	mustExec(t, db, `INSERT INTO myapi.users (name, email, hashed_password, password_changed_at)
		VALUES ('Ada', 'ada@example.com', $1, NULL), ('Bob', 'bob@example.com', $1, now())`,
		"$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW")
	env := testEnv(t, dsn)
	_, _, err := runCmd(t, env, "", "create-user", "-name", "C", "-email", "c@example.com", "-password", "correct horse")
	if want := "create-user: the database's myapi schema is missing or out of date: run the migrate command first"; err == nil || err.Error() != want {
		t.Errorf("create-user before migrate: %v, want %q", err, want)
	}
	app := startApp(t, env) // migrates
	var missing int
	err = db.QueryRow(`SELECT num_nulls(to_regclass('myapi.login_failures'), to_regclass('myapi.movies_released_rating_idx'),
		to_regclass('myapi.login_failures_reset_at_idx'), (SELECT security_stamp FROM myapi.users WHERE email = 'bob@example.com'))`).Scan(&missing)
	if err != nil || missing != 0 {
		t.Fatalf("after migrate, %d objects missing, %v", missing, err)
	}

	// The original's token, without iat or stamp.
	original := bearer(originalToken("ada@example.com", time.Now().Add(time.Hour)))
	app.do(t, "GET", moviesPath, original, nil).expect(t, 200, `[]`)
	app.do(t, "GET", moviesPath, bearer(originalToken("bob@example.com", time.Now().Add(time.Hour))), nil).
		expect(t, 401, `{"detail":"Invalid credentials"}`)
	app.do(t, "GET", moviesPath, bearer(app.token(t, "ada@example.com", "secret")), nil).expect(t, 200, `[]`)
	app.do(t, "GET", moviesPath, bearer(app.token(t, "bob@example.com", "secret")), nil).expect(t, 200, `[]`)
	app.login(t, "ada@example.com", "secreT").expect(t, 401, `{"detail":"Incorrect username or password"}`)
	// An account without a stamp has sessions too, until it gets one.
	g := refreshed(t, app.refresh(t, offlineLogin(t, app, "ada@example.com", "secret").RefreshToken))
	if _, _, err := runCmd(t, env, "", "set-password", "-email", "ada@example.com", "-password", "battery staple"); err != nil {
		t.Fatal(err)
	}
	app.do(t, "GET", moviesPath, original, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)
	app.refresh(t, g.RefreshToken).expect(t, 400, invalidGrant)
	app.do(t, "GET", moviesPath, bearer(app.token(t, "ada@example.com", "battery staple")), nil).expect(t, 200, `[]`)
}

// migrateLockTimeout is schema.sql's lock_timeout.
const migrateLockTimeout = 5 * time.Second

// TestMigrateLockTimeout adds the column while a long read (a pg_dump)
// holds the users table: migrate must give up after its lock timeout and
// say why, not queue every request behind it.
func TestMigrateLockTimeout(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	db := openTestDB(t, dsn)
	mustExec(t, db, "ALTER TABLE myapi.users DROP COLUMN security_stamp")
	read := lockTables(t, dsn, "ACCESS SHARE", "myapi.users")
	ctx, cancel := context.WithTimeout(t.Context(), 2*migrateLockTimeout)
	defer cancel()
	start := time.Now()
	err := migrate(ctx, db, false)
	if d := time.Since(start); d < migrateLockTimeout-time.Second || d > migrateLockTimeout+3*time.Second {
		t.Errorf("migrate gave up after %v, want about %v", d, migrateLockTimeout)
	}
	if err == nil || !strings.HasPrefix(err.Error(), "apply schema.sql: ") || !strings.Contains(err.Error(), "lock timeout") {
		t.Errorf("migrate: %v, want a lock timeout", err)
	}
	read.Rollback()
	if err := migrate(t.Context(), db, false); err != nil {
		t.Errorf("migrate once the lock is gone: %v", err)
	}
}

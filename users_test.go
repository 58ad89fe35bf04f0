package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
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

const moviesPath = "/movies/new?year=1&rating=1"

func TestListUsers(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	env := testEnv(t, dsn)
	for _, c := range []struct{ flag, want string }{{"", ""}, {"-json", "[]\n"}} {
		args := []string{"list-users", c.flag}
		if c.flag == "" {
			args = args[:1]
		}
		if out, _, err := runCmd(t, env, "", args...); err != nil || out != c.want {
			t.Errorf("%q with no users: %q, %v; want %q", args, out, err, c.want)
		}
	}

	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	createUser(t, env, "Tab\there, new\nline, back\\slash", "odd@example.com", "correct horse")
	// An email the original's command line could store; and an update,
	// which moves user 1 to the end of the table, so that order is by id.
	db := openTestDB(t, dsn)
	_, err := db.Exec(`INSERT INTO myapi.users (name, email, hashed_password) VALUES ('Raw', E'raw\tmail@example.com', 'x');
		UPDATE myapi.users SET name = 'Ada Lovelace' WHERE user_id = 1`)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, env, "", "list-users")
	want := "1\tAda Lovelace\tada@example.com\n" +
		`2	Tab\there, new\nline, back\\slash	odd@example.com` + "\n" +
		`3	Raw	raw\tmail@example.com` + "\n"
	if err != nil || out != want {
		t.Errorf("list-users:\n%q, %v\nwant\n%q", out, err, want)
	}

	out, _, err = runCmd(t, env, "", "list-users", "-json")
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	decodeJSON(t, out, &got)
	wantJSON := []map[string]any{
		{"id": 1.0, "name": "Ada Lovelace", "email": "ada@example.com"},
		{"id": 2.0, "name": "Tab\there, new\nline, back\\slash", "email": "odd@example.com"},
		{"id": 3.0, "name": "Raw", "email": "raw\tmail@example.com"},
	}
	if fmt.Sprint(got) != fmt.Sprint(wantJSON) {
		t.Errorf("list-users -json:\n%v\nwant\n%v", got, wantJSON)
	}
	if strings.Contains(out, "$2") {
		t.Errorf("list-users -json shows a hash: %s", out)
	}
}

// TestAccountCommandFailures checks that each failure is a usage error
// (exit status 2) or one line naming the email (exit status 1), and that
// it changes nothing.
func TestAccountCommandFailures(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	env := testEnv(t, dsn)
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	db := openTestDB(t, dsn)
	before := usersTable(t, db)
	const pw = "battery staple"
	const tooShort = "set-password: ada@example.com: the password must be 8 to 72 bytes long"

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
		{[]string{"create-user", "-name", "Ada", "-email", "ada@example.com", "-password", pw}, "", "create-user: a user with email ada@example.com already exists"},
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

func TestSetPasswordRevokesOlderTokens(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	env := testEnv(t, dsn)
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)
	old := bearer(app.token(t, "ada@example.com", "correct horse"))
	app.do(t, "GET", moviesPath, old, nil).expect(t, 200, `[]`)
	for range maxAccountFailures {
		app.login(t, "ada@example.com", "a wrong guess")
	}
	if res := app.login(t, "ada@example.com", "correct horse"); res.status != 429 {
		t.Fatalf("after %d failures: %d, want 429", maxAccountFailures, res.status)
	}

	const pw = "battery staple"
	stdout, stderr, err := runCmd(t, env, pw+"\n", "set-password", "-email", "ada@example.com", "-password-stdin")
	if err != nil || !strings.Contains(stdout, "ada@example.com") || strings.Contains(stdout+stderr, pw) {
		t.Fatalf("set-password: %v, %q %q", err, stdout, stderr)
	}
	app.do(t, "GET", moviesPath, old, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)
	if n := failures(t, openTestDB(t, dsn), accountKey("ada@example.com")); n != 0 {
		t.Errorf("the account keeps %d failures", n)
	}
	app.do(t, "GET", moviesPath, bearer(app.token(t, "ada@example.com", pw)), nil).expect(t, 200, `[]`)
	app.login(t, "ada@example.com", "correct horse").expect(t, 401, `{"detail":"Incorrect username or password"}`)
}

// TestCommandsHoldOnEveryServer runs two servers on one database: each
// change a command makes holds on the second server the moment the
// command returns, even right after that server has served the account.
func TestCommandsHoldOnEveryServer(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	a, b := startApp(t, env), startApp(t, env)
	command := func(args ...string) {
		t.Helper()
		if _, stderr, err := runCmd(t, env, "", args...); err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, stderr)
		}
	}

	old := bearer(a.token(t, "ada@example.com", "correct horse"))
	b.do(t, "GET", moviesPath, old, nil).expect(t, 200, `[]`)
	command("set-password", "-email", "ada@example.com", "-password", "battery staple")
	b.do(t, "GET", moviesPath, old, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)

	for range maxAccountFailures {
		a.login(t, "ada@example.com", "a wrong guess")
	}
	if res := b.login(t, "ada@example.com", "battery staple"); res.status != 429 {
		t.Fatalf("blocked account on the second server: %d, want 429", res.status)
	}
	command("unblock", "-email", "ada@example.com")
	current := bearer(b.token(t, "ada@example.com", "battery staple"))

	b.do(t, "GET", moviesPath, current, nil).expect(t, 200, `[]`)
	command("delete-user", "-email", "ada@example.com")
	b.do(t, "GET", moviesPath, current, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)

	// The email again, for someone else: the old tokens stay refused. A
	// server remembers the email as missing for up to a second.
	createUser(t, env, "Ada Two", "ada@example.com", "correct horse")
	time.Sleep(memoryTTL)
	b.do(t, "GET", moviesPath, current, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)
	b.do(t, "GET", moviesPath, bearer(b.token(t, "ada@example.com", "correct horse")), nil).expect(t, 200, `[]`)
}

// TestServersRememberForASecond drives a server's clock: what it read of
// an account or a block counts for a second after its query started, and
// no longer. A refused login it remembers makes no statement: it is still
// 429 with the database down.
func TestServersRememberForASecond(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	db := openTestDB(t, dsn)
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	tick := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); clock = clock.Add(d) }
	srv := newTestHandler(t, dsn, now)
	app := &testApp{url: srv.URL, client: srv.Client()}

	token := bearer(app.token(t, "ada@example.com", "correct horse"))
	app.do(t, "GET", moviesPath, token, nil).expect(t, 200, `[]`)
	if _, err := db.Exec("UPDATE myapi.users SET security_stamp = 'changed by hand'"); err != nil {
		t.Fatal(err)
	}
	tick(memoryTTL - time.Millisecond)
	app.do(t, "GET", moviesPath, token, nil).expect(t, 200, `[]`)
	tick(time.Millisecond)
	app.do(t, "GET", moviesPath, token, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)

	blocked := `{"detail":"Too many failed login attempts, try again later"}`
	for range maxAccountFailures {
		app.login(t, "ada@example.com", "a wrong guess")
	}
	app.login(t, "ada@example.com", "correct horse").expect(t, 429, blocked)
	if _, err := db.Exec("DELETE FROM myapi.login_failures"); err != nil {
		t.Fatal(err)
	}
	tick(memoryTTL / 2)
	res := app.login(t, "ada@example.com", "correct horse")
	res.expect(t, 429, blocked)
	if wait, _ := strconv.Atoi(res.header.Get("Retry-After")); wait < 1 || wait > int(failureWindow.Seconds()) {
		t.Errorf("Retry-After %q", res.header.Get("Retry-After"))
	}
	tick(memoryTTL / 2)
	app.token(t, "ada@example.com", "correct horse")

	for range maxAccountFailures {
		app.login(t, "ada@example.com", "a wrong guess")
	}
	app.login(t, "ada@example.com", "correct horse").expect(t, 429, blocked)
	takeDatabaseDown(t, dsn)
	app.login(t, "ada@example.com", "correct horse").expect(t, 429, blocked)
}

func TestMemoryIsBounded(t *testing.T) {
	t.Parallel()
	m := newMemory[int, int](time.Now)
	for i := range memoryCap + 10 {
		m.put(i, i, time.Now())
	}
	if n := len(m.entries); n > memoryCap {
		t.Errorf("%d entries, want at most %d", n, memoryCap)
	}
	if v, ok := m.get(memoryCap + 9); !ok || v != memoryCap+9 {
		t.Errorf("the newest entry: %d, %v", v, ok)
	}
	m.put(-1, -1, time.Now().Add(-memoryTTL)) // its query started a second ago
	if _, ok := m.get(-1); ok {
		t.Error("an answer outlived its query's start by a second")
	}
}

func TestUnblock(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	env := testEnv(t, dsn)
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)
	for range maxAccountFailures {
		app.login(t, "ada@example.com", "a wrong guess")
	}
	if res := app.login(t, "ada@example.com", "correct horse"); res.status != 429 {
		t.Fatalf("blocked account: %d, want 429", res.status)
	}
	// The throttle counts case variants of an email as one account.
	stdout, _, err := runCmd(t, env, "", "unblock", "-email", "ADA@example.com")
	if err != nil || stdout != "unblock: cleared the login failures of account ADA@example.com\n" {
		t.Fatalf("unblock -email: %q, %v", stdout, err)
	}
	app.token(t, "ada@example.com", "correct horse")

	db := openTestDB(t, dsn)
	block := func(addr string) []byte {
		key := clientKey(netip.MustParseAddr(addr))
		_, err := db.Exec(`INSERT INTO myapi.login_failures VALUES ($1, $2, now() + interval '1 hour')
			ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, reset_at = excluded.reset_at`, key, maxClientFailures)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	block("127.0.0.1")
	if res := app.login(t, "ada@example.com", "correct horse"); res.status != 429 {
		t.Fatalf("blocked client: %d, want 429", res.status)
	}
	if _, _, err := runCmd(t, env, "", "unblock", "-client", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	app.token(t, "ada@example.com", "correct horse")

	// An IPv6 address clears its /64, as the throttle counts it.
	key := block("2001:db8:1:2::1")
	if _, _, err := runCmd(t, env, "", "unblock", "-client", "2001:db8:1:2:ffff::9"); err != nil {
		t.Fatal(err)
	}
	if n := failures(t, db, key); n != 0 {
		t.Errorf("the /64 keeps %d failures", n)
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

// TestMigrateOriginalDatabase migrates a database with an account the
// original made and one an earlier myapi made: only the second gets a
// stamp, so tokens without one keep working for the first alone, until
// its password is set.
func TestMigrateOriginalDatabase(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	db := openTestDB(t, dsn)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(originalSchema); err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`INSERT INTO myapi.users (name, email, hashed_password, password_changed_at)
		VALUES ('Ada', 'ada@example.com', $1, NULL), ('Bob', 'bob@example.com', $1, now())`, hash)
	if err != nil {
		t.Fatal(err)
	}
	env := testEnv(t, dsn)
	_, _, err = runCmd(t, env, "", "create-user", "-name", "C", "-email", "c@example.com", "-password", "correct horse")
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
	app.do(t, "GET", moviesPath, bearer(app.token(t, "ada@example.com", "correct horse")), nil).expect(t, 200, `[]`)
	app.do(t, "GET", moviesPath, bearer(app.token(t, "bob@example.com", "correct horse")), nil).expect(t, 200, `[]`)
	if _, _, err := runCmd(t, env, "", "set-password", "-email", "ada@example.com", "-password", "battery staple"); err != nil {
		t.Fatal(err)
	}
	app.do(t, "GET", moviesPath, original, nil).expect(t, 401, `{"detail":"Invalid credentials"}`)
	app.do(t, "GET", moviesPath, bearer(app.token(t, "ada@example.com", "battery staple")), nil).expect(t, 200, `[]`)
}

// TestMigrateWaitsForNoWrite runs migrate while a transaction writes to
// every table: a migration with nothing to do takes no lock that waits.
func TestMigrateWaitsForNoWrite(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, table := range []string{"myapi.users", "myapi.movies", "myapi.login_failures"} {
		if _, err := tx.Exec("LOCK TABLE " + table + " IN ROW EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := migrate(t.Context(), db, false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > migrateLockTimeout/2 {
		t.Errorf("migrate took %v beside a write", d)
	}
}

// TestMigrateLockTimeout adds the column while a long read (a pg_dump)
// holds the users table: migrate must give up after its lock timeout and
// say why, not queue every request behind it.
func TestMigrateLockTimeout(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
	if _, err := db.Exec("ALTER TABLE myapi.users DROP COLUMN security_stamp"); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("LOCK TABLE myapi.users IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*migrateLockTimeout)
	defer cancel()
	start := time.Now()
	err = migrate(ctx, db, false)
	if d := time.Since(start); d < migrateLockTimeout-time.Second || d > migrateLockTimeout+3*time.Second {
		t.Errorf("migrate gave up after %v, want about %v", d, migrateLockTimeout)
	}
	if err == nil || !strings.HasPrefix(err.Error(), "migrate: ") || !strings.Contains(err.Error(), "lock timeout") {
		t.Errorf("migrate: %v, want a lock timeout", err)
	}
	tx.Rollback()
	if err := migrate(t.Context(), db, false); err != nil {
		t.Errorf("migrate once the lock is gone: %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestThrottleIsSharedAndKept fails logins for one account on two servers
// of one database: the account's count is one, and blocks even the right
// password, in any case of the email, on either server and on one started
// later. Another account still logs in from the same client.
func TestThrottleIsSharedAndKept(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	createUser(t, env, "Bob", "bob@example.com", "battery staple")
	a, b := startApp(t, env), startApp(t, env)
	for i := range maxAccountFailures {
		app := []*testApp{a, b}[i%2]
		app.login(t, "ada@example.com", "guess"+strconv.Itoa(i)).expect(t, 401, `{"detail":"Incorrect username or password"}`)
	}
	res := a.login(t, "ADA@example.com", "correct horse")
	res.expect(t, 429, `{"detail":"Too many failed login attempts, try again later"}`)
	if s, err := strconv.Atoi(res.header.Get("Retry-After")); err != nil || s < 1 || s > int(failureWindow.Seconds()) {
		t.Errorf("Retry-After = %q", res.header.Get("Retry-After"))
	}
	if res := a.login(t, "bob@example.com", "battery staple"); res.status != 200 {
		t.Errorf("other account: %d %s", res.status, res.body)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	if res := startApp(t, env).login(t, "ada@example.com", "correct horse"); res.status != 429 {
		t.Errorf("a server started after the failures: %d %s, want 429", res.status, res.body)
	}
}

// TestConcurrentGuessesAreCounted sends a burst of wrong passwords for one
// account at once: no more of them may reach bcrypt than the limit allows,
// however many pass the check before the first is judged.
func TestConcurrentGuessesAreCounted(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)
	statuses := make([]int, 3*maxAccountFailures)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Go(func() { statuses[i] = app.login(t, "ada@example.com", "guess"+strconv.Itoa(i)).status })
	}
	wg.Wait()
	slices.Sort(statuses)
	want := slices.Concat(slices.Repeat([]int{401}, maxAccountFailures), slices.Repeat([]int{429}, 2*maxAccountFailures))
	if !slices.Equal(statuses, want) {
		t.Errorf("statuses %v, want %d × 401 and the rest 429", statuses, maxAccountFailures)
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	cases := []struct{ remote, xff, want string }{
		{"192.0.2.1:1234", "", "192.0.2.1"},
		{"192.0.2.1:1234", "203.0.113.7", "192.0.2.1"}, // an untrusted peer cannot name itself
		{"10.0.0.5:1234", "::ffff:203.0.113.7", "203.0.113.7"},
		{"10.0.0.5:1234", "198.51.100.1, 203.0.113.7, 10.0.0.6", "203.0.113.7"},
		{"10.0.0.5:1234", "203.0.113.7, 10.0.0.6, ::ffff:10.0.0.7", "203.0.113.7"},
		{"10.0.0.5:1234", "10.0.0.8, 10.0.0.6", "10.0.0.8"}, // trusted all the way
		{"10.0.0.5:1234", "garbage", "10.0.0.5"},
		{"10.0.0.5:1234", "203.0.113.7, garbage, 10.0.0.6", "10.0.0.6"},
		{"[::ffff:192.0.2.1]:1234", "", "192.0.2.1"},
		{"[2001:db8::1]:1234", "", "2001:db8::1"},
		{"192.0.2.1", "", "192.0.2.1"}, // no port
	}
	for _, c := range cases {
		// In one header, or in one header per hop: the same list.
		for _, xff := range [][]string{{c.xff}, strings.Split(c.xff, ",")} {
			r := httptest.NewRequest("POST", "/token", nil)
			r.RemoteAddr, r.Header["X-Forwarded-For"] = c.remote, xff
			if got := clientAddr(r, trusted); got.String() != c.want {
				t.Errorf("%s via %q = %s, want %s", c.remote, xff, got, c.want)
			}
		}
	}
}

func TestThrottleKeys(t *testing.T) {
	t.Parallel()
	key := func(s string) string { return string(clientKey(netip.MustParseAddr(s))) }
	if key("2001:db8:1:2::1") != key("2001:db8:1:2:ffff::9") || key("2001:db8:1:2::1") == key("2001:db8:1:3::1") {
		t.Error("IPv6 clients must count by their /64")
	}
	if key("192.0.2.1") == key("192.0.2.2") || key("192.0.2.1") != key("::ffff:192.0.2.1") {
		t.Error("IPv4 clients must count by their address")
	}
	if !bytes.Equal(accountKey("Ada@Example.COM"), accountKey("ada@example.com")) {
		t.Error("case variants of an email must count together")
	}
	if bytes.Equal(accountKey("192.0.2.1"), clientKey(netip.MustParseAddr("192.0.2.1"))) {
		t.Error("an account named like an address shares its count")
	}
}

// TestThrottleCounts checks what each outcome leaves in the table: a
// success clears the account and takes its attempt back from the client,
// an attempt never judged counts for neither, even when its request is
// gone, a refused one counts for neither and takes no lock, and the window
// is fixed at the first failure. Each attempt deletes a few expired rows.
func TestThrottleCounts(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
	execSQL := func(query string) {
		t.Helper()
		if _, err := db.Exec(query); err != nil {
			t.Fatal(err)
		}
	}
	execSQL(`INSERT INTO myapi.login_failures (key, failures, reset_at)
		SELECT sha256(i::text::bytea), 1, now() - interval '1 minute' FROM generate_series(1, 25) AS i`)
	s := newStore(db, time.Now)
	client := clientKey(netip.MustParseAddr("192.0.2.1"))
	ada := throttleKeys{client: client, account: accountKey("ada@example.com")}
	attempt := func(k throttleKeys) time.Duration {
		t.Helper()
		wait, err := s.startLogin(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	expect := func(what string, k throttleKeys, clientN, accountN int) {
		t.Helper()
		if c, a := failures(t, db, k.client), failures(t, db, k.account); c != clientN || a != accountN {
			t.Errorf("%s: client %d, account %d; want %d, %d", what, c, a, clientN, accountN)
		}
	}

	for range 3 {
		attempt(ada)
	}
	expect("three failures", ada, 3, 3)
	var rows int
	if err := db.QueryRow("SELECT count(*) FROM myapi.login_failures").Scan(&rows); err != nil || rows != 2 {
		t.Errorf("%d rows left after three attempts (%v), want ada's two: the expired ones go", rows, err)
	}
	logs := &syncBuffer{}
	attempt(ada)
	s.endLogin(t.Context(), newLogger(logs, "text"), ada, true)
	expect("a success", ada, 3, 0)

	gone, cancel := context.WithCancel(t.Context())
	cancel()
	attempt(ada)
	s.endLogin(gone, newLogger(logs, "text"), ada, false)
	expect("an attempt never judged, its request gone", ada, 3, 0)
	if logs.String() != "" {
		t.Errorf("endLogin logged:\n%s", logs)
	}

	for range maxAccountFailures {
		attempt(ada)
	}
	if wait := attempt(ada); wait <= failureWindow-time.Minute || wait > failureWindow {
		t.Errorf("blocked account waits %v, want about %v", wait, failureWindow)
	}
	expect("a refused attempt", ada, 3+maxAccountFailures, maxAccountFailures)
	// A refused attempt only reads: while another transaction holds the
	// account's row, a store that does not remember the block answers at once.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("SELECT 1 FROM myapi.login_failures WHERE key = $1 FOR UPDATE", ada.account); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if wait, err := newStore(db, time.Now).startLogin(ctx, ada); err != nil || wait == 0 {
		t.Errorf("refused attempt with the row locked: wait %v, %v; want a wait at once", wait, err)
	}
	tx.Rollback()

	// The client's own limit, reached through other accounts.
	for i := range maxClientFailures - 3 - maxAccountFailures {
		if wait := attempt(throttleKeys{client, accountKey(fmt.Sprint(i))}); wait != 0 {
			t.Fatalf("attempt %d refused", i)
		}
	}
	other := throttleKeys{client, accountKey("bob@example.com")}
	if wait := attempt(other); wait == 0 {
		t.Error("a client at its limit may try another account")
	}
	if wait := attempt(throttleKeys{clientKey(netip.MustParseAddr("192.0.2.2")), other.account}); wait != 0 {
		t.Error("another client is blocked too")
	}

	// Once the window has passed, the next failure starts a new one.
	execSQL("UPDATE myapi.login_failures SET reset_at = now() - interval '1 second'")
	s = newStore(db, time.Now) // one that does not remember the block
	if wait := attempt(ada); wait != 0 {
		t.Errorf("after the window: blocked %v", wait)
	}
	expect("a failure after the window", ada, 1, 1)
}

// failures reads the count kept under key, expired or not.
func failures(t testing.TB, db *sql.DB, key []byte) int {
	t.Helper()
	var n int
	err := db.QueryRow("SELECT coalesce(sum(failures), 0) FROM myapi.login_failures WHERE key = $1", key).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

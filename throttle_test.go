package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	createUser(t, env, "Bob", "bob@example.com", "battery staple")
	app := startApp(t, env)

	for i := range maxAccountFailures {
		if res := app.login(t, "ada@example.com", "guess"+strconv.Itoa(i)); res.status != 401 {
			t.Fatalf("failure %d: %d %s", i+1, res.status, res.body)
		}
	}
	// Now even the right password waits: the check does not run.
	res := app.login(t, "ADA@example.com", "correct horse")
	if res.status != 429 || !strings.HasPrefix(res.body, `{"detail":"`) {
		t.Fatalf("after %d failures: %d %s, want 429", maxAccountFailures, res.status, res.body)
	}
	if s, err := strconv.Atoi(res.header.Get("Retry-After")); err != nil || s < 1 || s > int(failureWindow.Seconds()) {
		t.Errorf("Retry-After = %q", res.header.Get("Retry-After"))
	}
	// Another account, from the same client, still logs in.
	if res := app.login(t, "bob@example.com", "battery staple"); res.status != 200 {
		t.Errorf("other account: %d %s", res.status, res.body)
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

	const burst = 3 * maxAccountFailures
	statuses := make(chan int, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() { statuses <- app.login(t, "ada@example.com", "guess"+strconv.Itoa(i)).status })
	}
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts[401] != maxAccountFailures || counts[429] != burst-maxAccountFailures {
		t.Errorf("statuses %v, want %d × 401 and the rest 429", counts, maxAccountFailures)
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	cases := []struct{ remote, xff, want string }{
		{"192.0.2.1:1234", "", "192.0.2.1"},
		{"192.0.2.1:1234", "203.0.113.7", "192.0.2.1"}, // an untrusted peer cannot name itself
		{"10.0.0.5:1234", "203.0.113.7", "203.0.113.7"},
		{"10.0.0.5:1234", "198.51.100.1, 203.0.113.7, 10.0.0.6", "203.0.113.7"},
		{"10.0.0.5:1234", "garbage", "10.0.0.5"},
		{"[::ffff:192.0.2.1]:1234", "", "192.0.2.1"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", "/token", nil)
		r.RemoteAddr = c.remote
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := clientAddr(r, trusted); got.String() != c.want {
			t.Errorf("%s via %q = %s, want %s", c.remote, c.xff, got, c.want)
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

// TestThrottleIsSharedAndKept fails logins on two servers of one database:
// the account's count is one, and a server started later still blocks it.
func TestThrottleIsSharedAndKept(t *testing.T) {
	t.Parallel()
	env := testEnv(t, newTestDatabase(t))
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	a, b := startApp(t, env), startApp(t, env)
	for i := range maxAccountFailures {
		app := []*testApp{a, b}[i%2]
		app.login(t, "ada@example.com", "guess").expect(t, 401, `{"detail":"Incorrect username or password"}`)
	}
	if res := a.login(t, "ada@example.com", "correct horse"); res.status != 429 {
		t.Errorf("server a after failures on both: %d %s, want 429", res.status, res.body)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	if res := startApp(t, env).login(t, "ada@example.com", "correct horse"); res.status != 429 {
		t.Errorf("a server started after the failures: %d %s, want 429", res.status, res.body)
	}
}

// TestThrottleCounts checks what each outcome leaves in the table: a
// success clears the account and takes its attempt back from the client,
// an attempt never judged counts for neither, even when its request is
// gone, a refused one counts for neither, and the window is fixed at the
// first failure.
func TestThrottleCounts(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
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
	if _, err := db.Exec("UPDATE myapi.login_failures SET reset_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	s = newStore(db, time.Now) // one that does not remember the block
	if wait := attempt(ada); wait != 0 {
		t.Errorf("after the window: blocked %v", wait)
	}
	expect("a failure after the window", ada, 1, 1)
}

// TestRefusedAttemptsTakeNoLock holds the row of a blocked account locked:
// a refused attempt must still be answered at once, since it only reads.
func TestRefusedAttemptsTakeNoLock(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
	s := newStore(db, time.Now)
	ada := throttleKeys{client: clientKey(netip.MustParseAddr("192.0.2.1")), account: accountKey("ada@example.com")}
	for range maxAccountFailures {
		if _, err := s.startLogin(t.Context(), ada); err != nil {
			t.Fatal(err)
		}
	}
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
	if wait, err := s.startLogin(ctx, ada); err != nil || wait == 0 {
		t.Errorf("refused attempt with the row locked: wait %v, %v; want a wait at once", wait, err)
	}
}

// TestExpiredFailuresAreDeleted leaves many expired rows: each attempt
// deletes some, and only expired ones.
func TestExpiredFailuresAreDeleted(t *testing.T) {
	t.Parallel()
	db := openTestDB(t, newTestDatabase(t))
	if _, err := db.Exec(`INSERT INTO myapi.login_failures (key, failures, reset_at)
		SELECT sha256(i::text::bytea), 1, now() - interval '1 minute' FROM generate_series(1, 25) AS i`); err != nil {
		t.Fatal(err)
	}
	s := newStore(db, time.Now)
	for i := range 3 {
		if _, err := s.startLogin(t.Context(), throttleKeys{clientKey(netip.MustParseAddr("192.0.2.1")), accountKey(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	var expired, live int
	if err := db.QueryRow("SELECT count(*) FILTER (WHERE reset_at <= now()), count(*) FILTER (WHERE reset_at > now()) FROM myapi.login_failures").Scan(&expired, &live); err != nil {
		t.Fatal(err)
	}
	if expired != 0 || live != 4 {
		t.Errorf("%d expired and %d live rows left, want 0 and 4", expired, live)
	}
}

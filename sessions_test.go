package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// offlineLogin logs in with offline_access and returns the grant.
func offlineLogin(t testing.TB, a *testApp, email, password string) tokenResponse {
	t.Helper()
	form := url.Values{"username": {email}, "password": {password}, "scope": {"offline_access"}}
	res := a.do(t, "POST", "/token", formHeader, strings.NewReader(form.Encode()))
	var g tokenResponse
	decodeJSON(t, res.body, &g)
	if res.status != 200 || g.RefreshToken == "" {
		t.Fatalf("offline login %s: %d %s", email, res.status, res.body)
	}
	return g
}

// postForm posts a form of name, value pairs to path.
func (a *testApp) postForm(t testing.TB, path string, fields ...string) response {
	t.Helper()
	form := url.Values{}
	for i := 0; i+1 < len(fields); i += 2 {
		form.Add(fields[i], fields[i+1])
	}
	return a.do(t, "POST", path, formHeader, strings.NewReader(form.Encode()))
}

// refresh posts the refresh grant with rt.
func (a *testApp) refresh(t testing.TB, rt string) response {
	t.Helper()
	return a.postForm(t, "/token", "grant_type", "refresh_token", "refresh_token", rt)
}

// refreshed checks that res is a refresh's 200 and returns its grant.
func refreshed(t testing.TB, res response) tokenResponse {
	t.Helper()
	var g tokenResponse
	decodeJSON(t, res.body, &g)
	if res.status != 200 || g.AccessToken == "" || g.RefreshToken == "" || g.ExpiresIn <= 0 || g.TokenType != "bearer" {
		t.Fatalf("refresh: %d %s", res.status, res.body)
	}
	res.expectHeader(t, "Cache-Control", "no-store")
	return g
}

const (
	invalidGrant = `{"error":"invalid_grant","error_description":"The refresh token is invalid, expired or revoked","detail":"The refresh token is invalid, expired or revoked"}`
	reusedGrant  = `{"error":"invalid_grant","error_description":"The refresh token was used before: the session has ended","detail":"The refresh token was used before: the session has ended"}`
	badCreds     = `{"detail":"Invalid credentials"}`
)

// TestLoginOpensASession: a plain login keeps the original's two members,
// and its token a session; offline_access adds a refresh token, which
// rotates, and is never a bearer token, nor the reverse.
func TestLoginOpensASession(t *testing.T) {
	t.Parallel()
	_, env := databaseWithAda(t)
	app := startApp(t, env)
	plain := app.login(t, "ada@example.com", "correct horse")
	var keys map[string]any
	decodeJSON(t, plain.body, &keys)
	if len(keys) != 2 || keys["token_type"] != "bearer" {
		t.Errorf("a login without offline_access: %s, want access_token and token_type alone", plain.body)
	}
	claims, err := verifyToken(keys["access_token"].(string), [][]byte{[]byte(testTokenKey)}, time.Now())
	if err != nil || len(claims.Sid) < 26 {
		t.Errorf("the token's sid is %q (%v), want a session's id", claims.Sid, err)
	}

	// scope is a list separated by spaces (RFC 6749 §3.3), its tokens case-sensitive.
	for scope, offline := range map[string]bool{"openid offline_access": true, "openid\toffline_access": false, "OFFLINE_ACCESS": false} {
		res := app.postForm(t, "/token", "username", "ada@example.com", "password", "correct horse", "scope", scope)
		if strings.Contains(res.body, "refresh_token") != offline {
			t.Errorf("scope %q: %s", scope, res.body)
		}
	}
	g := offlineLogin(t, app, "ada@example.com", "correct horse")
	if g.ExpiresIn != 3600 {
		t.Errorf("expires_in = %d, want the token's 3600", g.ExpiresIn)
	}
	app.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 200, `{"id":1,"name":"Ada","email":"ada@example.com"}`)
	next := refreshed(t, app.refresh(t, g.RefreshToken))
	if next.RefreshToken == g.RefreshToken {
		t.Error("a refresh did not rotate the refresh token")
	}
	for _, tok := range []string{g.AccessToken, next.AccessToken} {
		app.do(t, "GET", "/users/me", bearer(tok), nil).expect(t, 200, `{"id":1,"name":"Ada","email":"ada@example.com"}`)
	}
	// Neither kind passes for the other, nor any other spelling.
	app.refresh(t, next.AccessToken).expect(t, 400, invalidGrant)
	app.do(t, "GET", "/users/me", bearer(next.RefreshToken), nil).expect(t, 401, badCreds)
	rt := next.RefreshToken
	for _, forged := range []string{strings.ToLower(rt), rt[:len(rt)-1] + "A", rt + "=", " " + rt, strings.Replace(rt, ".1.", ".01.", 1), "x"} {
		if forged != rt {
			app.refresh(t, forged).expect(t, 400, invalidGrant)
		}
	}
	app.refresh(t, "").expect(t, 400, `{"error":"invalid_request","error_description":"refresh_token is missing","detail":"refresh_token is missing"}`)
	refreshed(t, app.refresh(t, rt)) // the forgeries did not end the session
}

// TestRefreshReuseWindow: the token the latest refresh replaced gets that
// refresh's answer again for reuseWindow; later, or any older token, is
// reuse, which ends the session and its access tokens at once.
func TestRefreshReuseWindow(t *testing.T) {
	t.Parallel()
	dsn, env := databaseWithAda(t)
	app := startApp(t, env)
	db := openTestDB(t, dsn)
	g0 := offlineLogin(t, app, "ada@example.com", "correct horse")
	g1 := refreshed(t, app.refresh(t, g0.RefreshToken))
	again := refreshed(t, app.refresh(t, g0.RefreshToken)) // a lost answer, retried
	if again.RefreshToken != g1.RefreshToken {
		t.Errorf("the replaced token refreshed to %q, want the same new token %q", again.RefreshToken, g1.RefreshToken)
	}
	g2 := refreshed(t, app.refresh(t, g1.RefreshToken))
	app.refresh(t, g0.RefreshToken).expect(t, 400, reusedGrant) // older than the one replaced
	app.refresh(t, g2.RefreshToken).expect(t, 400, invalidGrant)
	app.do(t, "GET", "/users/me", bearer(g2.AccessToken), nil).expect(t, 401, badCreds)

	// The replaced token, after the window.
	h0 := offlineLogin(t, app, "ada@example.com", "correct horse")
	h1 := refreshed(t, app.refresh(t, h0.RefreshToken))
	mustExec(t, db, "UPDATE myapi.sessions SET rotated_at = rotated_at - $1 * interval '1 second'", reuseWindow.Seconds())
	app.refresh(t, h0.RefreshToken).expect(t, 400, reusedGrant)
	app.refresh(t, h1.RefreshToken).expect(t, 400, invalidGrant)
	app.do(t, "GET", "/users/me", bearer(h1.AccessToken), nil).expect(t, 401, badCreds)
	if logs := app.logs.String(); strings.Count(logs, "refresh token reused") != 2 {
		t.Errorf("want two reuses in the log at WARN:\n%s", logs)
	}
}

// TestConcurrentRefreshesConverge refreshes one token at once, from
// clients of two servers on one database: every refresh succeeds with the
// same new refresh token, which then works; nothing is reuse.
func TestConcurrentRefreshesConverge(t *testing.T) {
	t.Parallel()
	_, env := databaseWithAda(t)
	servers := []*testApp{startApp(t, env), startApp(t, env)}
	for round := range 3 {
		g := offlineLogin(t, servers[0], "ada@example.com", "correct horse")
		var wg sync.WaitGroup
		got := make([]string, 16)
		for i := range got {
			wg.Go(func() {
				res := servers[i%2].refresh(t, g.RefreshToken)
				var next tokenResponse
				if json.Unmarshal([]byte(res.body), &next); res.status != 200 {
					t.Errorf("round %d: refresh %d: %d %s", round, i, res.status, res.body)
				}
				got[i] = next.RefreshToken
			})
		}
		wg.Wait()
		for i := range got {
			if got[i] != got[0] {
				t.Fatalf("round %d: concurrent refreshes answered different tokens: %q", round, got)
			}
		}
		refreshed(t, servers[1].refresh(t, got[0]))
	}
}

// TestLogouts: /revoke with either token, DELETE /sessions/{id} and
// DELETE /sessions each end what they say, and only that, on the server
// that served them at once and on every other within cacheTTL.
func TestLogouts(t *testing.T) {
	t.Parallel()
	_, env := databaseWithAda(t)
	createUser(t, env, "Bob", "bob@example.com", "correct horse")
	a, b := startApp(t, env), startApp(t, env)
	login := func() (tokenResponse, http.Header) {
		g := offlineLogin(t, a, "ada@example.com", "correct horse")
		b.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 200, `{"id":1,"name":"Ada","email":"ada@example.com"}`)
		return g, bearer(g.AccessToken)
	}
	ended := func(g tokenResponse) {
		t.Helper()
		a.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 401, badCreds)
		a.refresh(t, g.RefreshToken).expect(t, 400, invalidGrant)
		time.Sleep(cacheTTL)
		b.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 401, badCreds)
	}

	g, _ := login()
	a.postForm(t, "/revoke", "token", g.RefreshToken, "token_type_hint", "access_token").expect(t, 200, ``)
	ended(g)
	g, _ = login()
	a.postForm(t, "/revoke", "token", g.AccessToken).expect(t, 200, ``)
	ended(g)
	a.postForm(t, "/revoke", "token", "nothing at all").expect(t, 200, ``)
	a.postForm(t, "/revoke").expect(t, 400, `{"error":"invalid_request","error_description":"token is missing","detail":"token is missing"}`)

	g, auth := login()
	other, _ := login()
	var list []session
	decodeJSON(t, a.do(t, "GET", "/sessions", auth, nil).body, &list)
	if len(list) != 2 || list[0].ID != other.sid(t) || list[0].Current || !list[1].Current || list[1].ID != g.sid(t) {
		t.Fatalf("sessions %+v: want the newer first, and the caller's marked current", list)
	}
	bob := bearer(b.token(t, "bob@example.com", "correct horse"))
	b.do(t, "DELETE", "/sessions/"+other.sid(t), bob, nil).expect(t, 404, `{"detail":"Session not found"}`)
	for _, id := range []string{"unknown", "%ff%00", other.sid(t) + "x"} {
		a.do(t, "DELETE", "/sessions/"+id, auth, nil).expect(t, 404, `{"detail":"Session not found"}`)
	}
	a.do(t, "DELETE", "/sessions/", auth, nil).expect(t, 404, `{"detail":"Not Found"}`) // no redirect to DELETE /sessions
	a.do(t, "DELETE", "/sessions/"+other.sid(t), auth, nil).expect(t, 204, ``)
	ended(other)
	a.do(t, "GET", "/users/me", auth, nil).expect(t, 200, `{"id":1,"name":"Ada","email":"ada@example.com"}`)

	third, _ := login()
	a.do(t, "DELETE", "/sessions", auth, nil).expect(t, 204, ``)
	ended(g)
	ended(third)
	b.do(t, "GET", "/users/me", bob, nil).expect(t, 200, `{"id":2,"name":"Bob","email":"bob@example.com"}`)
	_, auth = login()
	if res := a.do(t, "GET", "/sessions", auth, nil); strings.Count(res.body, "session_id") != 1 {
		t.Errorf("after logging out everywhere and in again: %s, want one session", res.body)
	}
}

// sid is the session id in a grant's access token.
func (g tokenResponse) sid(t testing.TB) string {
	t.Helper()
	c, err := verifyToken(g.AccessToken, [][]byte{[]byte(testTokenKey)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c.Sid
}

// TestSessionLifetimes: an access token never outlives its session, which
// lasts MYAPI_SESSION_TTL from login, however often it refreshes, and ends
// MYAPI_SESSION_IDLE after its latest refresh, by the database's clock:
// this server's runs 40 days ahead, past the default 30-day lifetime.
func TestSessionLifetimes(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db := openTestDB(t, dsn)
	app := startApp(t, testEnv(t, dsn, "MYAPI_SESSION_TTL", "45s", "MYAPI_SESSION_IDLE", "30s"))
	g := offlineLogin(t, app, "ada@example.com", "correct horse")
	if g.ExpiresIn != 30 {
		t.Errorf("expires_in = %d, want the idle limit, 30", g.ExpiresIn)
	}
	mustExec(t, db, "UPDATE myapi.sessions SET expires_at = now() + interval '20 seconds', ends_at = least(ends_at, now() + interval '20 seconds')")
	g = refreshed(t, app.refresh(t, g.RefreshToken))
	c, _ := verifyToken(g.AccessToken, [][]byte{[]byte(testTokenKey)}, time.Now())
	if g.ExpiresIn > 20 || c.ExpiresAt.Sub(c.IssuedAt) > 20*time.Second {
		t.Errorf("expires_in %d, exp %v after iat: past the session's end, 20s away", g.ExpiresIn, c.ExpiresAt.Sub(c.IssuedAt))
	}
	var extended bool
	if err := db.QueryRow("SELECT bool_or(ends_at > expires_at OR expires_at > now() + interval '20 seconds') FROM myapi.sessions").Scan(&extended); err != nil || extended {
		t.Errorf("a refresh extended a session (%v)", err)
	}

	clock := &testClock{t: time.Now().Add(40 * 24 * time.Hour)}
	ahead := serveHandler(t, newHandler(testDepsAt(t, dsn, clock.now)))
	g = offlineLogin(t, ahead, "ada@example.com", "correct horse")
	g = refreshed(t, ahead.refresh(t, g.RefreshToken))
	ahead.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 200, `{"id":1,"name":"Ada","email":"ada@example.com"}`)
	mustExec(t, db, "UPDATE myapi.sessions SET ends_at = now() WHERE ends_at > now()") // as if idle too long
	ahead.refresh(t, g.RefreshToken).expect(t, 400, invalidGrant)
	clock.add(cacheTTL)
	ahead.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 401, badCreds)
}

// TestLoginsDeleteEndedSessions: each login deletes up to ten ended
// sessions, of any account, and never a live one.
func TestLoginsDeleteEndedSessions(t *testing.T) {
	t.Parallel()
	dsn, env := databaseWithAda(t)
	db := openTestDB(t, dsn)
	app := startApp(t, env)
	live := offlineLogin(t, app, "ada@example.com", "correct horse")
	mustExec(t, db, `INSERT INTO myapi.sessions (session_id, user_id, expires_at, ends_at, user_agent)
		SELECT 'ended-' || i, 1, now(), now() - i * interval '1 second', '' FROM generate_series(1, 15) AS i`)
	count := func() (ended, all int) {
		t.Helper()
		if err := db.QueryRow("SELECT count(*) FILTER (WHERE ends_at <= now()), count(*) FROM myapi.sessions").Scan(&ended, &all); err != nil {
			t.Fatal(err)
		}
		return ended, all
	}
	app.token(t, "ada@example.com", "correct horse")
	if ended, all := count(); ended != 5 || all != 5+2 {
		t.Errorf("after a login: %d ended sessions of %d, want 5 of 7", ended, all)
	}
	app.token(t, "ada@example.com", "correct horse")
	if ended, all := count(); ended != 0 || all != 3 {
		t.Errorf("after two logins: %d ended sessions of %d, want 0 of 3", ended, all)
	}
	refreshed(t, app.refresh(t, live.RefreshToken))
}

// TestForgedRefreshTokensCostNothing: a refresh token that no key made is
// refused before any query, so with the database down it is still 400,
// while a real one is 503.
func TestForgedRefreshTokensCostNothing(t *testing.T) {
	t.Parallel()
	dsn, env := databaseWithAda(t)
	app := startApp(t, env)
	g := offlineLogin(t, app, "ada@example.com", "correct horse")
	other := refreshToken([]byte("another-key-0123456789-0123456789-0123"), g.sid(t), 0)
	takeDatabaseDown(t, dsn)
	for _, forged := range []string{other, g.RefreshToken + "x", "a.b.c", strings.Repeat("A", 5000)} {
		app.refresh(t, forged).expect(t, 400, invalidGrant)
	}
	app.refresh(t, g.RefreshToken).expect(t, 503, `{"detail":"Service unavailable"}`)
}

// TestAccountChangesEndSessions: set-password, logout-everywhere and
// delete-user end every session of the account on every server by the time
// they return; the account's other sessions only, and never another's.
func TestAccountChangesEndSessions(t *testing.T) {
	t.Parallel()
	_, env := databaseWithAda(t)
	createUser(t, env, "Bob", "bob@example.com", "correct horse")
	a, b := startApp(t, env), startApp(t, env)
	bob := offlineLogin(t, a, "bob@example.com", "correct horse")
	for _, args := range [][]string{
		{"logout-everywhere", "-email", "ada@example.com"},
		{"set-password", "-email", "ada@example.com", "-password", "correct horse"},
		{"delete-user", "-email", "ada@example.com"},
	} {
		g := offlineLogin(t, a, "ada@example.com", "correct horse")
		b.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 200, `{"id":1,"name":"Ada","email":"ada@example.com"}`)
		if out, stderr, err := runCmd(t, env, "", args...); err != nil {
			t.Fatalf("%s: %v\n%s%s", args[0], err, out, stderr)
		}
		b.do(t, "GET", "/users/me", bearer(g.AccessToken), nil).expect(t, 401, badCreds)
		b.refresh(t, g.RefreshToken).expect(t, 400, invalidGrant)
	}
	bob = refreshed(t, b.refresh(t, bob.RefreshToken))
	a.do(t, "GET", "/users/me", bearer(bob.AccessToken), nil).expect(t, 200, `{"id":2,"name":"Bob","email":"bob@example.com"}`)
	if _, _, err := runCmd(t, env, "", "logout-everywhere", "-email", "ada@example.com"); err == nil || err.Error() != "logout-everywhere: no user with email ada@example.com" {
		t.Errorf("logout-everywhere of no user: %v", err)
	}
}

// FuzzParseRefreshToken: what a key makes parses back to its session and
// generation, and any text that parses is exactly what the key makes of
// them; the other key's tokens parse too, as rotation needs.
func FuzzParseRefreshToken(f *testing.F) {
	f.Add("N4TAYJJFUQE4QVDLTRXOPSGDOO", int64(7), "N4TAYJJFUQE4QVDLTRXOPSGDOO.07.x")
	f.Add("", int64(-1), "..")
	keys := [][]byte{[]byte(testTokenKey), []byte("previous-key-0123456789-0123456789-01")}
	f.Fuzz(func(t *testing.T, sid string, gen int64, text string) {
		for _, key := range keys {
			rt := refreshToken(key, sid, gen)
			gotSid, gotGen, ok := parseRefreshToken(rt, keys)
			if (!ok || gotSid != sid || gotGen != gen) && !strings.Contains(sid, ".") && len(rt) <= maxTokenBytes {
				t.Errorf("%q parses as %q, %d, %v", rt, gotSid, gotGen, ok)
			}
		}
		if sid, gen, ok := parseRefreshToken(text, keys); ok && refreshToken(keys[0], sid, gen) != text && refreshToken(keys[1], sid, gen) != text {
			t.Errorf("%q parses as session %q, generation %d, which no key spells so", text, sid, gen)
		}
	})
}

// TestRefreshThatWaitedPastALogout: a refresh that started before a logout
// and waited for a lock until after it finds the session ended, whatever
// its statement's start time says. One connection, whose prepared refresh
// then waits in its own transaction, which now() dates.
func TestRefreshThatWaitedPastALogout(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	app := startApp(t, testEnv(t, dsn, "MYAPI_DB_MAX_CONNS", "1"))
	g := refreshed(t, app.refresh(t, offlineLogin(t, app, "ada@example.com", "correct horse").RefreshToken))
	lock := lockTables(t, dsn, "ACCESS EXCLUSIVE", "myapi.users") // a migration, say
	done := make(chan response, 1)
	go func() { done <- app.refresh(t, g.RefreshToken) }()
	time.Sleep(1500 * time.Millisecond)
	mustExec(t, openTestDB(t, dsn), "UPDATE myapi.sessions SET ends_at = now()") // as /revoke ends it
	lock.Rollback()
	(<-done).expect(t, 400, invalidGrant)
}

// TestLoginRacingDeleteUser: an account deleted between a login's password
// check and its new session is a failed login, not a 500.
func TestLoginRacingDeleteUser(t *testing.T) {
	t.Parallel()
	dsn, env := databaseWithAda(t)
	app := startApp(t, env)
	lock := lockTables(t, dsn, "SHARE", "myapi.sessions") // holds the login at its new session
	done := make(chan response, 1)
	go func() { done <- app.login(t, "ada@example.com", "correct horse") }()
	time.Sleep(500 * time.Millisecond)
	deleted := make(chan error, 1)
	go func() { _, _, err := runCmd(t, env, "", "delete-user", "-email", "ada@example.com"); deleted <- err }()
	time.Sleep(500 * time.Millisecond) // the deletion holds the account's row, and waits too
	lock.Rollback()
	(<-done).expect(t, 401, `{"detail":"Incorrect username or password"}`)
	if err := <-deleted; err != nil {
		t.Error(err)
	}
}

// TestRefreshUnderAPreviousKey: a refresh token made under a key that has
// since moved to MYAPI_TOKEN_KEY_PREVIOUS still refreshes, to tokens under
// the new key; with the old key gone, it no longer does.
func TestRefreshUnderAPreviousKey(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	first := startApp(t, testEnv(t, dsn))
	const newKey = "rotated-key-0123456789-0123456789-0123456789"
	rotated := startApp(t, testEnv(t, dsn, "MYAPI_TOKEN_KEY", newKey, "MYAPI_TOKEN_KEY_PREVIOUS", testTokenKey))
	g := refreshed(t, rotated.refresh(t, offlineLogin(t, first, "ada@example.com", "correct horse").RefreshToken))
	if _, _, ok := parseRefreshToken(g.RefreshToken, [][]byte{[]byte(newKey)}); !ok {
		t.Errorf("the new refresh token %q is not under the new key", g.RefreshToken)
	}
	gone := startApp(t, testEnv(t, dsn, "MYAPI_TOKEN_KEY", newKey))
	gone.refresh(t, offlineLogin(t, first, "ada@example.com", "correct horse").RefreshToken).expect(t, 400, invalidGrant)
}

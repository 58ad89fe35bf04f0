package main

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Login throttling. A login attempt counts as a failure for its client
// address and its account when it starts; past a limit, attempts get 429
// without a password check. The counts live in PostgreSQL, so every replica
// shares them and a restart forgets nothing.
const (
	failureWindow      = 15 * time.Minute
	maxAccountFailures = 5  // a person mistyping does not reach it
	maxClientFailures  = 20 // several people behind one NAT do not either
)

// loginKeys are the two throttle keys of a login attempt.
type loginKeys struct{ client, account []byte }

// accountKey is the throttle key of an account: case variants of an email
// count together. Keys are hashed, so any bytes a client sends as a username
// make a valid key, and strangers' typed emails are not kept.
func accountKey(email string) []byte {
	sum := sha256.Sum256([]byte("a:" + strings.ToLower(email)))
	return sum[:]
}

// clientKey is the throttle key of a client address. IPv6 clients count by
// their /64, which one host usually owns whole.
func clientKey(a netip.Addr) []byte {
	a = a.Unmap()
	id := a.String()
	if a.Is6() {
		p, _ := a.Prefix(64)
		id = p.String()
	}
	sum := sha256.Sum256([]byte("c:" + id))
	return sum[:]
}

// blockedSQL returns how many seconds the client ($1) or the account ($2)
// must wait, or 0. It is a plain read, so that a flood of refused attempts
// takes no row lock and no write.
const blockedSQL = `
SELECT coalesce(max(ceil(extract(epoch FROM reset_at - now()))), 0)::int
FROM myapi.login_failures
WHERE reset_at > now()
  AND (key = $1 AND failures >= $3 OR key = $2 AND failures >= $4)`

// countSQL counts a failure for the client ($1) and the account ($2),
// starting a key's window at its first failure, and returns how many
// seconds a key now past its limit must wait, or 0. Row locks serialise
// concurrent attempts, taken in one order by all. It also deletes a few
// expired rows.
const countSQL = `
WITH expired AS (
    DELETE FROM myapi.login_failures WHERE key IN (
        SELECT key FROM myapi.login_failures
        WHERE reset_at <= now() AND key <> $1 AND key <> $2
        ORDER BY reset_at LIMIT 10 FOR UPDATE SKIP LOCKED)),
counted AS (
    INSERT INTO myapi.login_failures AS f (key, failures, reset_at)
    SELECT k, 1, now() + $3 * interval '1 second' FROM unnest(ARRAY[$1, $2]::bytea[]) AS k ORDER BY k
    ON CONFLICT (key) DO UPDATE SET
        failures = CASE WHEN f.reset_at > now() THEN f.failures + 1 ELSE 1 END,
        reset_at = CASE WHEN f.reset_at > now() THEN f.reset_at ELSE excluded.reset_at END
    RETURNING key, failures, reset_at)
SELECT coalesce(max(ceil(extract(epoch FROM reset_at - now()))), 0)::int
FROM counted
WHERE key = $1 AND failures > $4 OR key = $2 AND failures > $5`

// startLogin counts a login attempt as a failure for both keys, in the
// same transaction that checks both limits, so that concurrent guesses
// never get past them. When either key is at its limit it counts for
// neither and returns how long to wait.
func (s *store) startLogin(ctx context.Context, k loginKeys) (wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var secs int
	err = s.db.QueryRowContext(ctx, blockedSQL, k.client, k.account, maxClientFailures, maxAccountFailures).Scan(&secs)
	if err != nil || secs > 0 {
		return time.Duration(secs) * time.Second, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() // unless committed: an attempt past a limit counts for neither key
	err = tx.QueryRowContext(ctx, countSQL, k.client, k.account, int(failureWindow.Seconds()),
		maxClientFailures, maxAccountFailures).Scan(&secs)
	if err != nil || secs > 0 {
		return time.Duration(secs) * time.Second, err
	}
	return 0, tx.Commit()
}

// endLogin takes back the failure startLogin counted, for an attempt that
// succeeded or was never judged. A success also clears the account's
// failures; the client's stay, or one valid account would let an attacker
// reset them. It runs even when the client has gone.
func (s *store) endLogin(ctx context.Context, log *slog.Logger, k loginKeys, succeeded bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queryTimeout)
	defer cancel()
	_, err := s.db.ExecContext(ctx, `
UPDATE myapi.login_failures
SET failures = CASE WHEN key = $2 AND $3 THEN 0 ELSE failures - 1 END
WHERE key IN ($1, $2) AND failures > 0`, k.client, k.account, succeeded)
	if err != nil {
		log.LogAttrs(ctx, slog.LevelError, "take back a login attempt", slog.String("error", err.Error()))
	}
}

// clearFailures forgets the failures counted under key.
func (s *store) clearFailures(ctx context.Context, key []byte) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	_, err := s.db.ExecContext(ctx, "DELETE FROM myapi.login_failures WHERE key = $1", key)
	return err
}

// clientAddr is the connection's address, or, from a trusted proxy, the last
// address in X-Forwarded-For that is not one.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	addr := remoteAddr(r.RemoteAddr)
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	if !isTrusted(addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		if addr = hop.Unmap(); !isTrusted(addr) {
			break
		}
	}
	return addr
}

func remoteAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

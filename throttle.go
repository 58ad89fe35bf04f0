package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Login throttling: an attempt counts as a failure for its client address and
// its account when it starts; past a limit, attempts get 429 with no password
// check. The counts live in PostgreSQL: replicas share them, restarts keep them.
const (
	failureWindow      = 15 * time.Minute
	maxAccountFailures = 5  // a person mistyping does not reach it
	maxClientFailures  = 20 // several people behind one NAT do not either
)

// throttleKeys are the two keys a login attempt counts under.
type throttleKeys struct{ client, account []byte }

// accountKey is the throttle key of an account, case variants of an email
// together, hashed: any bytes make a key, and no typed email is kept.
func accountKey(email string) []byte {
	sum := sha256.Sum256([]byte("a:" + strings.ToLower(email)))
	return sum[:]
}

// clientKey is the throttle key of a client address; IPv6, of its /64.
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

// blockedSQL returns the client's ($1) or account's ($2) key past its limit,
// with its wait: a plain read, so that refusals take no lock and write nothing.
const blockedSQL = `
SELECT key, extract(epoch FROM reset_at - now())::float8
FROM myapi.login_failures
WHERE reset_at > now()
  AND (key = $1 AND failures >= $3 OR key = $2 AND failures >= $4)`

// countSQL counts a failure for the client ($1) and the account ($2), a key's
// window starting at its first failure, and returns how many seconds a key now
// past its limit must wait, or 0. Row locks, taken in one order by all,
// serialise concurrent attempts. It also deletes a few expired rows.
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

// startLogin counts a login attempt as a failure for both keys in the same
// transaction that checks both limits, so that concurrent guesses never get
// past them. A key at its limit counts for neither: it returns the wait.
func (s *store) startLogin(ctx context.Context, k throttleKeys) (wait time.Duration, err error) {
	if wait, err := s.blockedFor(ctx, k); wait > 0 || err != nil {
		return wait, err
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() // unless committed: an attempt past a limit counts for neither key
	var secs int
	err = tx.QueryRowContext(ctx, countSQL, k.client, k.account, int(failureWindow.Seconds()),
		maxClientFailures, maxAccountFailures).Scan(&secs)
	if err != nil || secs > 0 {
		return time.Duration(secs) * time.Second, err
	}
	return 0, tx.Commit()
}

// blockedFor returns how long the client or the account must wait, or 0,
// caching blocks: a flood of refusals costs a read a second per key.
func (s *store) blockedFor(ctx context.Context, k throttleKeys) (time.Duration, error) {
	now := s.blocked.now()
	var wait time.Duration
	for _, key := range [][]byte{k.client, k.account} {
		if until, ok := s.blocked.get(string(key)); ok {
			wait = max(wait, until.Sub(now))
		}
	}
	if wait > 0 {
		return wait, nil
	}
	type block struct {
		key  []byte
		secs float64
	}
	blocks, err := queryAll(ctx, s.db, blockedSQL, []any{k.client, k.account, maxClientFailures, maxAccountFailures},
		func(b *block) []any { return []any{&b.key, &b.secs} })
	if err != nil {
		return 0, err
	}
	for _, b := range blocks {
		d := time.Duration(b.secs * float64(time.Second))
		s.blocked.put(string(b.key), now.Add(d), now)
		wait = max(wait, d)
	}
	return wait, nil
}

// endLogin takes back the failure startLogin counted, for an attempt that
// succeeded or was never judged, even when the client has gone. A success
// also clears the account's failures, not the client's: one valid account
// must not let an attacker reset them.
func (s *store) endLogin(ctx context.Context, log *slog.Logger, k throttleKeys, succeeded bool) {
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
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	addr, _ := netip.ParseAddr(cmp.Or(host, r.RemoteAddr)) // RemoteAddr may lack a port
	addr = addr.Unmap()
	isTrusted := func(a netip.Addr) bool {
		return slices.ContainsFunc(trusted, func(p netip.Prefix) bool { return p.Contains(a) })
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0 && isTrusted(addr); i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: the last trusted address stands
		}
		addr = hop.Unmap()
	}
	return addr
}

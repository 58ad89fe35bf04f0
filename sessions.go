package main

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Every password login opens a session, a row of myapi.sessions, whose id
// its access tokens carry (sid). With offline_access it also gets a refresh
// token, "<session id>.<generation>.<MAC of both>", which rotates at every
// use (RFC 9700 §2.2.2). The table keeps no MAC: a dump refreshes nothing,
// and a forgery is refused before any query. Lifetimes run on the database's clock.

// reuseWindow is how long the token the latest refresh replaced still gets
// that refresh's answer: two tabs, or a retry after a lost answer, converge.
const reuseWindow = 10 * time.Second

// session is a live session, as GET /sessions lists it.
type session struct {
	ID         string    `json:"session_id"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	UserAgent  string    `json:"user_agent"`
	Current    bool      `json:"current"`
}

// tokenResponse is a grant's body (RFC 6749 §5.1); without a refresh token, the original's.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

var errReused = errors.New("refresh token reused")

// grant answers with an access token for u in session sid, living at most
// d.tokenTTL and left, and with refresh the refresh token of generation gen.
func grant(w http.ResponseWriter, d deps, u user, sid string, gen int64, left time.Duration, refresh bool) {
	now := d.now()
	c := tokenClaims{Sub: u.Email, Name: u.Name, Stamp: u.Stamp, Sid: sid, IssuedAt: now, ExpiresAt: now.Add(min(d.tokenTTL, left))}
	res := tokenResponse{AccessToken: signToken(d.keys[0], c), TokenType: "bearer"}
	if refresh {
		res.ExpiresIn = c.ExpiresAt.Unix() - now.Unix() // as exp is written
		res.RefreshToken = refreshToken(d.keys[0], sid, gen)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, res)
}

// refreshToken is session sid's refresh token of generation gen. Its key is
// derived from key, so that no refresh token's MAC is an access token's.
func refreshToken(key []byte, sid string, gen int64) string {
	body := sid + "." + strconv.FormatInt(gen, 10)
	return body + "." + b64.EncodeToString(hs256(hs256(key, "myapi refresh token"), body))
}

// parseRefreshToken returns the session and generation of rt if one of keys
// made this very text, compared in constant time: no other spelling passes.
func parseRefreshToken(rt string, keys [][]byte) (sid string, gen int64, ok bool) {
	sid, rest, _ := strings.Cut(rt, ".")
	genText, _, _ := strings.Cut(rest, ".")
	gen, err := strconv.ParseInt(genText, 10, 64)
	for _, key := range keys {
		if err == nil && len(rt) <= maxTokenBytes && len(key) > 0 && hmac.Equal([]byte(refreshToken(key, sid, gen)), []byte(rt)) {
			return sid, gen, true
		}
	}
	return "", 0, false
}

// refreshGrant is POST /token with grant_type=refresh_token (RFC 6749 §6).
// Its errors are §5.2's 400s, never a 401, which clients answer by refreshing.
func refreshGrant(w http.ResponseWriter, r *http.Request, d deps, rt string) {
	if rt == "" {
		oauthError(w, r, "invalid_request", "refresh_token is missing")
		return
	}
	sid, gen, ok := parseRefreshToken(rt, d.keys)
	u, left, err := user{}, time.Duration(0), errNotFound // a forgery costs no query
	if ok {
		u, gen, left, err = d.store.refresh(r.Context(), sid, gen, d.sessionIdle)
	}
	switch {
	case errors.Is(err, errNotFound):
		oauthError(w, r, "invalid_grant", "The refresh token is invalid, expired or revoked")
	case errors.Is(err, errReused):
		d.log.LogAttrs(r.Context(), slog.LevelWarn, "refresh token reused: session ended", slog.String("user", u.Email))
		oauthError(w, r, "invalid_grant", "The refresh token was used before: the session has ended")
	case err != nil:
		databaseFailed(w, r, d.log, err)
	default:
		grant(w, d, u, sid, gen, left, true)
	}
}

// handleRevoke is POST /revoke (RFC 7009): it ends the session of a refresh
// or access token, whatever the hint, and answers 200 whatever it was (§2.2).
func handleRevoke(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := readForm(w, r)
		if err != nil {
			unreadableBody(w, r, err)
			return
		}
		token := f.get("token")
		if token == "" {
			oauthError(w, r, "invalid_request", "token is missing")
			return
		}
		sid, _, ok := parseRefreshToken(token, d.keys)
		if !ok {
			claims, _ := verifyToken(token, d.keys, d.now()) // no Sid unless valid
			sid = claims.Sid
		}
		if sid != "" {
			if err := d.store.endSession(r.Context(), sid, ""); err != nil && !errors.Is(err, errNotFound) {
				databaseFailed(w, r, d.log, err)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	})
}

// handleListSessions is GET /sessions: the caller's live sessions.
func handleListSessions(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sessions, err := d.store.sessions(r.Context(), currentCaller(r))
		if err != nil {
			databaseFailed(w, r, d.log, err)
			return
		}
		writeJSON(w, http.StatusOK, sessions)
	})
}

// handleEndSession is DELETE /sessions/{session_id}: another's is unknown.
func handleEndSession(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := d.store.endSession(r.Context(), r.PathValue("session_id"), currentCaller(r).Email)
		switch {
		case errors.Is(err, errNotFound):
			sessionNotFound(w, r)
		case err != nil:
			databaseFailed(w, r, d.log, err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
}

// handleEndAllSessions is DELETE /sessions: log out everywhere.
func handleEndAllSessions(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := d.store.logoutEverywhere(r.Context(), currentCaller(r).Email)
		if err != nil && !errors.Is(err, errNotFound) { // not found: deleted since, sessions and all
			databaseFailed(w, r, d.log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// userAgent is the request's User-Agent cut to 256 bytes, as PostgreSQL
// text: net/http refuses a NUL, and ToValidUTF8 drops bad bytes and a cut rune.
func userAgent(r *http.Request) string {
	ua := r.UserAgent()
	return strings.ToValidUTF8(ua[:min(len(ua), 256)], "")
}

// openSession opens a session for u with a new id, and deletes up to ten
// ended sessions of any account: the table stays small, with nothing in the
// background. ttl and idle are MYAPI_SESSION_TTL and MYAPI_SESSION_IDLE.
func (s *store) openSession(ctx context.Context, u user, userAgent string, ttl, idle time.Duration) (sid string, err error) {
	err = queryRow(ctx, s.db, `
WITH ended AS (
    DELETE FROM myapi.sessions WHERE session_id IN (
        SELECT session_id FROM myapi.sessions WHERE ends_at <= now()
        ORDER BY ends_at LIMIT 10 FOR UPDATE SKIP LOCKED))
INSERT INTO myapi.sessions (session_id, user_id, stamp, expires_at, ends_at, user_agent)
VALUES ($1, $2, nullif($3, ''), now() + $4 * interval '1 second', now() + least($4, $5) * interval '1 second', $6)
RETURNING session_id`, []any{crand.Text(), u.ID, u.Stamp, ttl.Seconds(), idle.Seconds(), userAgent}, &sid)
	if sqlState(err) == "23503" { // foreign_key_violation: the account was deleted since the login's check
		err = errBadCredentials
	}
	return sid, err
}

// refreshSQL rotates session $1's token of generation $2; within reuseWindow
// the token the latest refresh replaced gets that refresh's; any other is
// reuse, and ends the session. Two refreshes take turns on the row's lock;
// clock_timestamp() keeps one that waited from outliving a logout meanwhile.
const refreshSQL = `
UPDATE myapi.sessions AS s SET
    generation   = s.generation + (s.generation = $2)::int,
    rotated_at   = CASE WHEN s.generation = $2 THEN now() ELSE s.rotated_at END,
    last_used_at = now(),
    ends_at      = CASE WHEN s.generation = $2
                          OR s.generation = $2 + 1 AND s.rotated_at > now() - $4 * interval '1 second'
                        THEN least(s.expires_at, now() + $3 * interval '1 second') ELSE now() END
FROM myapi.users AS u
WHERE s.session_id = $1 AND s.ends_at > clock_timestamp()
  AND u.user_id = s.user_id AND u.security_stamp IS NOT DISTINCT FROM s.stamp
RETURNING s.generation, s.ends_at > now(), extract(epoch FROM s.ends_at - clock_timestamp()),
          u.user_id, u.name, u.email, coalesce(u.security_stamp, '')`

// refresh runs refreshSQL: the account, the generation to answer with and
// the session's time left, or errNotFound, or errReused for a reuse.
func (s *store) refresh(ctx context.Context, sid string, gen int64, idle time.Duration) (u user, newGen int64, left time.Duration, err error) {
	var live bool
	var secs float64
	err = queryRow(ctx, s.db, refreshSQL, []any{sid, gen, idle.Seconds(), reuseWindow.Seconds()},
		&newGen, &live, &secs, &u.ID, &u.Name, &u.Email, &u.Stamp)
	if err == nil && !live {
		s.accounts.forget(u.Email + "\x00" + sid)
		err = errReused
	}
	return u, newGen, time.Duration(secs * float64(time.Second)), err
}

// sessions lists c's live sessions, newest first, in UTC.
func (s *store) sessions(ctx context.Context, c caller) ([]session, error) {
	return queryAll(ctx, s.db, `SELECT session_id, created_at AT TIME ZONE 'UTC', last_used_at AT TIME ZONE 'UTC',
		    expires_at AT TIME ZONE 'UTC', user_agent, session_id = $3
		FROM myapi.sessions WHERE user_id = $1 AND ends_at > now() AND stamp IS NOT DISTINCT FROM nullif($2, '')
		ORDER BY created_at DESC, session_id`, []any{c.ID, c.Stamp, c.sessionID},
		func(x *session) []any {
			return []any{&x.ID, &x.CreatedAt, &x.LastUsedAt, &x.ExpiresAt, &x.UserAgent, &x.Current}
		})
}

// endSession ends the live session sid of the account with email ("" for
// any), or returns errNotFound; this server forgets it at once.
func (s *store) endSession(ctx context.Context, sid, email string) error {
	if !isText(sid) {
		return errNotFound
	}
	var owner string
	err := queryRow(ctx, s.db, `UPDATE myapi.sessions AS s SET ends_at = now() FROM myapi.users AS u
		WHERE s.session_id = $1 AND s.ends_at > now() AND u.user_id = s.user_id
		  AND u.security_stamp IS NOT DISTINCT FROM s.stamp AND (u.email = $2 OR $2 = '')
		RETURNING u.email`, []any{sid, email}, &owner)
	if err == nil {
		s.accounts.forget(owner + "\x00" + sid)
	}
	return err
}

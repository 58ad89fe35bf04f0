package main

import (
	"context"
	crand "crypto/rand"
	"errors"
	"net/http"
)

// user is a row of myapi.users: an account. In JSON (GET /users/me,
// list-users -json) it shows neither the hash nor the stamp.
type user struct {
	ID             int    `json:"id"`
	Name           string `json:"name"`
	Email          string `json:"email"`
	HashedPassword string `json:"-"`
	Stamp          string `json:"-"` // security stamp (auth.go); "" for none
}

// handleMe is GET /users/me: the account of the request's token.
func handleMe() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, currentCaller(r).user)
	})
}

// userByEmail returns the user with this email, hash included, or errNotFound.
func (s *store) userByEmail(ctx context.Context, email string) (user, error) {
	if !isText(email) {
		return user{}, errNotFound
	}
	var u user
	err := queryRow(ctx, s.db, `SELECT user_id, name, email, hashed_password, coalesce(security_stamp, '')
		FROM myapi.users WHERE email = $1`, []any{email}, &u.ID, &u.Name, &u.Email, &u.HashedPassword, &u.Stamp)
	return u, err
}

// tokenUser returns the account a token names, without its hash, and ok
// when it exists and the session sid ("" for none) is live, as read at most
// a second ago: one statement, once a second per server, not once a request.
func (s *store) tokenUser(ctx context.Context, email, sid string) (u user, ok bool, err error) {
	key := email + "\x00" + sid
	if u, hit := s.accounts.get(key); hit {
		return u, u.Email != "", nil // not ok is cached as the zero user
	}
	start := s.accounts.now()
	if isText(email) && isText(sid) {
		err = queryRow(ctx, s.db, `SELECT u.user_id, u.name, u.email, coalesce(u.security_stamp, ''),
			$2 = '' OR EXISTS (SELECT FROM myapi.sessions AS s
			                   WHERE s.session_id = $2 AND s.user_id = u.user_id AND s.ends_at > now())
			FROM myapi.users AS u WHERE u.email = $1`, []any{email, sid}, &u.ID, &u.Name, &u.Email, &u.Stamp, &ok)
	}
	if err != nil && !errors.Is(err, errNotFound) {
		return u, false, err
	}
	if !ok {
		u = user{} // a token's email is never ""
	}
	s.accounts.put(key, u, start)
	return u, ok, nil
}

// listUsers returns every user, by id, without the password hashes.
func (s *store) listUsers(ctx context.Context) ([]user, error) {
	return queryAll(ctx, s.db, "SELECT user_id, name, email FROM myapi.users ORDER BY user_id", nil,
		func(u *user) []any { return []any{&u.ID, &u.Name, &u.Email} })
}

// newStamp returns a new security stamp: tokens with another are refused.
func newStamp() string { return crand.Text() }

// createUser inserts a user and returns its id, or errDuplicate.
func (s *store) createUser(ctx context.Context, name, email, hashedPassword string) (int, error) {
	var id int
	err := queryRow(ctx, s.db, `INSERT INTO myapi.users (name, email, hashed_password, security_stamp)
		VALUES ($1, $2, $3, $4) RETURNING user_id`, []any{name, email, hashedPassword, newStamp()}, &id)
	if sqlState(err) == "23505" { // unique_violation; never match the message, which is translated
		return 0, errDuplicate
	}
	return id, err
}

// logoutEverywhere ends every session and token of the account with email.
func (s *store) logoutEverywhere(ctx context.Context, email string) error {
	return s.renewStamp(ctx, email, nil)
}

// renewStamp gives the account with email a new security stamp and, unless
// hash is nil, password hash, and ends its sessions: all its tokens stop.
func (s *store) renewStamp(ctx context.Context, email string, hash any) error {
	err := queryRow(ctx, s.db, `
WITH u AS (
    UPDATE myapi.users SET security_stamp = $2, hashed_password = coalesce($3, hashed_password)
    WHERE email = $1 RETURNING user_id),
ended AS (
    UPDATE myapi.sessions SET ends_at = now() WHERE user_id IN (SELECT user_id FROM u) AND ends_at > now())
SELECT user_id FROM u`, []any{email, newStamp(), hash}, new(int))
	s.accounts.forget(email + "\x00") // here at once; elsewhere within cacheTTL
	return err
}

// deleteUser deletes the user, sessions and all, or returns errNotFound.
func (s *store) deleteUser(ctx context.Context, email string) error {
	return queryRow(ctx, s.db, "DELETE FROM myapi.users WHERE email = $1 RETURNING user_id", []any{email}, new(int))
}

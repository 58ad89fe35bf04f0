package main

import (
	"context"
	crand "crypto/rand"
	"errors"
	"net/http"

	"github.com/jackc/pgx/v5/pgconn"
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
		writeJSON(w, http.StatusOK, currentUser(r))
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

// tokenUser returns the account a token names, without its hash, as read
// at most a second ago: one read a second per server, not one a request.
// found is false when no account has this email.
func (s *store) tokenUser(ctx context.Context, email string) (u user, found bool, err error) {
	if u, ok := s.accounts.get(email); ok {
		return u, u.ID != 0, nil // the cache keeps a zero user for none
	}
	start := s.accounts.now()
	if isText(email) {
		err = queryRow(ctx, s.db, `SELECT user_id, name, email, coalesce(security_stamp, '')
			FROM myapi.users WHERE email = $1`, []any{email}, &u.ID, &u.Name, &u.Email, &u.Stamp)
	}
	if err != nil && !errors.Is(err, errNotFound) {
		return u, false, err
	}
	s.accounts.put(email, u, start)
	return u, u.ID != 0, nil
}

// listUsers returns every user, by id, without the password hashes.
func (s *store) listUsers(ctx context.Context) ([]user, error) {
	return queryAll(ctx, s.db, "SELECT user_id, name, email FROM myapi.users ORDER BY user_id", nil,
		func(u *user) []any { return []any{&u.ID, &u.Name, &u.Email} })
}

// newStamp returns a new security stamp, which revokes the tokens that
// carry another (auth.go).
func newStamp() string { return crand.Text() }

// createUser inserts a user with a new security stamp and returns its id,
// or errDuplicate when the email is taken.
func (s *store) createUser(ctx context.Context, name, email, hashedPassword string) (int, error) {
	var id int
	err := queryRow(ctx, s.db, `INSERT INTO myapi.users (name, email, hashed_password, security_stamp)
		VALUES ($1, $2, $3, $4) RETURNING user_id`, []any{name, email, hashedPassword, newStamp()}, &id)
	// 23505 is unique_violation; never match the message, which is translated.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return 0, errDuplicate
	}
	return id, err
}

// setPassword replaces the user's password hash and security stamp, which
// revokes their tokens, or returns errNotFound.
func (s *store) setPassword(ctx context.Context, email, hashedPassword string) error {
	return queryRow(ctx, s.db, `UPDATE myapi.users SET hashed_password = $2, security_stamp = $3
		WHERE email = $1 RETURNING user_id`, []any{email, hashedPassword, newStamp()}, new(int))
}

// deleteUser deletes the user, or returns errNotFound.
func (s *store) deleteUser(ctx context.Context, email string) error {
	return queryRow(ctx, s.db, "DELETE FROM myapi.users WHERE email = $1 RETURNING user_id", []any{email}, new(int))
}

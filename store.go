package main

import (
	"context"
	crand "crypto/rand"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed schema.sql
var schemaSQL string

//go:embed samples.sql
var samplesSQL string

const (
	// queryTimeout bounds every query a request makes: a stuck database
	// is a 503, not a hung request.
	queryTimeout   = 3 * time.Second
	connectTimeout = 10 * time.Second // opening the pool at start
)

var (
	errNotFound  = errors.New("not found")
	errDuplicate = errors.New("duplicate") // a unique constraint refused the row
)

// store is myapi's access to PostgreSQL. Every method bounds its query
// with queryTimeout. What requests read most is remembered for a second
// (memory.go): accounts by email, and when blocked login keys are free.
type store struct {
	db       *sql.DB
	accounts *memory[accountState]
	blocked  *memory[time.Time]
}

// newStore returns the store of db; now is the memory's clock.
func newStore(db *sql.DB, now func() time.Time) *store {
	return &store{db: db, accounts: newMemory[accountState](now), blocked: newMemory[time.Time](now)}
}

// openDB opens a pool of maxConns connections on dsn, each connected before
// it returns, so that a server that answers is ready at speed.
func openDB(ctx context.Context, dsn string, maxConns int) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// Not err: its message can quote the password.
		return nil, errors.New("open database: the connection string is not a valid PostgreSQL URL or key=value DSN")
	}
	db := stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(retireLater), stdlib.OptionResetSession(retireIfDue))
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)

	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conns := make([]*sql.Conn, 0, maxConns)
	defer func() {
		for _, c := range conns {
			c.Close() // back to the pool, open
		}
	}()
	for range maxConns {
		c, err := db.Conn(ctx) // a new connection, made and authenticated
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("connect to database: %w", err)
		}
		conns = append(conns, c)
	}
	return db, nil
}

// connLifetime is how long a connection serves, so that a fail-over or a
// pgbouncer restart is picked up. Each gets its own, within 10%, so that a
// pool opened at once is not replaced at once.
const connLifetime = 30 * time.Minute

func retireLater(_ context.Context, c *pgx.Conn) error {
	jitter := time.Duration(rand.Int64N(int64(connLifetime/5))) - connLifetime/10
	c.PgConn().CustomData()["retireAt"] = time.Now().Add(connLifetime + jitter)
	return nil
}

// retireIfDue runs before a connection is reused: database/sql replaces
// one that answers driver.ErrBadConn.
func retireIfDue(_ context.Context, c *pgx.Conn) error {
	if t, ok := c.PgConn().CustomData()["retireAt"].(time.Time); ok && time.Now().After(t) {
		return driver.ErrBadConn
	}
	return nil
}

// unavailable reports whether err means that the database cannot answer
// now (503), rather than that the query is wrong (a bug, 500): a failed
// connect whatever its SQLSTATE, a network error or EOF, a deadline, a
// broken connection, or a server error of class 08 (connection), 53
// (insufficient resources) or 57 (operator intervention: a terminated
// backend, a shutdown).
func unavailable(err error) bool {
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone):
		return true
	case errors.As(err, &pgErr):
		c := pgErr.Code
		return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "53") || strings.HasPrefix(c, "57")
	}
	return false
}

// schemaMissing reports whether err comes from a database without the
// table, column, function or schema a query names: one not migrated yet.
func schemaMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && slices.Contains([]string{"42P01", "42703", "42883", "3F000"}, pgErr.Code)
}

// migrate applies schema.sql, and samples.sql when withSamples is set, in
// one transaction: schema.sql takes an advisory lock, so that processes
// starting at once all succeed.
func migrate(ctx context.Context, db *sql.DB, withSamples bool) error {
	script := schemaSQL
	if withSamples {
		script += samplesSQL
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply schema.sql: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, script); err != nil {
		return fmt.Errorf("apply schema.sql: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("apply schema.sql: commit: %w", err)
	}
	return nil
}

// ping reports whether the database answers.
func (s *store) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return s.db.PingContext(ctx)
}

// queryRow scans the one row of query into dest, or returns errNotFound.
func queryRow(ctx context.Context, db *sql.DB, query string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	err := db.QueryRowContext(ctx, query, args...).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return errNotFound
	}
	return err
}

// queryAll returns every row of query, each scanned into the fields of a T
// that columns lists, in the query's order. It is never nil: no rows
// encode as [], not null.
func queryAll[T any](ctx context.Context, db *sql.DB, query string, args []any, columns func(*T) []any) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		var v T
		if err := rows.Scan(columns(&v)...); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// isText reports whether s can be a PostgreSQL text value.
func isText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// userByEmail returns the user with this email, or errNotFound.
func (s *store) userByEmail(ctx context.Context, email string) (user, error) {
	if !isText(email) {
		return user{}, errNotFound
	}
	var u user
	err := queryRow(ctx, s.db, `SELECT user_id, name, email, hashed_password, coalesce(security_stamp, '')
		FROM myapi.users WHERE email = $1`, []any{email}, &u.ID, &u.Name, &u.Email, &u.HashedPassword, &u.Stamp)
	return u, err
}

// accountState is what a request checks of its token's account.
type accountState struct {
	exists bool
	stamp  string // "" for none
}

// account returns the state of the account with this email as read at
// most a second ago: one read a second per server, not one a request.
func (s *store) account(ctx context.Context, email string) (accountState, error) {
	if a, ok := s.accounts.get(email); ok {
		return a, nil
	}
	start := s.accounts.now()
	u, err := s.userByEmail(ctx, email)
	a := accountState{exists: err == nil, stamp: u.Stamp}
	if err != nil && !errors.Is(err, errNotFound) {
		return a, err
	}
	s.accounts.put(email, a, start)
	return a, nil
}

// listAccounts returns every user, by id, without the password hashes.
func (s *store) listAccounts(ctx context.Context) ([]user, error) {
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

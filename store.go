package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed schema.sql
var schemaSQL string

// sampleMoviesSQL fills the dev database so that a fresh clone has
// something to serve. It runs only when MYAPI_ENV is dev.
const sampleMoviesSQL = `
INSERT INTO myapi.movies (movie_id, title, released, rating) VALUES
    (1, 'The Shawshank Redemption', 1994, 9.2),
    (2, 'The Godfather', 1972, 9.2),
    (3, 'The Dark Knight', 2008, 9.0),
    (4, 'The Godfather Part II', 1974, 9.0),
    (5, '12 Angry Men', 1957, 9.0),
    (6, 'Schindler''s List', 1993, 9.0),
    (7, 'Pulp Fiction', 1994, 8.9),
    (8, 'Inception', 2010, 8.8)
ON CONFLICT (movie_id) DO NOTHING`

// migrateLockID names the advisory lock that serialises migrations
// between processes (any constant works; this one spells "myapi").
const migrateLockID = 0x6d79617069

const (
	// queryTimeout bounds every query a request makes, so a stuck
	// database turns into a 503 instead of a hung request.
	queryTimeout = 3 * time.Second
	// connectTimeout bounds the first ping at start.
	connectTimeout = 10 * time.Second
)

// errNotFound is returned by store lookups that find no row.
var errNotFound = errors.New("not found")

// store is myapi's access to PostgreSQL. Every method bounds its query
// with queryTimeout.
type store struct {
	db *sql.DB
}

// openDB opens a pool of maxConns connections on dsn, and opens and checks
// every one before it returns, so that a server that answers is ready at
// speed. Connections stay open while idle.
func openDB(ctx context.Context, dsn string, maxConns int) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", hideConnString(err))
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
		c, err := db.Conn(ctx)
		if err == nil {
			err = c.PingContext(ctx)
			conns = append(conns, c)
		}
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("connect to database: %w", hideConnString(err))
		}
	}
	return db, nil
}

// connLifetime is how long a connection serves before it is replaced, so
// that a database fail-over or a pgbouncer restart is picked up. Each
// connection gets its own, within 10% of it, so that a pool opened at once
// is not replaced at once.
const connLifetime = 30 * time.Minute

func retireLater(_ context.Context, c *pgx.Conn) error {
	jitter := time.Duration(rand.Int64N(int64(connLifetime/5))) - connLifetime/10
	c.PgConn().CustomData()["retireAt"] = time.Now().Add(connLifetime + jitter)
	return nil
}

// retireIfDue runs before a connection is reused; database/sql replaces
// one that answers driver.ErrBadConn.
func retireIfDue(_ context.Context, c *pgx.Conn) error {
	if t, ok := c.PgConn().CustomData()["retireAt"].(time.Time); ok && time.Now().After(t) {
		return driver.ErrBadConn
	}
	return nil
}

// hideConnString replaces a connection-string parse error, which quotes
// the string (password and all, when pgx cannot tell where it is), with a
// fixed message.
func hideConnString(err error) error {
	var perr *pgconn.ParseConfigError
	if errors.As(err, &perr) {
		return errors.New("the connection string is not a valid PostgreSQL URL or key=value DSN")
	}
	return err
}

// migrate applies schema.sql in one transaction under an advisory lock,
// so that several processes starting at once all succeed, and loads the
// sample movies when withSamples is set.
func migrate(ctx context.Context, db *sql.DB, withSamples bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockID); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("migrate: apply schema.sql: %w", err)
	}
	if withSamples {
		if _, err := tx.ExecContext(ctx, sampleMoviesSQL); err != nil {
			return fmt.Errorf("migrate: load sample movies: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// ping reports whether the database answers.
func (s *store) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return s.db.PingContext(ctx)
}

// selectFunc returns every row of a set-returning function, such as
// "myapi.new_movies($1::integer, $2::numeric)", scanned by scan. It is the
// Go side of the original's "table-valued function" pattern: the query
// lives in schema.sql, and Go only names it. The casts in call pick the
// overload and let PostgreSQL check the argument types.
//
// The result is never nil, so an empty set encodes as [] and not null.
func selectFunc[T any](ctx context.Context, db *sql.DB, call string, scan func(*sql.Rows) (T, error), args ...any) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT * FROM "+call, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// uniqueViolation is the SQLSTATE of a unique constraint's refusal.
const uniqueViolation = "23505"

// errDuplicate is returned when a unique constraint refuses a row.
var errDuplicate = errors.New("duplicate")

// errNotText is returned for a string PostgreSQL cannot store as text:
// invalid UTF-8, or a NUL byte. It is the client's mistake, not an outage.
var errNotText = errors.New("not UTF-8 text")

// isText reports whether s can be a PostgreSQL text value.
func isText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// userByEmail returns the user with this email, or errNotFound.
func (s *store) userByEmail(ctx context.Context, email string) (user, error) {
	if !isText(email) {
		return user{}, errNotText
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var u user
	err := s.db.QueryRowContext(ctx,
		"SELECT user_id, name, email, hashed_password FROM myapi.users WHERE email = $1", email,
	).Scan(&u.ID, &u.Name, &u.Email, &u.HashedPassword)
	if errors.Is(err, sql.ErrNoRows) {
		return user{}, errNotFound
	}
	return u, err
}

// createUser inserts a user and returns its id, or errDuplicate when the
// email is taken. The duplicate is recognised by its SQLSTATE (23505),
// never by the message, which changes with the server's language.
func (s *store) createUser(ctx context.Context, name, email, hashedPassword string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var id int
	err := s.db.QueryRowContext(ctx,
		"INSERT INTO myapi.users (name, email, hashed_password) VALUES ($1, $2, $3) RETURNING user_id",
		name, email, hashedPassword,
	).Scan(&id)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		return 0, errDuplicate
	}
	return id, err
}

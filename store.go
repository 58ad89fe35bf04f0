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

// samplesSQL fills the dev database (MYAPI_ENV=dev only).
//
//go:embed samples.sql
var samplesSQL string

const (
	// queryTimeout bounds every query a request makes: a stuck database
	// is a 503, not a hung request.
	queryTimeout   = 3 * time.Second
	connectTimeout = 10 * time.Second // opening the pool at start
	// migrateLockID names the advisory lock that serialises migrations
	// between processes; its bytes spell "myapi".
	migrateLockID = 0x6d79617069
	// migrateLockTimeout bounds a migration's lock waits: behind a long
	// query (a pg_dump), a start fails rather than queue every request.
	migrateLockTimeout = 5 * time.Second
)

var (
	errNotFound  = errors.New("not found")
	errDuplicate = errors.New("duplicate") // a unique constraint refused the row
	// errNotText is a string PostgreSQL cannot store as text: invalid UTF-8,
	// or a NUL byte. It is the client's mistake, not an outage.
	errNotText = errors.New("not UTF-8 text")
)

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

// connLifetime is how long a connection serves, so that a fail-over or a
// pgbouncer restart is picked up. Each gets its own, within 10%, so that a
// pool opened at once is not replaced at once.
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

// hideConnString replaces a connection-string parse error, which can quote
// the password, with a fixed message.
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
	// set_config(..., true) is SET LOCAL: it ends with the transaction.
	ms := fmt.Sprint(migrateLockTimeout.Milliseconds())
	if _, err := tx.ExecContext(ctx, "SELECT set_config('lock_timeout', $1, true)", ms); err != nil {
		return fmt.Errorf("migrate: set lock_timeout: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockID); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
		return fmt.Errorf("migrate: apply schema.sql: %w", err)
	}
	if withSamples {
		if _, err := tx.ExecContext(ctx, samplesSQL); err != nil {
			return fmt.Errorf("migrate: load samples.sql: %w", err)
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

// queryAll returns every row of query, scanned by scan, never nil: an empty
// result encodes as [], not null.
func queryAll[T any](ctx context.Context, db *sql.DB, query string, scan func(*sql.Rows) (T, error), args ...any) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := db.QueryContext(ctx, query, args...)
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

// isText reports whether s can be a PostgreSQL text value.
func isText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// userByEmail returns the user with this email, or errNotFound.
func (s *store) userByEmail(ctx context.Context, email string) (user, error) {
	if !isText(email) {
		return user{}, errNotText
	}
	var u user
	var changed sql.NullTime
	err := queryRow(ctx, s.db, "SELECT user_id, name, email, hashed_password, password_changed_at FROM myapi.users WHERE email = $1",
		[]any{email}, &u.ID, &u.Name, &u.Email, &u.HashedPassword, &changed)
	u.PasswordChangedAt = changed.Time // the zero time when NULL
	return u, err
}

// accounts returns every user, by id, without the password hashes.
func (s *store) accounts(ctx context.Context) ([]account, error) {
	return queryAll(ctx, s.db, "SELECT user_id, name, email FROM myapi.users ORDER BY user_id",
		func(rows *sql.Rows) (a account, err error) { return a, rows.Scan(&a.ID, &a.Name, &a.Email) })
}

// setPassword replaces the user's password hash, or returns errNotFound. The
// change revokes older tokens; handleToken dates tokens up to the second
// after the previous change, so this one is recorded at least a second later.
func (s *store) setPassword(ctx context.Context, email, hashedPassword string) error {
	return queryRow(ctx, s.db, `UPDATE myapi.users SET hashed_password = $2,
		password_changed_at = greatest(now(), password_changed_at + interval '1 second')
		WHERE email = $1 RETURNING user_id`, []any{email, hashedPassword}, new(int))
}

// deleteUser deletes the user, or returns errNotFound. It returns once the
// second after their last password change has begun: handleToken may date
// their tokens in it, which a user created under the email before then
// would not refuse.
func (s *store) deleteUser(ctx context.Context, email string) error {
	var changed sql.NullTime
	var dbNow time.Time
	err := queryRow(ctx, s.db, "DELETE FROM myapi.users WHERE email = $1 RETURNING password_changed_at, clock_timestamp()",
		[]any{email}, &changed, &dbNow)
	if err == nil && changed.Valid {
		// A minute at most: tokens dated further ahead are refused anyway.
		time.Sleep(min(time.Unix(changed.Time.Unix()+1, 0).Sub(dbNow), time.Minute))
	}
	return err
}

// createUser inserts a user and returns its id, or errDuplicate when the
// email is taken. Its password counts as changed now, so that the tokens of
// a deleted user of the same email stay revoked (see deleteUser).
func (s *store) createUser(ctx context.Context, name, email, hashedPassword string) (int, error) {
	var id int
	err := queryRow(ctx, s.db, `INSERT INTO myapi.users (name, email, hashed_password, password_changed_at)
		VALUES ($1, $2, $3, now()) RETURNING user_id`, []any{name, email, hashedPassword}, &id)
	// 23505 is unique_violation; never match the message, which is translated.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return 0, errDuplicate
	}
	return id, err
}

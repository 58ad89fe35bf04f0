package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// store is myapi's access to PostgreSQL; each resource's file adds methods
// for its tables. The caches hold what requests read most (cache.go).
type store struct {
	db       *sql.DB
	accounts *cache[user]
	blocked  *cache[time.Time]
}

// newStore returns the store of db; now is the caches' clock.
func newStore(db *sql.DB, now func() time.Time) *store {
	return &store{db: db, accounts: newCache[user](now), blocked: newCache[time.Time](now)}
}

// openStore opens cfg's database for the command cmd, or in dev without one
// the local cluster; closeDB also stops the cluster if this call started it.
func openStore(ctx context.Context, cmd string, cfg config, log *slog.Logger) (s *store, closeDB func(), err error) {
	dsn, stopLocal := cfg.DatabaseURL, func() {}
	if dsn == "" {
		local, err := startLocalDB(ctx, cfg.Dir)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", cmd, err)
		}
		dsn = local.DSN(localDBName)
		log.Info("using the local dev database", "dir", cfg.Dir, "started", local.started)
		stopLocal = func() {
			if err := local.Stop(); err != nil {
				log.Error("stop the local dev database", "error", err.Error())
			}
		}
	}
	db, err := openDB(ctx, dsn, cfg.DBMaxConns)
	if err != nil {
		stopLocal()
		return nil, nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return newStore(db, time.Now), func() { db.Close(); stopLocal() }, nil
}

// openDB opens a pool of maxConns connections, all made before it returns.
func openDB(ctx context.Context, dsn string, maxConns int) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// Not err: its message can quote the password.
		return nil, errors.New("open database: the connection string is not a valid PostgreSQL URL or key=value DSN")
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	// Replaced after half an hour: a fail-over or a pgbouncer restart is picked up.
	db.SetConnMaxLifetime(30 * time.Minute)

	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	for range maxConns {
		c, err := db.Conn(ctx) // a new connection, made and authenticated
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("connect to database: %w", err)
		}
		defer c.Close() // back to the pool, open, once all are made
	}
	return db, nil
}

// unavailable reports whether err means that the database cannot answer now
// (503), not that the query is wrong (a bug, 500): a failed connect, the
// network, a deadline, a broken connection, or SQLSTATE class 08, 40 (a
// deadlock: retry), 53 (insufficient resources) or 57 (a terminated backend).
func unavailable(err error) bool {
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch c := sqlState(err); {
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone):
		return true
	default:
		return slices.ContainsFunc([]string{"08", "40", "53", "57"}, func(class string) bool { return strings.HasPrefix(c, class) })
	}
}

// sqlState is the SQLSTATE of err, a PostgreSQL error, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// schemaMissing reports whether err comes from a database without the
// table, column, function or schema a query names: one not migrated yet.
func schemaMissing(err error) bool {
	return slices.Contains([]string{"42P01", "42703", "42883", "3F000"}, sqlState(err))
}

// migrate applies schema.sql, and samples.sql withSamples, in one
// transaction, under schema.sql's advisory lock: processes may start at once.
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
// that columns lists, never nil: no rows encode as []. A set-returning
// function's no_data_found (a missing parent row) is errNotFound.
func queryAll[T any](ctx context.Context, db *sql.DB, query string, args []any, columns func(*T) []any) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, noDataFound(err)
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
	return out, noDataFound(rows.Err())
}

// noDataFound turns SQLSTATE P0002, no_data_found, into errNotFound.
func noDataFound(err error) error {
	if sqlState(err) == "P0002" {
		return errNotFound
	}
	return err
}

// isText reports whether s can be a PostgreSQL text value.
func isText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

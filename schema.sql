-- The myapi schema. serve and migrate apply it at every start, in one
-- transaction, so it must stay idempotent: CREATE ... IF NOT EXISTS,
-- CREATE OR REPLACE, and DO blocks that check the catalog first. The tables'
-- names and columns are those of the FastAPI service myapi ports, whose
-- databases are used as they are: never change them here, only add to them.
--
-- A start that changes nothing must take no lock that waits for queries:
-- ALTER TABLE and CREATE INDEX lock their table even when IF NOT EXISTS
-- then finds nothing to do, and every request would queue behind them.

-- Processes starting at once take turns (the advisory lock's key spells
-- "myapi"). Every lock wait is bounded: behind a long query (a pg_dump) a
-- start fails at once rather than queue every request behind its own lock.
SET LOCAL lock_timeout = '5s';
SELECT pg_advisory_xact_lock(x'6d79617069'::bigint);

CREATE SCHEMA IF NOT EXISTS myapi;

CREATE TABLE IF NOT EXISTS myapi.movies (
    movie_id INTEGER PRIMARY KEY,
    title    TEXT NOT NULL,
    released INTEGER NOT NULL,
    rating   NUMERIC(2,1) NOT NULL
);

CREATE TABLE IF NOT EXISTS myapi.users (
    user_id         SERIAL PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL UNIQUE,
    hashed_password TEXT NOT NULL
);

-- The security stamp (auth.go): a random value per account, new at every
-- create-user and set-password, that a token must carry to be accepted.
-- NULL for accounts the original service made, whose tokens carry none.
-- Accounts that an earlier myapi made or changed (they have a
-- password_changed_at) get one when the column is added, which revokes
-- the tokens it issued them before.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'myapi'
                   AND table_name = 'users' AND column_name = 'security_stamp') THEN
        ALTER TABLE myapi.users ADD COLUMN security_stamp TEXT;
        IF EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'myapi'
                   AND table_name = 'users' AND column_name = 'password_changed_at') THEN
            EXECUTE 'UPDATE myapi.users SET security_stamp = gen_random_uuid()::text
                     WHERE password_changed_at IS NOT NULL';
        END IF;
    END IF;
END $$;

-- /movies/new filters on both columns.
DO $$ BEGIN
    IF to_regclass('myapi.movies_released_rating_idx') IS NULL THEN
        CREATE INDEX movies_released_rating_idx ON myapi.movies (released, rating);
    END IF;
END $$;

-- new_movies is the set-returning ("table-valued") function behind
-- GET /movies/new. Parameters are qualified with the function's name
-- because inside a SQL function a column of the same name would win.
CREATE OR REPLACE FUNCTION myapi.new_movies(year INTEGER, rating NUMERIC)
RETURNS SETOF myapi.movies
LANGUAGE sql STABLE
AS $$
    SELECT m.*
    FROM myapi.movies AS m
    WHERE m.released >= new_movies.year AND m.rating >= new_movies.rating
    ORDER BY m.movie_id
$$;

-- Failed logins, counted per client address and per account (throttle.go).
-- key is a SHA-256 hash of the normalised address or email; a key's window
-- ends at reset_at, fixed at its first failure.
CREATE TABLE IF NOT EXISTS myapi.login_failures (
    key      BYTEA PRIMARY KEY,
    failures INTEGER NOT NULL,
    reset_at TIMESTAMPTZ NOT NULL
);

-- Expired rows are deleted in small batches, oldest first.
DO $$ BEGIN
    IF to_regclass('myapi.login_failures_reset_at_idx') IS NULL THEN
        CREATE INDEX login_failures_reset_at_idx ON myapi.login_failures (reset_at);
    END IF;
END $$;

-- Sessions (sessions.go): one per login, named by its access tokens' sid
-- and rotated by its refresh tokens, of which only generation, the current
-- one's counter, is stored. ends_at is when the session ends: its absolute
-- expires_at, sooner when idle, or the moment of a logout. Logins delete
-- ended rows a few at a time.
CREATE TABLE IF NOT EXISTS myapi.sessions (
    session_id   TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES myapi.users ON DELETE CASCADE,
    stamp        TEXT,                     -- the account's security stamp at login
    generation   BIGINT NOT NULL DEFAULT 0,
    rotated_at   TIMESTAMPTZ,              -- the latest refresh
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    ends_at      TIMESTAMPTZ NOT NULL,
    user_agent   TEXT NOT NULL
);

DO $$ BEGIN
    IF to_regclass('myapi.sessions_user_id_idx') IS NULL THEN
        CREATE INDEX sessions_user_id_idx ON myapi.sessions (user_id);
    END IF;
    IF to_regclass('myapi.sessions_ends_at_idx') IS NULL THEN
        CREATE INDEX sessions_ends_at_idx ON myapi.sessions (ends_at);
    END IF;
END $$;

#!/usr/bin/env bash
# bench/run.sh prints the figures of docs/performance.md (progress goes to
# stderr). It builds myapi, starts it on 127.0.0.1 with a throwaway PostgreSQL
# cluster (or MYAPI_BENCH_DATABASE_URL), logs in, and measures with wrk.
#   BENCH_DURATION  seconds per wrk or pgbench run (default 10)
#   BENCH_RUNS      runs of GET-by-id, /healthz and pgbench (default 3)
#   MYAPI_DB_MAX_CONNS, MYAPI_BCRYPT_COST, GOMAXPROCS, GOGC are passed on.
set -euo pipefail

duration=${BENCH_DURATION:-10}
runs=${BENCH_RUNS:-3}
bench=$(cd "$(dirname "$0")" && pwd)
movie="/movies/?movie_id=1"

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }
for tool in go curl wrk psql pgbench; do
  command -v "$tool" >/dev/null || die "needs $tool: apt-get install wrk postgresql curl, and Go"
done

tmp=$(mktemp -d /tmp/myapi-bench.XXXXXX) # short: the cluster's socket lives in it
state=$tmp/state                         # MYAPI_DIR: the cluster, the token key

cleanup() {
  local pids
  mapfile -t pids < <(jobs -p)
  if [ -n "${user:-}" ] && [ -n "${MYAPI_BENCH_DATABASE_URL:-}" ]; then
    myapi delete-user -email "$user" >/dev/null 2>&1 || say "could not delete $user"
  fi
  # myapi stops on SIGTERM, and stops the cluster it started.
  [ ${#pids[@]} = 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait || true
  if [ -f "$state/pgdata/postmaster.pid" ]; then # myapi died before it could
    kill -INT "$(head -n 1 "$state/pgdata/postmaster.pid")" 2>/dev/null && sleep 2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- start myapi ---------------------------------------------------------

say "building myapi"
go -C "$bench/.." build -buildvcs=false -o "$tmp/myapi" . # no VCS stamp: git may refuse another user's clone

# myapi runs in $tmp, away from the repository's .env, with this
# environment only. The storm comes from many addresses through 127.0.0.1.
myapi_env=(PATH="$PATH" MYAPI_ENV=dev MYAPI_DIR="$state" MYAPI_ADDR=127.0.0.1:0 MYAPI_TRUSTED_PROXIES=127.0.0.1)
[ -z "${MYAPI_BENCH_DATABASE_URL:-}" ] || myapi_env+=(MYAPI_DATABASE__DEV="$MYAPI_BENCH_DATABASE_URL")
for v in MYAPI_DB_MAX_CONNS MYAPI_BCRYPT_COST GOMAXPROCS GOGC; do
  [ -z "${!v:-}" ] || myapi_env+=("$v=${!v}")
done
myapi() { env -C "$tmp" -i "${myapi_env[@]}" "$tmp/myapi" "$@"; }

say "starting myapi and its cluster"
env -C "$tmp" -i "${myapi_env[@]}" "$tmp/myapi" serve >"$tmp/serve.out" 2>"$tmp/serve.log" &
myapi_pid=$!
until grep -q '^myapi listening' "$tmp/serve.out"; do
  kill -0 "$myapi_pid" 2>/dev/null || die "myapi did not start: $(tail -n 3 "$tmp/serve.log")"
  sleep 0.2
done
base=$(sed -n 's|^myapi listening on ||p' "$tmp/serve.out")

# psql and pgbench reach the same database. The cluster's postmaster.pid
# holds its port (line 4), socket directory (5) and listen address (6).
if [ -n "${MYAPI_BENCH_DATABASE_URL:-}" ]; then
  db=$MYAPI_BENCH_DATABASE_URL
else
  mapfile -t pm <"$state/pgdata/postmaster.pid"
  db="host=${pm[5]:-${pm[4]}} port=${pm[3]} user=myapi dbname=myapi sslmode=disable"
  PGPASSWORD=$(cat "$state/pg_password") # for the 127.0.0.1 fallback
  export PGPASSWORD
fi

user="bench-$(date +%s)-$$@example.com"
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
login="username=${user/@/%40}&password=$password"
say "creating $user and logging in"
printf '%s\n' "$password" | myapi create-user -name Bench -email "$user" -password-stdin >/dev/null 2>"$tmp/create.log" ||
  die "create-user failed: $(tail -n 1 "$tmp/create.log")"
token=$(curl -sS --data "$login" "$base/token" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || die "login failed"

# --- measuring -----------------------------------------------------------

calc() { awk "BEGIN { printf \"$1\", $2 }"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# wrk runs as `env VAR=VALUE... wrk "${wrk_args[@]}" -c CONNS -d SECONDS URL`:
# the variables tell bench/wrk.lua what to send.
wrk_args=(-t 1 --timeout 10s -H "Authorization: Bearer $token" -s "$bench/wrk.lua")

# results OUT sets n (requests), rps (per second), p50 and p99 (ms), errors.
results() {
  read -r n rps p50 p99 errors < <(sed -n 's/^BENCH //p' "$1") || die "wrk failed: $(tail -n 1 "$1")"
}

# measure CONNS PATH [VAR=VALUE...]: one wrk run of BENCH_DURATION seconds.
# Run in the background, so that Ctrl-C ends the wait at once.
measure() {
  say "wrk: $2 at $1 connections, ${duration}s"
  env "${@:3}" wrk "${wrk_args[@]}" -c "$1" -d "${duration}s" "$base$2" >"$tmp/wrk.out" 2>&1 &
  wait $!
  results "$tmp/wrk.out"
  [ "$2" = /healthz ] || idle_since=$SECONDS
}

# xacts prints the transactions PostgreSQL counted in myapi's database: a
# statement outside BEGIN ... COMMIT is one. A backend publishes its counts at
# most once a second, an idle one within 10 s; so first wait until myapi has
# left the database alone for 11 s (1 s at least, for pgbench's backends to
# publish theirs as they exit).
idle_since=$SECONDS
xacts() {
  local wait=$((idle_since + 11 - SECONDS))
  sleep $((wait > 1 ? wait : 1))
  psql "$db" -XAtqc "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
}
# per_request BEFORE AFTER REQUESTS: the statements per request of the wrk
# run between the two reads, less what a read itself counts.
per_request() { calc %.2f "($2 - $1 - $own) / $3"; }

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "myapi bench, $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores ($cpu), $(go env GOVERSION)," \
  "PostgreSQL $(psql "$db" -XAtqc 'SHOW server_version' | cut -d' ' -f1)"
echo "bench/run.sh: ${duration}s per run; wrk -t 1; pgbench -M prepared -j 1"
echo

say "warming up"
wrk "${wrk_args[@]}" -c 16 -d 2s "$base$movie" >"$tmp/wrk.out" 2>&1 &
wait $!
idle_since=$SECONDS
x0=$(xacts)
own=$(($(xacts) - x0)) # what one read counts: psql's connection and query

# GET by id at 16 connections against the HTTP+DB bound, BENCH_RUNS times.
echo "GET $movie at 16 connections against the HTTP+DB bound:"
printf '%3s %7s %6s %6s %6s %9s %8s %8s %7s %6s\n' run "req/s" "p50ms" "p99ms" errors "stmts/req" r_http r_db bound share
shares=() p99s=()
for run in $(seq "$runs"); do
  x0=$(xacts)
  measure 16 "$movie"
  get=("$rps" "$p50" "$p99" "$errors") get_n=$n
  p99s+=("$p99")
  measure 16 /healthz
  r_http=$rps
  stmts=$(per_request "$x0" "$(xacts)" "$get_n")
  say "pgbench: bench/movie.sql at 16 clients, ${duration}s"
  pgbench -n -M prepared -c 16 -j 1 -T "$duration" -f "$bench/movie.sql" -D id=1 "$db" >"$tmp/pgbench.out" 2>&1 &
  wait $! || die "pgbench failed: $(tail -n 1 "$tmp/pgbench.out")"
  r_db=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$tmp/pgbench.out")
  bound=$(calc %.0f "1 / (1 / $r_http + 1 / $r_db)")
  shares+=("$(calc %.2f "${get[0]} / $bound")")
  printf '%3d %7s %6s %6s %6s %9s %8s %8.0f %7s %6s\n' "$run" "${get[@]}" "$stmts" "$r_http" "$r_db" "$bound" "${shares[-1]}"
done
p99_alone=$(median "${p99s[@]}")
echo "median share: $(calc %.2f "$(median "${shares[@]}")") of the bound, in $runs runs (target >= 0.5; stmts/req <= 1.1)"
echo "  r_http: GET /healthz at 16 connections (no database); r_db: pgbench, 16 clients,"
echo "  the route's query (bench/movie.sql); bound = 1 / (1/r_http + 1/r_db); share = req/s / bound"
echo

row() { printf '%-34s %5s %8s %6s %6s %6s %9s\n' "$@"; }
row route conns "req/s" "p50ms" "p99ms" errors "stmts/req"
measure 256 "$movie"
row "GET $movie" 256 "$rps" "$p50" "$p99" "$errors" -
x0=$(xacts)
measure 16 "/movies/new?year=1990&rating=9"
row "GET /movies/new?year=1990&rating=9" 16 "$rps" "$p50" "$p99" "$errors" "$(per_request "$x0" "$(xacts)" "$n")"
echo

# One login alone is one bcrypt comparison and a few short queries: the
# fastest of three is the time of one bcrypt. auth.go runs max(1, cores / 2)
# at once.
say "timing three logins"
secs=$(for _ in 1 2 3; do curl -sS -o /dev/null -w '%{time_total}\n' --data "$login" "$base/token"; done | sort -g | head -n 1)
cores=${GOMAXPROCS:-$(nproc)}
slots=$((cores / 2 > 1 ? cores / 2 : 1))
bound=$(calc %.2f "$slots / $secs")
idle_since=$SECONDS # the three logins above count before x0, not after
x0=$(xacts)
measure 4 /token BENCH_BODY="$login"
echo "POST /token, 4 connections: $rps logins/s, $errors errors;" \
  "bcrypt bound: $slots at once / $secs s each = $bound/s; ratio $(calc %.2f "$rps / $bound");" \
  "$(per_request "$x0" "$(xacts)" "$n") statements per login"

# Refreshes, one after another, each with the token the one before returned;
# then a flood of forged ones, which the MAC refuses before any query.
rt() { sed -n 's/.*"refresh_token":"\([^"]*\)".*/\1/p'; }
token_rt=$(curl -sS --data "$login&scope=offline_access" "$base/token" | rt)
idle_since=$SECONDS
x0=$(xacts)
for _ in $(seq 200); do
  token_rt=$(curl -sS --data "grant_type=refresh_token&refresh_token=$token_rt" "$base/token" | rt)
done
[ -n "$token_rt" ] || die "a refresh failed"
idle_since=$SECONDS
echo "refresh: 200 in a chain, $(per_request "$x0" "$(xacts)" 200) statements per refresh (target <= 2)"
x0=$(xacts)
measure 32 /token BENCH_BODY="grant_type=refresh_token&refresh_token=${token_rt}x"
echo "forged refreshes (400), 32 connections: $rps/s, $(per_request "$x0" "$(xacts)" "$n") statements each (target 0)"
echo "GET p99 alone: $p99_alone ms (the median of the runs above)"

# during WHAT VAR=VALUE...: GET by id at 16 connections while 32 connections
# of logins, made as the variables tell wrk.lua, run from 2 s before to 2 s
# after; then the logins' figures, from results.
during() {
  local what=$1 pid
  shift
  env "$@" wrk "${wrk_args[@]}" -c 32 -d $((duration + 4))s "$base/token" >"$tmp/logins.out" 2>&1 &
  pid=$!
  sleep 2
  measure 16 "$movie"
  echo "GET p99 during $what: $p99 ms, ratio $(calc %.2f "$p99 / $p99_alone") to alone; GETs $rps req/s, $errors errors"
  wait "$pid"
  idle_since=$SECONDS
  results "$tmp/logins.out"
}
during "a login storm" BENCH_STORM=1
echo "  the storm: 32 connections, $rps logins/s, each 401 after bcrypt or 503 after 3 s queued"

# The flood: an account that 5 wrong passwords have blocked. Each login
# for it is refused with 429: first alone and counted, then beside GETs.
flood="username=flood-${user/@/%40}&password=wrong-password"
for _ in 1 2 3 4 5; do curl -sS -o /dev/null --data "$flood" "$base/token"; done
code=$(curl -sS -o /dev/null -w '%{http_code}' --data "$flood" "$base/token")
[ "$code" = 429 ] || die "the flood's account is not blocked: $code"
idle_since=$SECONDS
x0=$(xacts)
measure 32 /token BENCH_BODY="$flood"
echo "a flood of refused logins (429), 32 connections alone: $rps logins/s," \
  "$(per_request "$x0" "$(xacts)" "$n") statements per refused login (target <= 0.05)"
during "the flood" BENCH_BODY="$flood"
echo "  the flood: $rps logins/s refused"
echo "peak RSS of myapi: $(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$myapi_pid/status") MB"

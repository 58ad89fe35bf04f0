#!/usr/bin/env bash
# bench/run.sh measures myapi against PostgreSQL's own limit on this
# machine and prints the table of docs/performance.md.
#
# In one run it starts a throwaway PostgreSQL cluster with myapi's own
# local-database code (or uses MYAPI_BENCH_DATABASE_URL), builds myapi and
# starts it on 127.0.0.1, creates a user and logs in, then measures:
#
#   - GET /movies/?movie_id=1 and GET /movies/new?year=1990&rating=9 at 16
#     and 256 connections (wrk), against pgbench -M prepared running the
#     same SQL (the user lookup, then the movie query) at the same
#     concurrency on the same database;
#   - GET /healthz, which touches no database: the ceiling HTTP sets;
#   - POST /token at 4 connections, against the bound bcrypt sets;
#   - GET p99 while a storm of logins runs, against its p99 without one,
#     and while a flood of logins refused with 429 runs;
#   - the peak RSS of the myapi process, and BenchmarkVerifyToken.
#
# Usage: bench/run.sh > table.txt     (about three minutes; progress on stderr)
#
# Needs go, curl, wrk and pgbench; on Debian or Ubuntu:
#   apt-get install -y wrk postgresql     (pgbench comes with the server)
#
# Environment:
#   MYAPI_BENCH_DATABASE_URL  use this database instead of a throwaway
#                             cluster. myapi applies schema.sql and the dev
#                             sample movies to it (ON CONFLICT DO NOTHING);
#                             the bench user it adds is deleted at the end.
#                             pgbench then needs 260 free connections.
#   BENCH_DURATION            seconds per measured run (default 10)
#   MYAPI_DB_MAX_CONNS, MYAPI_BCRYPT_COST, GOMAXPROCS, GOGC
#                             passed on to myapi when set, to try settings;
#                             unset, myapi runs with its defaults.
set -euo pipefail

duration=${BENCH_DURATION:-10}
warmup=2
bench=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench")

# --- tools --------------------------------------------------------------

find_pgbench() {
  if command -v pgbench >/dev/null 2>&1; then
    command -v pgbench
    return
  fi
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4 -n -r); do
    if [ -x "$d/pgbench" ]; then
      echo "$d/pgbench"
      return
    fi
  done
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/pgbench" ]; then
    echo "$(pg_config --bindir)/pgbench"
  fi
}

missing=()
for tool in go curl wrk; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
pgbench=$(find_pgbench)
[ -n "$pgbench" ] || missing+=(pgbench)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: missing: ${missing[*]}" >&2
  echo "  on Debian or Ubuntu: apt-get install -y wrk postgresql curl (pgbench comes with postgresql)" >&2
  echo "  on macOS: brew install wrk postgresql curl, and Go from https://go.dev/dl/" >&2
  exit 1
fi
if [ ! -r /proc/self/stat ]; then
  echo "bench: needs Linux's /proc, to read myapi's CPU time and peak RSS" >&2
  exit 1
fi

# --- clean-up, on any exit, Ctrl-C included ------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/myapi-bench.XXXXXX")
state=$tmp/state # MYAPI_DIR: the throwaway cluster and the dev token key
myapi_pid=""
bench_user=""
pids=() # what run and the storm started and have not seen end

cleanup() {
  local status=$? pid pidfile
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$bench_user" ] && [ -n "${MYAPI_BENCH_DATABASE_URL:-}" ]; then
    delete_bench_user || echo "bench: could not delete the user $bench_user" >&2
  fi
  if [ -n "$myapi_pid" ] && kill -0 "$myapi_pid" 2>/dev/null; then
    # On SIGTERM myapi shuts down and stops the cluster it started.
    kill -TERM "$myapi_pid" 2>/dev/null || true
    for _ in $(seq 150); do
      kill -0 "$myapi_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$myapi_pid" 2>/dev/null || true
  fi
  # Stop what myapi could not, and the cluster of a go test cut short:
  # SIGINT is PostgreSQL's fast shutdown.
  for pidfile in "$tmp"/state/pgdata/postmaster.pid "$tmp"/gotmp/*/pgdata/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(head -n 1 "$pidfile")
    if [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null; then
      for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
  done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run OUT CMD...: runs CMD, its output in OUT, and waits for it. CMD runs
# in the background because bash runs the INT trap only once a foreground
# command has ended, and not at all when that command handles Ctrl-C
# itself and exits 0, as wrk does; a wait ends at once on Ctrl-C. Commands
# whose failure ends the script may stay in the foreground.
run() {
  local out=$1 status=0
  shift
  "$@" >"$out" 2>&1 &
  pids+=($!)
  wait $! || status=$?
  unset 'pids[-1]'
  return $status
}

# --- build and start myapi ----------------------------------------------

echo "bench: building myapi" >&2
go -C "$repo" build -buildvcs=false -o "$tmp/myapi" . # no VCS stamp: the clone may be another user's

# BenchmarkVerifyToken is what every authenticated request pays before
# its first query. go test starts its own throwaway cluster, as the tests do.
echo "bench: go test -bench BenchmarkVerifyToken" >&2
verify_ns=n/a
mkdir "$tmp/gotmp" # TMPDIR for go test, so that clean-up finds its cluster
if run "$tmp/verify.log" env TMPDIR="$tmp/gotmp" \
  go -C "$repo" test -run '^$' -bench '^BenchmarkVerifyToken$' -count 3 .; then
  verify_ns=$(awk '/^BenchmarkVerifyToken/ { print $3 }' "$tmp/verify.log" | sort -g | sed -n 2p)
fi

# myapi runs in $tmp, away from the repository's .env, with only the
# environment listed here: the figures are those of the defaults.
# MYAPI_TRUSTED_PROXIES lets the login storm come from many addresses.
myapi_env=(PATH="$PATH" MYAPI_DIR="$state" MYAPI_ADDR=127.0.0.1:0 MYAPI_ENV=dev MYAPI_TRUSTED_PROXIES=127.0.0.1)
if [ -n "${MYAPI_BENCH_DATABASE_URL:-}" ]; then
  myapi_env+=(MYAPI_DATABASE__DEV="$MYAPI_BENCH_DATABASE_URL")
fi
settings=""
for v in MYAPI_DB_MAX_CONNS MYAPI_BCRYPT_COST GOMAXPROCS GOGC; do
  if [ -n "${!v:-}" ]; then
    myapi_env+=("$v=${!v}")
    settings+=" $v=${!v}"
  fi
done

if [ -z "${MYAPI_BENCH_DATABASE_URL:-}" ]; then
  # migrate creates the cluster, loads the schema and the sample movies,
  # and stops it again. pgbench at 256 clients needs more than the default
  # 100 connections; the last line of postgresql.conf wins.
  echo "bench: creating a throwaway PostgreSQL cluster" >&2
  env -C "$tmp" -i "${myapi_env[@]}" "$tmp/myapi" migrate >/dev/null
  echo "max_connections = 300" >>"$state/pgdata/postgresql.conf"
fi

echo "bench: starting myapi" >&2
env -C "$tmp" -i "${myapi_env[@]}" "$tmp/myapi" serve >"$tmp/serve.out" 2>"$tmp/serve.log" &
myapi_pid=$!
addr=""
for _ in $(seq 600); do
  addr=$(sed -n 's|^myapi listening on http://||p' "$tmp/serve.out")
  [ -n "$addr" ] && break
  if ! kill -0 "$myapi_pid" 2>/dev/null; then
    echo "bench: myapi did not start:" >&2
    tail -n 5 "$tmp/serve.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "bench: myapi did not start listening within 60 s" >&2
  exit 1
fi
base=http://$addr

# pgbench reaches the same database: the throwaway cluster where its
# postmaster.pid says (port, socket directory, listen address).
if [ -n "${MYAPI_BENCH_DATABASE_URL:-}" ]; then
  pgconn=$MYAPI_BENCH_DATABASE_URL
else
  pidfile=$state/pgdata/postmaster.pid
  pgport=$(sed -n 4p "$pidfile")
  pghost=$(sed -n 5p "$pidfile")
  listen=$(sed -n 6p "$pidfile")
  if [ -n "$listen" ]; then
    pghost=$listen
    export PGPASSWORD
    PGPASSWORD=$(cat "$state/pg_password")
  fi
  pgconn="host=$pghost port=$pgport user=myapi dbname=myapi sslmode=disable"
fi

# --- a user and a token -------------------------------------------------

bench_user="bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')@example.com"
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
login_body="grant_type=password&username=${bench_user/@/%40}&password=$password"

delete_bench_user() {
  # One pgbench transaction of one DELETE: psql may not be installed.
  printf 'DELETE FROM myapi.users WHERE email = :email;\n' >"$tmp/delete.sql"
  "$pgbench" -n -M prepared -t 1 -c 1 -f "$tmp/delete.sql" -D email="$bench_user" "$pgconn" >/dev/null 2>&1
}

echo "bench: creating $bench_user" >&2
if ! printf '%s\n' "$password" | env -C "$tmp" -i "${myapi_env[@]}" "$tmp/myapi" \
  create-user -name Bench -email "$bench_user" -password-stdin >"$tmp/create-user.log" 2>&1; then
  cat "$tmp/create-user.log" >&2
  exit 1
fi

# login logs in once and sets login_secs, the time it took, and token.
login() {
  run "$tmp/login.out" curl -sS -w '\n%{http_code} %{time_total}' --data "$login_body" "$base/token" || true
  local code
  read -r code login_secs <<<"$(tail -n 1 "$tmp/login.out")"
  if [ "$code" != 200 ]; then
    echo "bench: login failed: $(head -n 1 "$tmp/login.out")" >&2
    exit 1
  fi
  token=$(head -n 1 "$tmp/login.out" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
}
login
auth="Bearer $token"

# auth.go allows max(1, NumCPU/2) bcrypt comparisons at once.
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
slots=$((cores / 2))
[ "$slots" -ge 1 ] || slots=1

# --- measuring ----------------------------------------------------------

declare -A paths=([movie]="/movies/?movie_id=1" [new]="/movies/new?year=1990&rating=9")
movie_path=${paths[movie]}

# cpu_ticks is the CPU time, user and system, that myapi has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$myapi_pid/stat"; }
clk_tck=$(getconf CLK_TCK)

# wrk_run CONNS SECONDS PATH [post]: runs wrk and sets result to its
# BENCH line (see wrk.lua) and the CPU time myapi used meanwhile.
wrk_run() {
  local conns=$1 secs=$2 path=$3 post=${4:-} t0
  t0=$(cpu_ticks)
  if [ -n "$post" ]; then
    run "$tmp/wrk.out" env BENCH_BODY="$login_body" \
      wrk -t 1 -c "$conns" -d "${secs}s" --timeout 10s -s "$bench/wrk.lua" "$base$path" || true
  else
    run "$tmp/wrk.out" env BENCH_AUTH="$auth" \
      wrk -t 1 -c "$conns" -d "${secs}s" --timeout 5s -s "$bench/wrk.lua" "$base$path" || true
  fi
  result="$(sed -n 's/^BENCH //p' "$tmp/wrk.out") cpu_ticks=$(($(cpu_ticks) - t0))"
  if [[ $result != requests=* ]]; then
    echo "bench: wrk failed: $(tail -n 1 "$tmp/wrk.out")" >&2
    exit 1
  fi
}

# pgbench_run CONNS SCRIPT: runs pgbench and sets result to its scripts
# (transactions) per second, or 0 when it cannot run at this concurrency.
pgbench_run() {
  local conns=$1 script=$2
  result=0
  if ! run "$tmp/pgbench.out" "$pgbench" -n -M prepared -c "$conns" -j 1 -T "$duration" -f "$bench/$script" \
    -D email="$bench_user" -D movie_id=1 -D year=1990 -D rating=9 "$pgconn"; then
    echo "bench: pgbench -c $conns failed: $(tail -n 1 "$tmp/pgbench.out")" >&2
    return
  fi
  result=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$tmp/pgbench.out")
}

# Helpers that read a BENCH line's fields.
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
errors() { # every request that failed: refused, cut, timed out, or not 2xx/3xx
  local s=0 f
  for f in connect read write status timeout; do
    s=$((s + $(field $f "$1")))
  done
  echo "$s"
}
rate() { # requests answered 2xx or 3xx per second
  awk -v n="$(field requests "$1")" -v e="$(field status "$1")" -v us="$(field duration_us "$1")" \
    'BEGIN { r = (n - e) / (us / 1e6); if (r < 100) printf "%.2f", r; else printf "%.0f", r }'
}
ms() { awk -v us="$(field "$1" "$2")" 'BEGIN { printf "%.2f", us / 1000 }'; }
cpu_per_req() {
  awk -v t="$(field cpu_ticks "$1")" -v hz="$clk_tck" -v n="$(field requests "$1")" \
    'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "n/a" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
vmhwm_mb() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$myapi_pid/status"; }

echo "bench: GET /healthz at 16 connections, ${duration}s" >&2
wrk_run 16 "$warmup" /healthz
wrk_run 16 "$duration" /healthz
healthz=$result

declare -A res
for route in movie new; do
  path=${paths[$route]}
  echo "bench: warming up $path" >&2
  wrk_run 16 "$warmup" "$path"
  for conns in 16 256; do
    echo "bench: GET $path at $conns connections, ${duration}s" >&2
    wrk_run "$conns" "$duration" "$path"
    res[$route,$conns]=$result
    echo "bench: pgbench $route.sql at $conns clients, ${duration}s" >&2
    pgbench_run "$conns" "$route.sql"
    res[$route,$conns,pg]=$result
  done
done
rss_256=$(vmhwm_mb)

# One login alone is one bcrypt comparison plus well under a millisecond
# of HTTP and SQL: the median of five, taken just before the POST run, is
# the time of one bcrypt.
echo "bench: timing one login alone, five times" >&2
times=()
for _ in 1 2 3 4 5; do
  login
  times+=("$login_secs")
done
bcrypt_secs=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 3p)

echo "bench: POST /token at 4 connections, ${duration}s" >&2
wrk_run 4 "$duration" /token post
logins=$result

# The storm: 32 connections of logins that each reach bcrypt (see
# wrk.lua), eight times what the bcrypt queue serves in its 3 s wait.
storm_conns=32

# under_load NAME VAR=VALUE...: measures the GET route while wrk sends
# storm_conns connections of logins, made as the variables tell wrk.lua;
# sets result to the GETs' BENCH line and load to the logins'.
under_load() {
  local name=$1
  shift
  env "$@" wrk -t 1 -c "$storm_conns" -d $((duration + 2 * warmup))s --timeout 10s \
    -s "$bench/wrk.lua" "$base/token" >"$tmp/$name.out" 2>&1 &
  pids+=($!)
  sleep "$warmup"
  wrk_run 16 "$duration" "$movie_path"
  wait "${pids[-1]}" || true
  unset 'pids[-1]'
  load=$(sed -n 's/^BENCH //p' "$tmp/$name.out")
}

echo "bench: GET $movie_path at 16 connections, without and with a login storm" >&2
wrk_run 16 "$duration" "$movie_path"
calm=$result
under_load storm BENCH_STORM=1
stormy=$result
storm=$load

# The flood: wrong passwords for an account already blocked. Each is
# refused with 429 after one read of the throttle table, with no bcrypt
# and no write.
echo "bench: GET $movie_path at 16 connections during a flood of refused logins" >&2
flood_body="username=flood-${bench_user/@/%40}&password=wrong-password"
for _ in 1 2 3 4 5 6; do
  curl -sS -o /dev/null --data "$flood_body" "$base/token"
done
under_load flood BENCH_BODY="$flood_body"
flooded=$result
flood=$load
rss_end=$(vmhwm_mb)

# --- the table ----------------------------------------------------------

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
pgversion=$("$pgbench" --version | sed -n 's/^pgbench (PostgreSQL) \([0-9.]*\).*/\1/p')
echo "myapi bench, $(date -u '+%Y-%m-%d %H:%M UTC'): $cores cores, ${cpu:-unknown CPU}, $(go env GOVERSION), PostgreSQL $pgversion"
echo "command: bench/run.sh (${duration}s per run; wrk -t 1; pgbench -M prepared -j 1)${settings:+; with$settings}"
echo
row() { printf '%-34s %5s %8s %6s %7s %6s %8s %9s %7s\n' "$@"; }
row "" "" "myapi" "p50" "p99" "" "myapi" "pgbench" "myapi /"
row route conns "req/s" ms ms errors "CPU us" "scripts/s" pgbench
row "GET /healthz (no database)" 16 "$(rate "$healthz")" "$(ms p50_us "$healthz")" "$(ms p99_us "$healthz")" \
  "$(errors "$healthz")" "$(cpu_per_req "$healthz")" "" ""
for route in movie new; do
  for conns in 16 256; do
    r=${res[$route,$conns]}
    pg=${res[$route,$conns,pg]}
    row "GET ${paths[$route]}" "$conns" "$(rate "$r")" "$(ms p50_us "$r")" "$(ms p99_us "$r")" "$(errors "$r")" \
      "$(cpu_per_req "$r")" "$(printf '%.0f' "$pg")" "$(ratio "$(rate "$r")" "$pg")"
  done
done
echo "(CPU us: myapi's CPU time per request, user and system, in microseconds)"
echo
bound=$(awk -v s="$slots" -v t="$bcrypt_secs" 'BEGIN { printf "%.2f", s / t }')
login_rate=$(rate "$logins")
echo "POST /token, 4 connections: $login_rate logins/s, $(errors "$logins") errors"
echo "  bcrypt bound: $slots at once / $bcrypt_secs s each = $bound logins/s; ratio $(ratio "$login_rate" "$bound")"
echo "GET $movie_path, 16 connections, p99: $(ms p99_us "$calm") ms alone," \
  "$(ms p99_us "$stormy") ms during a login storm; ratio $(ratio "$(field p99_us "$stormy")" "$(field p99_us "$calm")")"
echo "  $(rate "$calm") req/s alone; $(rate "$stormy") req/s and $(errors "$stormy") errors during the storm"
echo "  the storm, $storm_conns connections: $(awk -v n="$(field requests "$storm")" -v us="$(field duration_us "$storm")" 'BEGIN { printf "%.2f", n / (us / 1e6) }') logins/s, each 401 after bcrypt or 503 after the queue's 3 s"
echo "GET $movie_path, 16 connections, p99 during a flood of refused logins: $(ms p99_us "$flooded") ms;" \
  "ratio to alone $(ratio "$(field p99_us "$flooded")" "$(field p99_us "$calm")")"
echo "  $(rate "$flooded") req/s and $(errors "$flooded") errors during the flood;" \
  "the flood, $storm_conns connections: $(awk -v n="$(field requests "$flood")" -v us="$(field duration_us "$flood")" 'BEGIN { printf "%.0f", n / (us / 1e6) }') logins/s refused"
echo "peak RSS of myapi: $rss_256 MB after the 256-connection runs, $rss_end MB at the end"
echo "BenchmarkVerifyToken: $verify_ns ns/op (median of 3)"

# --- the targets --------------------------------------------------------

echo
held=0
total=0
check() { # check DESCRIPTION AWK-CONDITION
  total=$((total + 1))
  if awk "BEGIN { exit !($2) }" 2>/dev/null; then
    held=$((held + 1))
    echo "  holds:    $1"
  else
    echo "  DOES NOT: $1"
  fi
}
echo "targets:"
for route in movie new; do
  path=${paths[$route]}
  r16=$(rate "${res[$route,16]}")
  r256=$(rate "${res[$route,256]}")
  e256=$(errors "${res[$route,256]}")
  pg16=${res[$route,16,pg]}
  check "GET $path at 16 connections >= 0.5 x pgbench: $(ratio "$r16" "$pg16")" \
    "$pg16 > 0 && $r16 >= 0.5 * $pg16"
  check "GET $path at 256 >= 0.9 x at 16: $(ratio "$r256" "$r16"), with $e256 errors" \
    "$r256 >= 0.9 * $r16 && $e256 == 0"
done
check "POST /token >= 0.9 x the bcrypt bound: $(ratio "$login_rate" "$bound")" "$login_rate >= 0.9 * $bound"
check "GET p99 during a login storm <= 2.5 x alone: $(ratio "$(field p99_us "$stormy")" "$(field p99_us "$calm")")" \
  "$(field p99_us "$stormy") <= 2.5 * $(field p99_us "$calm")"
check "GET p99 during a flood of refused logins <= 2.5 x alone: $(ratio "$(field p99_us "$flooded")" "$(field p99_us "$calm")")" \
  "$(field p99_us "$flooded") <= 2.5 * $(field p99_us "$calm")"
check "peak RSS at 256 connections < 40 MB: $rss_256 MB" "$rss_256 < 40"
echo "$held of $total targets hold"

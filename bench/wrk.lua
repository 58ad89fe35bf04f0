-- wrk script for bench/run.sh. The request comes from the environment:
-- BENCH_AUTH, an Authorization header for GETs; BENCH_BODY, a login form to
-- POST; or BENCH_STORM=1, logins that each reach bcrypt: a wrong password
-- for a new email from a new address (myapi trusts X-Forwarded-For from
-- 127.0.0.1 in the bench), so that the throttle refuses none of them. done
-- prints one machine-readable line for run.sh to read.

local auth = os.getenv("BENCH_AUTH")
local body = os.getenv("BENCH_BODY")
local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }
if os.getenv("BENCH_STORM") == "1" then
  local n = 0
  local run = os.time()
  request = function()
    n = n + 1
    local h = { ["Content-Type"] = form["Content-Type"],
      ["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256) }
    return wrk.format("POST", nil, h, string.format("username=storm-%d-%d%%40example.com&password=wrong", run, n))
  end
elseif body and body ~= "" then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = form["Content-Type"]
elseif auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end

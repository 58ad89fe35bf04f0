-- wrk script for bench/run.sh. Without variables wrk sends its GET, with
-- run.sh's -H headers. BENCH_BODY: POST this login form instead.
-- BENCH_STORM=1: POST logins that each reach bcrypt, each a new email from a
-- new X-Forwarded-For address, so that the throttle refuses none of them.
local form = "application/x-www-form-urlencoded"

if os.getenv("BENCH_STORM") == "1" then
  local n, run = 0, os.time()
  request = function()
    n = n + 1
    local addr = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
    local body = string.format("username=storm-%d-%d%%40example.com&password=wrong-password", run, n)
    return wrk.format("POST", nil, { ["Content-Type"] = form, ["X-Forwarded-For"] = addr }, body)
  end
elseif os.getenv("BENCH_BODY") then
  wrk.method = "POST"
  wrk.body = os.getenv("BENCH_BODY")
  wrk.headers["Content-Type"] = form
end

-- done prints "BENCH requests req/s p50_ms p99_ms errors" for run.sh; errors
-- are requests refused, cut, timed out, or answered other than 2xx or 3xx.
function done(summary, latency)
  local e = summary.errors
  local rate = summary.requests / (summary.duration / 1e6)
  local rate_format = rate < 100 and "%.2f" or "%.0f" -- logins/s need decimals
  io.write(string.format("BENCH %d " .. rate_format .. " %.2f %.2f %d\n", summary.requests, rate,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, e.connect + e.read + e.write + e.status + e.timeout))
end

-- Shared helpers for the job-chaining wrk scripts (fasttask.lua, peer.lua).
--
-- wrk gives a Lua state per *thread*, not per connection, and response()/request()
-- carry no connection id. The chain submit -> wait/poll -> submit therefore keeps its
-- state in thread globals, which is only correct with ONE connection per thread:
-- always run these scripts as `wrk -t N -c N` (bench/core.py does).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local M = {}

-- monotonic wall clock in microseconds
function M.now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

-- first "key": "string" in a JSON body (the job JSON of both systems has id and
-- status at top level before any nested object that could repeat the key)
function M.json_str(body, key)
  if body == nil then return nil end
  return body:match('"' .. key .. '"%s*:%s*"([^"]*)"')
end

-- POST path with the JSON body {"x": n}
function M.post_x(path, n)
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, '{"x": ' .. n .. '}')
end

local threads = {}
M.threads = threads

function M.setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

local function pct(sorted, p)
  local n = #sorted
  if n == 0 then return 0 end
  local k = math.ceil(p / 100 * n)
  if k < 1 then k = 1 end
  if k > n then k = n end
  return sorted[k]
end

-- Gathers the per-thread globals `lat` (per-job latencies, us) and the counters
-- named in `counters` and prints one machine-readable line:
--   BENCH_RESULT {"jobs": .., "jobs_per_s": .., "p50_ms": .., "p99_ms": .., ...}
function M.done(summary, counters)
  local all = {}
  local totals = {}
  for _, name in ipairs(counters) do totals[name] = 0 end
  for _, t in ipairs(threads) do
    local lat = t:get("lat") or {}
    for i = 1, #lat do all[#all + 1] = lat[i] end
    for _, name in ipairs(counters) do totals[name] = totals[name] + (t:get(name) or 0) end
  end
  table.sort(all)
  local secs = summary.duration / 1e6
  local sum = 0
  for i = 1, #all do sum = sum + all[i] end
  local parts = {
    string.format('"jobs": %d', #all),
    string.format('"duration_s": %.3f', secs),
    string.format('"jobs_per_s": %.1f', #all / secs),
    string.format('"mean_ms": %.3f', #all > 0 and sum / #all / 1000 or 0),
    string.format('"p50_ms": %.3f', pct(all, 50) / 1000),
    string.format('"p90_ms": %.3f', pct(all, 90) / 1000),
    string.format('"p99_ms": %.3f', pct(all, 99) / 1000),
    string.format('"max_ms": %.3f', (all[#all] or 0) / 1000),
    string.format('"http_requests": %d', summary.requests),
    string.format('"socket_errors": %d', summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout),
    string.format('"http_errors": %d', summary.errors.status),
    string.format('"connections": %d', #threads),
  }
  for _, name in ipairs(counters) do
    parts[#parts + 1] = string.format('"%s": %d', name, totals[name])
  end
  io.write("BENCH_RESULT {" .. table.concat(parts, ", ") .. "}\n")
end

return M

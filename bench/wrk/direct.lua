-- wrk script for a service that answers a request with its result (Ray Serve in bench/batching.py):
-- per connection, POST PATH {"x": n} -> 200 with the result -> repeat.
-- Run with one connection per thread:  wrk -t N -c N -d 20s --timeout 70s -s direct.lua URL -- PATH
-- Per-job latency = request built (just before it is sent) -> answer received.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local PATH = "/infer"
local t0 = 0
local n = 0

lat = {}
failed = 0                  -- answers other than 200

function setup(thread) common.setup(thread) end

function init(args) PATH = args[1] or PATH end

function request()
  n = n + 1
  t0 = common.now_us()
  return common.post_x(PATH, n)
end

function response(status, headers, body)
  if status == 200 then lat[#lat + 1] = common.now_us() - t0 else failed = failed + 1 end
end

function done(summary, latency, requests)
  common.done(summary, { "failed" })
end

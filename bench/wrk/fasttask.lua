-- wrk script for fasttask: per connection, submit -> GET /jobs/<id>?wait=60 -> repeat.
-- Run with one connection per thread:  wrk -t N -c N -d 10s --timeout 70s -s fasttask.lua URL [-- PATH [MODE]]
-- PATH is the task endpoint to submit to (default /noop). MODE:
--   plain   (default) the submit as above
--   key     each submit carries an Idempotency-Key of its own (never repeated, so every submit makes a job)
--   prefer  each submit carries `Prefer: wait=30`: a job that ends in time is one request (200, finished);
--           one that does not (202) is waited for with GET as above
--   X       the JSON body {"x": n} instead of an empty form, n counting this connection's jobs
-- Per-job latency = submit request built (just before it is sent) -> finished job JSON received.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local SUBMIT = nil
local PATH = "/noop"
local MODE = "plain"
local nonce = ""            -- this run's and thread's prefix of the keys: unique across runs on one server
local submits = 0
local job_id = nil          -- job being waited for on this connection (nil: submit next)
local t0 = 0                -- when the current job's submit was sent

-- thread globals read back by done() through thread:get()
lat = {}                    -- per-job latency in us
failed = 0                  -- jobs that ended in a final state other than finished
rejected = 0                -- submits answered with anything but 202/200 (e.g. 429)
bad_reads = 0               -- non-200 answers to the wait
polls = 0                   -- GET /jobs/<id> requests sent (more than jobs if a wait expired)

function setup(thread) common.setup(thread) end

local FORM = "application/x-www-form-urlencoded"

function init(args)
  PATH = args[1] or "/noop"
  MODE = args[2] or "plain"
  nonce = string.format("%d-%d-", math.floor(common.now_us()), tid or 0)
  local headers = { ["Content-Type"] = FORM }
  if MODE == "prefer" then headers["Prefer"] = "wait=30" end
  SUBMIT = wrk.format("POST", PATH, headers, "")
end

function request()
  if job_id == nil then
    t0 = common.now_us()
    if MODE == "X" then
      submits = submits + 1
      return common.post_x(PATH, submits)
    end
    if MODE == "key" then
      submits = submits + 1
      return wrk.format("POST", PATH, { ["Content-Type"] = FORM, ["Idempotency-Key"] = nonce .. submits }, "")
    end
    return SUBMIT
  end
  polls = polls + 1
  return wrk.format("GET", "/jobs/" .. job_id .. "?wait=60")
end

local FINAL_OTHER = { failed = true, cancelled = true, timeout = true }

function response(status, headers, body)
  if job_id == nil then
    if status == 200 and common.json_str(body, "status") == "finished" then  -- Prefer: wait, final in time
      lat[#lat + 1] = common.now_us() - t0
    elseif status == 202 or status == 200 then
      job_id = common.json_str(body, "id")
      if job_id == nil then rejected = rejected + 1 end
    else
      rejected = rejected + 1
    end
    return
  end
  if status ~= 200 then
    bad_reads = bad_reads + 1
    job_id = nil
    return
  end
  local st = common.json_str(body, "status")
  if st == "finished" then
    lat[#lat + 1] = common.now_us() - t0
    job_id = nil
  elseif FINAL_OTHER[st] then
    failed = failed + 1
    job_id = nil
  end
  -- queued/running: the wait expired before the job was final; wait again on the same id
end

function done(summary, latency, requests)
  common.done(summary, { "failed", "rejected", "bad_reads", "polls" })
end

-- wrk script for the peer (fast-task-api 1.2.9): per connection, submit (POST /noop) ->
-- poll POST /status?job_id=<id> every POLL_MS (default 5, like its clients) until
-- "Finished" -> repeat. The pause is wrk's delay() hook (ms before the next request).
-- Run with one connection per thread:  wrk -t N -c N -d 10s -s peer.lua URL [-- POLL_MS]
-- Per-job latency = submit request built (just before it is sent) -> "Finished" answer received.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local SUBMIT = nil
local POLL_MS = 5
local job_id = nil
local t0 = 0
local next_delay = 0

lat = {}
failed = 0      -- jobs the peer reported "Failed"/"Timeout" for a reason other than not found
lost = 0        -- jobs that vanished: the peer answered "Job not found." before we saw Finished
rejected = 0    -- submits that did not return a queued job (non-200, or status Failed at once)
bad_reads = 0   -- non-200 answers to /status
polls = 0       -- /status requests sent
done_at_submit = 0  -- jobs the peer already reported "Finished" (with result) in the submit answer

function setup(thread) common.setup(thread) end

function init(args)
  if args[1] then POLL_MS = tonumber(args[1]) end
  SUBMIT = wrk.format("POST", "/noop", { ["Content-Type"] = "application/x-www-form-urlencoded" }, "")
end

function delay()
  return next_delay
end

function request()
  if job_id == nil then
    t0 = common.now_us()
    return SUBMIT
  end
  polls = polls + 1
  return wrk.format("POST", "/status?job_id=" .. job_id, nil, "")
end

function response(status, headers, body)
  if job_id == nil then
    local st = common.json_str(body, "status")
    if status == 200 and st == "Finished" then
      -- the job ran before the submit was answered: the result is already in hand
      lat[#lat + 1] = common.now_us() - t0
      done_at_submit = done_at_submit + 1
      next_delay = 0
    elseif status == 200 and (st == "Queued" or st == "Processing") then
      job_id = common.json_str(body, "id")
      next_delay = POLL_MS
    else
      rejected = rejected + 1     -- e.g. a full queue: 200 with status "Failed"
      next_delay = 0
    end
    return
  end
  if status ~= 200 then
    bad_reads = bad_reads + 1
    job_id, next_delay = nil, 0
    return
  end
  local st = common.json_str(body, "status")
  if st == "Finished" then
    lat[#lat + 1] = common.now_us() - t0
    job_id, next_delay = nil, 0
  elseif st == "Failed" or st == "Timeout" then
    if common.json_str(body, "error") == "Job not found." then
      lost = lost + 1
    else
      failed = failed + 1
    end
    job_id, next_delay = nil, 0
  else
    next_delay = POLL_MS        -- Queued / Processing: poll again after POLL_MS
  end
end

function done(summary, latency, requests)
  common.done(summary, { "failed", "lost", "rejected", "bad_reads", "polls", "done_at_submit" })
end

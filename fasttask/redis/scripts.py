"""Lua scripts: each step of a job's life that must be atomic in Redis is one script, one round trip.

They touch keys they build from RQ's layout (`rq:job:<id>`, `rq:wip:<queue>`, ...), which is fine on a
single Redis (or a primary with replicas); Redis Cluster is not supported. The key prefixes and field names
are written here as `${...}` placeholders, filled from `keys` when this module loads: the scripts that
Redis runs are plain text with the same names, and every name still has one home.
"""

from __future__ import annotations

from string import Template

from . import keys

_NAMES = {
    "job": keys.job_key(""),
    "wip": keys.started_registry_key(""),
    "queue": keys.queue_key(""),
    "canceled": keys.canceled_registry_key(""),
    "command": keys.worker_command_channel(""),
    "outputs": keys.OUTPUTS_PREFIX,
    "events": keys.EVENTS_CHANNEL,
    "execution": keys.F_EXECUTION,
    "outcome": keys.F_OUTCOME,
    "failures": keys.F_FAILURES,
}


def _lua(text: str) -> str:
    return Template(text).substitute(_NAMES)


SUBMIT = _lua("""
-- KEYS: queue list, job hash. ARGV: limit, job id, queued channel, then the job's field/value pairs.
-- The id goes in first and the queue's new length says whether it fitted: one command fewer than asking
-- first. (A script runs alone, so nobody sees an id that is taken back.)
if redis.call('RPUSH', KEYS[1], ARGV[2]) > tonumber(ARGV[1]) then
  redis.call('RPOP', KEYS[1])
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
""")

_START = """
-- One popped job id: when its job is still queued, marks it started and registers its execution in RQ's
-- StartedJobRegistry with a lease the worker's heartbeat keeps extending; returns the job hash as a flat list
-- (the fields written here come last, and win). Anything else (cancelled or expired while it waited): nil.
local function start(id, now, lease, worker, execution, queue)
  local job_key = '${job}' .. id
  local fields = redis.call('HGETALL', job_key)
  local status = nil
  for j = 1, #fields, 2 do
    if fields[j] == 'status' then
      status = fields[j + 1]
      break
    end
  end
  if status ~= 'queued' then
    return nil
  end
  local started = {'status', 'started', 'started_at', now, 'last_heartbeat', now,
    'worker_name', worker, '${execution}', execution}
  redis.call('HSET', job_key, unpack(started))
  redis.call('PERSIST', job_key)
  redis.call('ZADD', '${wip}' .. queue, lease, id .. ':' .. execution)
  for _, part in ipairs(started) do
    fields[#fields + 1] = part
  end
  return fields
end
"""

_CLAIM = (
    _START
    + """
-- keys: the worker's queue lists, in order. argv: now (RQ timestamp), lease deadline (unix s),
-- execution id, worker name, then the queue names of keys.
-- Takes the first job still queued, marks it started and registers its execution in RQ's
-- StartedJobRegistry with a lease the worker's heartbeat keeps extending. Returns the queue, the job id
-- and the job hash as a flat list (the fields the claim wrote come last, and win).
local function claim(keys, argv)
  for i, queue_key in ipairs(keys) do
    while true do
      local id = redis.call('LPOP', queue_key)
      if not id then break end
      local fields = start(id, argv[1], argv[2], argv[4], argv[3], argv[4 + i])
      if fields then
        return {argv[4 + i], id, fields}
      end
      -- cancelled (or expired) while it waited: drop the id and look further
    end
  end
  return false
end
"""
)

_FINISH = """
-- keys: job hash, started registry, results stream, finished/failed registry, outputs list.
-- argv: registry member, status, ended_at, ttl, registry score, job id, result type, payload field
-- ('' for none), payload, worker name, execution id, started (unix s), ended (unix s), has outputs
-- ('1'/'0'), then extra job field/value pairs.
-- Only the holder of the job's registry entry may end it: if a cancel, or RQ's cleanup of abandoned
-- jobs, removed the entry, the result is dropped (returns 0).
local function finish(keys, argv)
  if redis.call('ZREM', keys[2], argv[1]) == 0 then
    return 0
  end
  redis.call('HSET', keys[1], 'status', argv[2], 'ended_at', argv[3], 'last_heartbeat', argv[3], unpack(argv, 15))
  local entry = {'type', argv[7], 'worker_name', argv[10], 'execution_id', argv[11],
    'execution_started_at', argv[12], 'execution_ended_at', argv[13]}
  if argv[8] ~= '' then
    entry[#entry + 1] = argv[8]
    entry[#entry + 1] = argv[9]
  end
  redis.call('XADD', keys[3], 'MAXLEN', '~', '10', '*', unpack(entry))
  redis.call('EXPIRE', keys[3], argv[4])
  redis.call('EXPIRE', keys[1], argv[4])
  if argv[14] == '1' then
    redis.call('EXPIRE', keys[5], argv[4])
  end
  redis.call('ZADD', keys[4], argv[5], argv[6])
  redis.call('PUBLISH', '${events}', argv[6])
  return 1
end
"""

CLAIM = _lua(_CLAIM + "return claim(KEYS, ARGV)\n")

FINISH = _lua(_FINISH + "return finish(KEYS, ARGV)\n")

FINISH_AND_CLAIM = _lua(
    _FINISH
    + _CLAIM
    + """
-- A worker ends its job and takes the next in one call. KEYS: FINISH's 5, then CLAIM's.
-- ARGV: the number of FINISH's arguments, FINISH's arguments, then CLAIM's. Returns {ended, claimed}.
local count = tonumber(ARGV[1])
local ended = finish({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, {unpack(ARGV, 2, count + 1)})
return {ended, claim({unpack(KEYS, 6)}, {unpack(ARGV, count + 2)})}
"""
)

REQUEUE = _lua("""
-- KEYS: job hash, started registry, queue list. ARGV: registry member, job id, queued channel, now,
-- count as a failure ('1'/'0'). Puts a started job back in its queue (a retry, or a worker cut off).
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', ARGV[4], 'started_at', '', 'worker_name', '')
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[1], '${failures}', 1)
end
redis.call('DEL', '${outputs}' .. ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
redis.call('PUBLISH', '${events}', ARGV[2])
return 1
""")

CANCEL = _lua("""
-- KEYS: job hash. ARGV: job id, now (RQ timestamp), now (unix s).
-- A queued job leaves its queue; a running one loses its registry entry (so its result is dropped) and
-- its worker gets RQ's stop-job command.
local f = redis.call('HMGET', KEYS[1], 'status', 'origin', '${execution}', 'worker_name', 'result_ttl')
local status = f[1]
if not status then
  return {'missing'}
end
if status ~= 'queued' and status ~= 'started' and status ~= 'scheduled' and status ~= 'deferred' then
  return {'final', status}
end
local queue = f[2]
if status == 'started' then
  redis.call('ZREM', '${wip}' .. queue, ARGV[1] .. ':' .. (f[3] or ''))
  if f[4] and f[4] ~= '' then
    redis.call('PUBLISH', '${command}' .. f[4], cjson.encode({command = 'stop-job', job_id = ARGV[1]}))
  end
else
  redis.call('LREM', '${queue}' .. queue, 1, ARGV[1])
end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2], '${outcome}', 'cancelled')
redis.call('ZADD', '${canceled}' .. queue, ARGV[3], ARGV[1])
local ttl = tonumber(f[5]) or 3600
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', '${outputs}' .. ARGV[1], ttl)
redis.call('PUBLISH', '${events}', ARGV[1])
return {'cancelled', status}
""")

# -- batches: several jobs of one queue claimed in one step, and finished in one step --------------------

CLAIM_BATCH = _lua(
    _START
    + """
-- KEYS: one queue list. ARGV: now (RQ timestamp), lease deadline (unix s), execution id (each job's is it
-- and its place in the batch), worker name, queue name, most jobs to take, cut-off (RQ timestamp, or '').
-- A batch goes when the queue holds the most, or its oldest job was queued at or before the cut-off (always
-- with ''); until then its jobs stay queued and this returns {depth, the oldest job's enqueued_at}. It takes
-- up to the most, each as CLAIM takes one, and returns {depth, false, {queue, id, fields}...}. RQ timestamps
-- have one fixed width, so comparing them as strings compares the moments.
local depth = redis.call('LLEN', KEYS[1])
if depth == 0 then
  return {0, false}
end
local most = tonumber(ARGV[6])
if depth < most and ARGV[7] ~= '' then
  local oldest = redis.call('LINDEX', KEYS[1], 0)
  local queued_at = redis.call('HGET', '${job}' .. oldest, 'enqueued_at')
  if queued_at and queued_at > ARGV[7] then
    return {depth, queued_at}
  end
end
local reply = {depth, false}
local taken = 0
while taken < most do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  local fields = start(id, ARGV[1], ARGV[2], ARGV[4], ARGV[3] .. '.' .. (taken + 1), ARGV[5])
  if fields then
    taken = taken + 1
    reply[#reply + 1] = {ARGV[5], id, fields}
  end
end
return reply
"""
)

FINISH_MANY = _lua(
    _FINISH
    + """
-- Ends several jobs in one call. KEYS: FINISH's 5 for each job, in order. ARGV: for each job the number of
-- its FINISH arguments, then those arguments. Returns each job's FINISH reply (1 ended, 0 taken before).
local ended = {}
local at = 1
for i = 1, #KEYS / 5 do
  local count = tonumber(ARGV[at])
  local base = (i - 1) * 5
  ended[i] = finish({KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5]},
    {unpack(ARGV, at + 1, at + count)})
  at = at + count + 1
end
return ended
"""
)

# Idempotency-Keys (`keys.idempotency_key`): `~` while the key's first request reads its parameters, then
# `<fingerprint> <job id>`. Their own scripts: a submit without a key runs SUBMIT alone, as before.
HOLD_KEY = """
-- KEYS: the key. ARGV: in-flight mark's lifetime (ms). Returns what the key holds, or false after marking it.
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
redis.call('SET', KEYS[1], '~', 'PX', ARGV[1])
return false
"""

SUBMIT_KEYED = (
    """
-- KEYS: SUBMIT's, then the key. ARGV: SUBMIT's, then the key's value, its lifetime (ms), and '1' when this
-- request marked the key in flight itself (HOLD_KEY), taken off the end.
-- A job the key made already wins (returned, nothing submitted), and so does another request's in-flight
-- mark ('~' returned); else SUBMIT runs as it is, and when it took the job, the key remembers it.
local mine = table.remove(ARGV)
local ttl = table.remove(ARGV)
local value = table.remove(ARGV)
local held = redis.call('GET', KEYS[3])
if held and (held ~= '~' or mine ~= '1') then
  return held
end
local function submit()
"""
    + SUBMIT
    + """
end
local accepted = submit()
if accepted and accepted ~= 0 then
  redis.call('SET', KEYS[3], value, 'PX', ttl)
end
return accepted
"""
)

RELEASE_KEY = """
-- KEYS: the key. ARGV: the value it must still hold to be deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

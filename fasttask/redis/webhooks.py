"""The Redis queue's webhook store: watches and pending deliveries live in Redis, so they outlive every API
and worker process, and any API process may take them up. Claims are one script each: a claimed watch or
delivery is rescored past its lease, so no other process sees it due until the claimant is done or gone."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis

from ..webhook_loops import WebhookStore
from ..webhooks import Delivery, Watch
from . import keys as layout

logger = logging.getLogger("fasttask.webhooks")

KEEP_S = 3 * 86400
"""How long a watch or delivery is kept at most: longer than the default retry schedule (about 7.5 h) and
than a job's default result_ttl, so only the forgotten ones expire."""

CLAIM_DUE = """
-- KEYS: a sorted set of ids by due time. ARGV: now, until, limit, the prefix of the ids' own keys.
-- Returns id, value pairs of the due ids that still exist, each rescored to `until`; gone ones are dropped.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local value = redis.call('GET', ARGV[4] .. id)
  if value then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = value
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

ADVANCE = """
-- KEYS: the watch, the watches set, the due set. ARGV: job id, old watch, new watch ('' ends it), next look,
-- keep seconds, delivery prefix, then delivery id, delivery pairs. Nothing happens unless the watch is still
-- the old one: of two processes that saw the same change, one stores its deliveries.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
for i = 7, #ARGV, 2 do
  redis.call('SET', ARGV[6] .. ARGV[i], ARGV[i + 1], 'EX', ARGV[5])
  redis.call('ZADD', KEYS[3], 0, ARGV[i])
end
return 1
"""

RECORD_STATE = """
-- KEYS: the job hash. ARGV: field, value. A job that expired is not made again.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


class RedisWebhookStore(WebhookStore):
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(CLAIM_DUE)
        self._advance = redis.register_script(ADVANCE)
        self._record_state = redis.register_script(RECORD_STATE)

    async def watch(self, job_id: str, watch: Watch) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(layout.WEBHOOK_WATCH_PREFIX + job_id, watch.dumps(), ex=KEEP_S)
        pipe.zadd(layout.WEBHOOK_WATCHES, {job_id: 0})
        await pipe.execute()

    async def unwatch(self, job_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(layout.WEBHOOK_WATCH_PREFIX + job_id)
        pipe.zrem(layout.WEBHOOK_WATCHES, job_id)
        await pipe.execute()

    async def claim_watches(self, now: float, until: float, limit: int) -> list[tuple[str, str]]:
        pairs = await self._claim(keys=[layout.WEBHOOK_WATCHES], args=[now, until, limit, layout.WEBHOOK_WATCH_PREFIX])
        return [(_text(pairs[i]), _text(pairs[i + 1])) for i in range(0, len(pairs), 2)]

    async def advance(
        self, job_id: str, old: str, new: Watch | None, deliveries: list[Delivery], next_at: float
    ) -> bool:
        args: list[Any] = [job_id, old, "" if new is None else new.dumps(), next_at, KEEP_S]
        args.append(layout.WEBHOOK_DELIVERY_PREFIX)
        for delivery in deliveries:
            args += (delivery.id, delivery.dumps())
        keys = [layout.WEBHOOK_WATCH_PREFIX + job_id, layout.WEBHOOK_WATCHES, layout.WEBHOOK_DUE]
        return bool(await self._advance(keys=keys, args=args))

    async def claim_deliveries(self, now: float, until: float, limit: int) -> list[Delivery]:
        pairs = await self._claim(keys=[layout.WEBHOOK_DUE], args=[now, until, limit, layout.WEBHOOK_DELIVERY_PREFIX])
        claimed = []
        for i in range(0, len(pairs), 2):
            try:
                claimed.append(Delivery.loads(pairs[i + 1]))
            except (ValueError, TypeError) as exc:  # written by another version: dropped, not claimed forever
                delivery_id = _text(pairs[i])
                logger.warning("webhook delivery %s cannot be read (%s); it is dropped", delivery_id, exc)
                await self.settle(Delivery(delivery_id, "", "", "", ""))
        return claimed

    async def pending(self, delivery_id: str) -> bool:
        return bool(await self._redis.exists(layout.WEBHOOK_DELIVERY_PREFIX + delivery_id))

    async def retry(self, delivery: Delivery, due: float) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(layout.WEBHOOK_DELIVERY_PREFIX + delivery.id, delivery.dumps(), ex=KEEP_S)
        pipe.zadd(layout.WEBHOOK_DUE, {delivery.id: due})
        await pipe.execute()

    async def settle(self, delivery: Delivery) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(layout.WEBHOOK_DELIVERY_PREFIX + delivery.id)
        pipe.zrem(layout.WEBHOOK_DUE, delivery.id)
        await pipe.execute()

    async def record_state(self, job_id: str, state: dict[str, Any]) -> None:
        text = json.dumps(state, separators=(",", ":"))
        await self._record_state(keys=[layout.job_key(job_id)], args=[layout.F_WEBHOOK, text])

    async def stop(self, job_id: str) -> None:
        await self._redis.set(layout.webhook_stopped_key(job_id), 1, ex=KEEP_S)

    async def stopped(self, job_id: str) -> bool:
        return bool(await self._redis.exists(layout.webhook_stopped_key(job_id)))

    async def backlog(self) -> int:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(layout.WEBHOOK_WATCHES)
        pipe.zcard(layout.WEBHOOK_DUE)
        watches, deliveries = await pipe.execute()
        return int(watches) + int(deliveries)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The Redis queue's read-only views: `/queues`, `GET /jobs`, workers, recent counts and the charts' history.

`RedisBroker` makes them with its connection and its error guard and hands them out as its `views`; nothing
here writes.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis

from ..brokers.views import (
    JobPage,
    JobViews,
    QueueInfo,
    WorkerInfo,
    activity_us,
    decode_cursor,
    encode_cursor,
    unix_us,
)
from ..jobs import JobRecord, JobStatus
from ..series import MINUTE_S, MinuteStats, percentile
from ..tasks import TaskDef
from . import keys as layout
from .codec import READ_FIELDS, needs_result_entry, parse_rq_timestamp, record_from_redis

T = TypeVar("T")

ABANDONED_SCORE_MARGIN_S = 60
"""Final registries are scored by expiry (end + result_ttl); an entry scored further ahead than
now + result_ttl + this was put there by RQ's own cleanup (failure_ttl, a year), not by fasttask."""
SAMPLED_PER_MINUTE = 25
"""The dashboard's wait and run percentiles read the newest this many jobs per minute, endpoint and registry."""


class RedisViews(JobViews):
    """Answers the read-only questions about a Redis-queue cluster with a bounded number of Redis commands."""

    def __init__(
        self,
        connection: aioredis.Redis,
        queues: Mapping[str, str],
        tasks: Mapping[str, TaskDef],
        guard: Callable[[Awaitable[Any]], Awaitable[Any]],
    ) -> None:
        self._redis = connection
        self._queues = queues
        self._tasks = tasks
        self._guard = guard

    async def queues(self) -> list[QueueInfo]:
        pipe = self._redis.pipeline(transaction=False)
        for queue in self._queues.values():
            pipe.llen(layout.queue_key(queue))
            pipe.zcard(layout.started_registry_key(queue))
            pipe.smembers(layout.queue_workers_key(queue))
        counts = await self._guard(pipe.execute())
        worker_keys = sorted({key for members in counts[2::3] for key in members})
        pipe = self._redis.pipeline(transaction=False)
        for key in worker_keys:
            pipe.hmget(key, "state", "last_heartbeat", "pid", "hostname", "current_job")
        details = dict(zip(worker_keys, await self._guard(pipe.execute()), strict=True))
        stopping = await self._stopping({values[4] for values in details.values() if values[0] and values[4]})
        infos = []
        for (path, _), queued, running, members in zip(
            self._queues.items(), counts[0::3], counts[1::3], counts[2::3], strict=True
        ):
            workers = [_worker_json(key, details[key][:4]) for key in sorted(members) if details[key][0] is not None]
            infos.append(QueueInfo(path, queued, running, self._tasks[path].queue_size, workers, stopping[path]))
        return infos

    async def _stopping(self, current_jobs: set[bytes]) -> Counter[str]:
        """Per endpoint, the jobs workers still run although they were cancelled or timed out (they left the
        started registry then, so `running` no longer counts them): one command per busy worker."""
        stopping: Counter[str] = Counter()
        if not current_jobs:
            return stopping
        pipe = self._redis.pipeline(transaction=False)
        for job_id in current_jobs:
            pipe.hmget(layout.job_key(job_id.decode()), "origin", layout.F_OUTCOME)
        endpoints_of = {queue.encode(): path for path, queue in self._queues.items()}
        for origin, outcome in await self._guard(pipe.execute()):
            if outcome in (b"cancelled", b"timeout") and origin in endpoints_of:
                stopping[endpoints_of[origin]] += 1
        return stopping

    async def list_jobs(
        self, endpoint: str | None, status: JobStatus | None, limit: int, cursor: str | None
    ) -> JobPage:
        """Read from RQ's registries: each source gives its newest jobs older than the cursor (a few more than a
        page), and the merge emits jobs only down to where every source that held more was read."""
        after = decode_cursor(cursor)
        wanted = {status} if status is not None else set(JobStatus)
        queues = {path: queue for path, queue in self._queues.items() if endpoint is None or path == endpoint}
        sources: list[tuple[bool, list[str]]] = []  # (the source held more than it gave, its ids in its order)
        if JobStatus.QUEUED in wanted:
            for queue in queues.values():
                sources.append(await self._queued_ids(queue, after, limit + 1))
        count = limit + 2
        now = time.time()
        before_s = (after[0] + 1) / 1e6 if after is not None else None
        pipe = self._redis.pipeline(transaction=False)
        plans: list[int] = []  # how many ids each command may give (0: unbounded)
        for path, queue in queues.items():
            ttl = math.ceil(self._tasks[path].result_ttl_s)
            ceiling = now + ttl + ABANDONED_SCORE_MARGIN_S
            if JobStatus.RUNNING in wanted:
                pipe.zrange(layout.started_registry_key(queue), 0, -1)
                plans.append(0)
            for registry, statuses in (
                (layout.finished_registry_key(queue), {JobStatus.FINISHED}),
                (layout.failed_registry_key(queue), {JobStatus.FAILED, JobStatus.TIMEOUT}),
            ):
                if wanted & statuses:
                    top = min(ceiling, before_s + ttl) if before_s is not None else ceiling
                    pipe.zrevrangebyscore(registry, top, now, start=0, num=count)
                    plans.append(count)
                    if JobStatus.FAILED in statuses:  # jobs RQ's cleanup failed (scored by its failure_ttl)
                        pipe.zrevrangebyscore(registry, "+inf", f"({ceiling}", start=0, num=100)
                        plans.append(0)
            if JobStatus.CANCELLED in wanted:
                top_cancel: float | str = before_s if before_s is not None else "+inf"
                pipe.zrevrangebyscore(layout.canceled_registry_key(queue), top_cancel, now - ttl, start=0, num=count)
                plans.append(count)
        for bound, members in zip(plans, await self._guard(pipe.execute()), strict=True):
            ids = [as_bytes(member).decode().split(":", 1)[0] for member in members]
            sources.append((bound > 0 and len(ids) >= bound, ids))
        unique = list(dict.fromkeys(job_id for _, ids in sources for job_id in ids))
        records = dict(zip(unique, await self._read_many(unique), strict=True))
        keyed: dict[str, tuple[int, str]] = {}
        horizon: tuple[int, str] | None = None
        for held_more, ids in sources:
            keys = [(activity_us(record), job_id) for job_id in ids if (record := records[job_id]) is not None]
            keyed.update((key[1], key) for key in keys)
            if held_more and keys:
                oldest = min(keys)
                horizon = oldest if horizon is None else max(horizon, oldest)
        held_more_anywhere = any(held_more for held_more, _ in sources)
        matching = sorted(
            (
                key
                for job_id, key in keyed.items()
                if (after is None or key < after)
                and (record := records[job_id]) is not None
                and record.status in wanted
                and (endpoint is None or record.endpoint == endpoint)
            ),
            reverse=True,
        )
        emitted = [key for key in matching if horizon is None or key >= horizon][:limit]
        more = len(matching) > len(emitted) or held_more_anywhere
        jobs = [records[job_id] for _, job_id in emitted]
        next_cursor = encode_cursor(*emitted[-1]) if more and emitted else None
        return JobPage([job for job in jobs if job is not None], next_cursor)

    async def _queued_ids(self, queue: str, after: tuple[int, str] | None, want: int) -> tuple[bool, list[str]]:
        """The newest queued ids older than the cursor, read from the list's tail in chunks (a queue list is
        in submit order, so the scan stops once it has `want` of them)."""
        key = layout.queue_key(queue)
        found: list[str] = []
        end = -1
        while len(found) < want:
            chunk = [as_bytes(raw).decode() for raw in await self._guard(self._redis.lrange(key, end - want + 1, end))]
            if not chunk:
                return False, found
            if after is None:
                found += reversed(chunk)
            else:
                created = await self._guard(self._created_many(chunk))
                found += [
                    job_id
                    for job_id, us in zip(reversed(chunk), reversed(created), strict=True)
                    if (us, job_id) < after
                ]
            if len(chunk) < want:
                return False, found
            end -= want
        return True, found

    async def _created_many(self, job_ids: list[str]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(layout.job_key(job_id), "created_at")
        out = []
        for raw in await pipe.execute():
            moment = parse_rq_timestamp(raw)
            out.append(unix_us(moment) if moment is not None else 0)
        return out

    async def _read_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(layout.job_key(job_id), READ_FIELDS)
        rows = await self._guard(pipe.execute())
        # the result streams of only the jobs whose hash does not say enough, in a second round trip
        streamed = [job_id for job_id, values in zip(job_ids, rows, strict=True) if needs_result_entry(values)]
        entries: dict[str, Any] = {}
        if streamed:
            pipe = self._redis.pipeline(transaction=False)
            for job_id in streamed:
                pipe.xrevrange(layout.results_key(job_id), count=1)
            entries = dict(zip(streamed, await self._guard(pipe.execute()), strict=True))
        return [
            record_from_redis(job_id, values, entries[job_id][0][1] if entries.get(job_id) else None)
            for job_id, values in zip(job_ids, rows, strict=True)
        ]

    async def workers(self) -> list[WorkerInfo]:
        names = sorted(await self._guard(self._redis.smembers(layout.workers_set_key())))
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, "state", "last_heartbeat", "current_job", "queues", "pid", "hostname")
        endpoints_of = {queue: path for path, queue in self._queues.items()}
        infos = []
        for key, values in zip(names, await self._guard(pipe.execute()), strict=True):
            state, heartbeat, current, queues, pid, hostname = (v.decode() if v is not None else None for v in values)
            served = [endpoints_of[q] for q in (queues or "").split(",") if q in endpoints_of]
            if state is None or not served:
                continue  # gone (its record expired), or a worker of another service
            infos.append(
                WorkerInfo(
                    name=as_bytes(key).decode().removeprefix(layout.worker_key("")),
                    endpoints=served,
                    state=state,
                    current_jobs=[current] if current else [],
                    last_heartbeat=parse_rq_timestamp(heartbeat.encode()) if heartbeat else None,
                    pid=int(pid) if pid else None,
                    hostname=hostname,
                )
            )
        return infos

    async def recent(self, window_s: float) -> dict[str, dict[str, int]]:
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for path, queue in self._queues.items():
            ttl = math.ceil(self._tasks[path].result_ttl_s)
            since, ceiling = now + ttl - window_s, now + ttl + ABANDONED_SCORE_MARGIN_S
            pipe.zcount(layout.finished_registry_key(queue), since, ceiling)
            pipe.zcount(layout.failed_registry_key(queue), since, ceiling)
            pipe.zcount(layout.canceled_registry_key(queue), now - window_s, "+inf")
        counts = await self._guard(pipe.execute())
        return {
            path: dict(zip(("finished", "failed", "cancelled"), counts[3 * i : 3 * i + 3], strict=True))
            for i, path in enumerate(self._queues)
        }

    async def history(self, minutes: int) -> dict[str, list[MinuteStats | None]]:
        """Per endpoint and minute (oldest first, the current one last): the jobs that ended, counted in RQ's
        registries, and wait and run percentiles from a sample of them (SAMPLED_PER_MINUTE per registry)."""
        now = time.time()
        first = (int(now // MINUTE_S) - minutes + 1) * MINUTE_S
        spans = [(first + i * MINUTE_S, first + (i + 1) * MINUTE_S) for i in range(minutes)]
        pipe = self._redis.pipeline(transaction=False)
        for path, queue in self._queues.items():
            ttl = math.ceil(self._tasks[path].result_ttl_s)  # final registries are scored by end + result_ttl
            for start, end in spans:
                pipe.zcount(layout.finished_registry_key(queue), start + ttl, f"({end + ttl}")
                pipe.zcount(layout.failed_registry_key(queue), start + ttl, f"({end + ttl}")
                pipe.zcount(layout.canceled_registry_key(queue), start, f"({end}")
                for registry in (layout.finished_registry_key(queue), layout.failed_registry_key(queue)):
                    pipe.zrevrangebyscore(registry, f"({end + ttl}", start + ttl, start=0, num=SAMPLED_PER_MINUTE)
        replies = iter(await self._guard(pipe.execute()))
        counts: dict[str, list[tuple[int, int, int]]] = {}
        sampled: list[str] = []
        for path in self._queues:
            counts[path] = []
            for _ in spans:
                counts[path].append((next(replies), next(replies), next(replies)))
                for _registry in range(2):
                    sampled += [as_bytes(member).decode().split(":", 1)[0] for member in next(replies)]
        times = await self._times(sampled)
        waits: dict[tuple[str, int], list[float]] = {}
        runs: dict[tuple[str, int], list[float]] = {}
        for endpoint, waited, ran, ended in times:
            slot = (endpoint, int((ended - first) // MINUTE_S))
            if waited is not None:
                waits.setdefault(slot, []).append(waited)
            runs.setdefault(slot, []).append(ran)
        history: dict[str, list[MinuteStats | None]] = {}
        for path in self._queues:
            history[path] = []
            for index, (finished, failed, cancelled) in enumerate(counts[path]):
                wait, run = waits.get((path, index), []), runs.get((path, index), [])
                history[path].append(
                    MinuteStats(
                        finished=finished,
                        failed=failed,
                        cancelled=cancelled,
                        wait_p50=percentile(wait, 0.5),
                        wait_p95=percentile(wait, 0.95),
                        run_p50=percentile(run, 0.5),
                        run_p95=percentile(run, 0.95),
                    )
                )
        return history

    async def _times(self, job_ids: list[str]) -> list[tuple[str, float | None, float, float]]:
        """(endpoint, seconds waited, seconds run, end as unix seconds) of ended jobs that had started."""
        if not job_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(layout.job_key(job_id), layout.F_ENDPOINT, "enqueued_at", "started_at", "ended_at")
        out = []
        for endpoint, enqueued, started, ended in await self._guard(pipe.execute()):
            start, end = parse_rq_timestamp(started), parse_rq_timestamp(ended)
            if endpoint is None or start is None or end is None:
                continue  # gone since, or never started (cancelled while queued)
            queued_at = parse_rq_timestamp(enqueued)
            waited = (start - queued_at).total_seconds() if queued_at is not None else None
            out.append((as_bytes(endpoint).decode(), waited, (end - start).total_seconds(), end.timestamp()))
        return out


def as_bytes(value: bytes | str) -> bytes:
    """The client is made without response decoding, so replies are bytes; the stubs allow str too."""
    return value if isinstance(value, bytes) else value.encode()


def _worker_json(key: bytes, values: list[bytes | None]) -> dict[str, Any]:
    state, heartbeat, pid, hostname = (v.decode() if v is not None else None for v in values)
    return {
        "name": key.decode().removeprefix(layout.worker_key("")),
        "state": state,
        "last_heartbeat": heartbeat,
        "pid": int(pid) if pid else None,
        "hostname": hostname,
    }

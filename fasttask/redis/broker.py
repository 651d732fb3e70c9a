"""The Redis queue, API side: jobs are RQ jobs; any number of API processes serve any job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..brokers.base import Broker, JobEvent, ResultFile
from ..errors import (
    JobAlreadyFinal,
    JobNotFound,
    QueueFull,
    QueueUnavailable,
    StorageUnavailable,
)
from ..files import close_files
from ..idempotency import PENDING_S, KeyedJob, in_flight, key_ttl_s
from ..jobs import JobRecord, JobStatus, new_job_id, utcnow
from ..logs import job_log, log_job
from ..loops import LoopHealth, run_forever, stop_tasks
from ..metrics import JobMetrics
from ..settings import Settings
from ..storage import ObjectStore, upload_large_files
from ..tasks import TaskDef
from ..webhook_loops import WebhookService
from ..webhooks import WebhookSpec, initial_state
from . import keys as layout
from . import scripts
from .changes import JobChanges
from .cleanup import CLEANUP_INTERVAL_S, abandoned_callback, clean_up_abandoned, sweep_storage
from .codec import READ_FIELDS, job_record_fields, needs_result_entry, record_from_redis, rq_timestamp
from .views import RedisViews, as_bytes
from .webhooks import RedisWebhookStore

logger = logging.getLogger("fasttask.redis")

T = TypeVar("T")

REDIS_CONNECTIONS = 64
"""Connections one API process opens to Redis at most; more concurrent requests wait their turn."""

STREAM_RECHECK_S = 5.0
"""Streams and long polls re-read the job this often even without a notification (a missed message
during a reconnect cannot leave them hanging)."""

_OFFLINE = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisBroker(Broker):
    """Enqueues RQ jobs with an atomic queue-limit check; reads state and waits on Redis pub/sub."""

    def __init__(self, tasks: Mapping[str, TaskDef], settings: Settings, metrics: JobMetrics | None = None) -> None:
        assert settings.redis_url is not None
        self._tasks = tasks
        self._metrics = metrics
        self._url = settings.redis_url
        # A bounded pool: under load requests wait for a free connection instead of failing. A connection
        # left over from before a Redis restart fails once; its command is retried on a fresh one.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=10,
            socket_connect_timeout=2,
            socket_timeout=10,
            health_check_interval=15,
            retry=AsyncRetry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        # RQ's own code is sync: it builds job records (no I/O) and runs the cleanup (in a thread) with this
        self._rq_connection = SyncRedis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
        self._queues = {path: layout.queue_name(path) for path in tasks}
        self.views = RedisViews(self._redis, self._queues, tasks, self._guard)
        self._settings = settings
        self._store = ObjectStore(settings) if settings.s3_bucket else None
        self._submit = self._redis.register_script(scripts.SUBMIT)
        self._cancel = self._redis.register_script(scripts.CANCEL)
        self._hold_key = self._redis.register_script(scripts.HOLD_KEY)
        self._submit_keyed = self._redis.register_script(scripts.SUBMIT_KEYED)
        self._release_key = self._redis.register_script(scripts.RELEASE_KEY)
        self._holding: dict[str, bool] = {}
        """Idempotency-Keys this process's requests are handling, and whether each is marked in Redis too."""
        self._background: list[asyncio.Task[None]] = []
        self._registered_queues = False
        self.loops = LoopHealth()
        self._changes = JobChanges(self._redis, self.loops)
        self.webhooks = WebhookService(RedisWebhookStore(self._redis), self, settings, self.loops, metrics)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        # also from API processes: a cluster whose workers all died still ends their jobs
        cleanup = run_forever(self.loops, "abandoned-job cleanup", self._clean_up, CLEANUP_INTERVAL_S)
        self._background = [
            asyncio.create_task(self._changes.listen(), name="fasttask-redis-events"),
            asyncio.create_task(cleanup, name="fasttask-redis-cleanup"),
        ]
        if self._store is not None:  # its own loop: storage being away must not stop the cleanup of jobs
            sweep = run_forever(self.loops, "storage sweep", self._sweep_storage, CLEANUP_INTERVAL_S)
            self._background.append(asyncio.create_task(sweep, name="fasttask-storage-sweep"))
        self.webhooks.start()

    async def close(self) -> None:
        await self.webhooks.close()
        await stop_tasks(self._background)
        await self._redis.aclose(close_connection_pool=True)
        self._rq_connection.close()

    async def ready(self) -> bool:
        try:
            await asyncio.wait_for(self._redis.ping(), 2)
        except (RedisError, OSError, asyncio.TimeoutError):
            return False
        return True

    # -- jobs --------------------------------------------------------------------------------------
    async def submit(self, task: TaskDef, params: dict[str, Any], webhook: WebhookSpec | None = None) -> JobRecord:
        record = await self._enqueue(task, params, webhook)
        assert isinstance(record, JobRecord)  # without a key, always a new job
        return record

    async def hold_key(self, task: TaskDef, key: str, quick: bool = False) -> KeyedJob | None:
        name = layout.idempotency_key(task.path, key)
        if name in self._holding:
            raise in_flight(task.path)
        # a quick request is marked here only: one round trip fewer, and SUBMIT_KEYED still decides alone
        self._holding[name] = not quick
        if quick:
            return None
        try:
            held = await self._guard(self._hold_key(keys=[name], args=[int(PENDING_S * 1000)]))
        except BaseException:
            del self._holding[name]
            raise
        if held is None:
            return None
        del self._holding[name]
        if held == b"~":
            raise in_flight(task.path)
        return KeyedJob.decode(held)

    async def submit_keyed(
        self,
        task: TaskDef,
        params: dict[str, Any],
        key: str,
        fingerprint: str,
        webhook: WebhookSpec | None = None,
    ) -> JobRecord | KeyedJob:
        name = layout.idempotency_key(task.path, key)
        try:
            made = await self._enqueue(task, params, webhook, (name, fingerprint, self._holding.get(name, False)))
        finally:
            self._holding.pop(name, None)
        if isinstance(made, KeyedJob) and made.job_id == "":  # another process's request is in flight
            raise in_flight(task.path)
        return made

    async def release_key(self, task: TaskDef, key: str, held: KeyedJob | None = None) -> None:
        name = layout.idempotency_key(task.path, key)
        marked = self._holding.pop(name, False)
        if held is None and not marked:
            return  # marked in this process only (or not at all): nothing in Redis is ours
        value = "~" if held is None else held.encode()
        await self._guard(self._release_key(keys=[name], args=[value]))

    async def _enqueue(
        self,
        task: TaskDef,
        params: dict[str, Any],
        webhook: WebhookSpec | None,
        keyed: tuple[str, str, bool] | None = None,
    ) -> JobRecord | KeyedJob:
        """SUBMIT, or with `keyed` (the key's name, the fingerprint, whether this request marked the key in
        Redis) SUBMIT_KEYED; with a webhook, the job is watched."""
        queue = self._queues[task.path]
        record = JobRecord(new_job_id(), task.path)
        try:
            if self._store is not None:
                # inputs must outlive the wait for a worker as well as the job: a day on top of its result_ttl
                ttl_s = task.result_ttl_s + 24 * 3600
                await upload_large_files(self._store, record.id, params, self._settings.s3_inline_kb * 1024, ttl_s)
            fields = job_record_fields(task, queue, record, params, self._rq_connection)
        finally:
            close_files(params.values())  # their content is in the job record (or the bucket) now
        if webhook is not None:
            record.webhook = initial_state()
            fields[layout.F_WEBHOOK] = json.dumps(record.webhook, separators=(",", ":"))
            # watched before the job exists, so that a crash in between leaves a watch (that ends when no
            # job appears) rather than a job nobody watches
            await self._guard(self.webhooks.watch(record.id, webhook))
        try:
            made = await self._push(task, queue, record, fields, keyed)
        except BaseException:
            if webhook is not None:
                with contextlib.suppress(Exception):
                    await self.webhooks.store.unwatch(record.id)
            raise
        if webhook is not None and isinstance(made, KeyedJob):  # no job of ours: the key's job stands
            with contextlib.suppress(Exception):
                await self.webhooks.store.unwatch(record.id)
        return made

    async def _push(
        self, task: TaskDef, queue: str, record: JobRecord, fields: dict[str, Any], keyed: tuple[str, str, bool] | None
    ) -> JobRecord | KeyedJob:
        flat: list[Any] = []
        for name, value in fields.items():
            flat += (name, value)
        if not self._registered_queues:
            await self._guard(self._redis.sadd(layout.queues_set_key(), *map(layout.queue_key, self._queues.values())))
            self._registered_queues = True
        submit_keys = [layout.queue_key(queue), layout.job_key(record.id)]
        submit_args = [task.queue_size, record.id, layout.queued_channel(queue), *flat]
        if keyed is None:
            accepted = await self._guard(self._submit(keys=submit_keys, args=submit_args))
        else:
            name, fingerprint, marked = keyed
            value = KeyedJob(record.id, fingerprint).encode()
            ttl_ms = int(key_ttl_s(task) * 1000)
            mine = "1" if marked else "0"
            accepted = await self._guard(
                self._submit_keyed(keys=[*submit_keys, name], args=[*submit_args, value, ttl_ms, mine])
            )
            if isinstance(accepted, bytes):  # another request made the key's job first (or `~`: is making it)
                return KeyedJob.decode(accepted)
        if not accepted:
            raise QueueFull(task.path, task.queue_size)
        if job_log.isEnabledFor(logging.INFO):
            log_job(record, "queued")
        return record

    async def get(self, job_id: str) -> JobRecord:
        record = await self._read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        deadline = time.monotonic() + timeout_s
        with self._changes.watching(job_id) as changed:
            while True:
                record = await self.get(job_id)
                remaining = deadline - time.monotonic()
                if record.status.is_final or remaining <= 0:
                    return record
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, STREAM_RECHECK_S))
                changed.clear()

    async def cancel(self, job_id: str) -> JobRecord:
        now = utcnow()
        outcome = await self._guard(
            # the canceled registry is scored by the time of the cancel, to the microsecond (GET /jobs pages on it)
            self._cancel(keys=[layout.job_key(job_id)], args=[job_id, rq_timestamp(now), now.timestamp()])
        )
        verdict = outcome[0].decode()
        if verdict == "missing":
            raise JobNotFound(job_id)
        if verdict == "final":
            record = await self.get(job_id)
            raise JobAlreadyFinal(f"job {job_id} already ended with status {record.status.value}")
        record = await self.get(job_id)
        ran_s = (now - record.started_at).total_seconds() if record.started_at is not None else None
        if self._metrics is not None:
            self._metrics.ended(record.endpoint, JobStatus.CANCELLED, ran_s)
        if job_log.isEnabledFor(logging.INFO):
            log_job(record, "cancelled", ran_s)
        return record

    async def open_stream(self, job_id: str, after_outputs: int = 0) -> AsyncIterator[JobEvent]:
        await self.get(job_id)
        return self._events(job_id, after_outputs)

    async def result_file(self, job_id: str, index: int) -> ResultFile:
        raw = await self._guard(self._redis.hgetall(layout.file_key(job_id, index)))
        if not raw:
            raise JobNotFound(f"{job_id}/files/{index}")
        fields = {as_bytes(k): as_bytes(v) for k, v in raw.items()}
        name, kind = fields[b"file_name"].decode(), fields[b"content_type"].decode()
        if b"object" in fields:
            if self._store is None:
                raise StorageUnavailable("this result file is in object storage, which this process is not set up for")
            key, store = fields[b"object"].decode(), self._store
            return ResultFile(name, kind, int(fields[b"size"]), lambda start, end: store.read_range(key, start, end))
        content = fields[b"content"]
        return ResultFile(name, kind, len(content), lambda start, end: iter((content[start:end],)))

    # -- internals ---------------------------------------------------------------------------------
    async def _read(self, job_id: str) -> JobRecord | None:
        # one command for a job still waiting or running, and for one finished with a result its hash keeps
        # the client does not decode replies: bytes, whatever else the stubs allow
        values = cast("list[bytes | None]", await self._guard(self._redis.hmget(layout.job_key(job_id), READ_FIELDS)))
        entry = None
        if needs_result_entry(values):
            entries = await self._guard(self._redis.xrevrange(layout.results_key(job_id), count=1))
            entry = cast("dict[bytes, bytes]", entries[0][1]) if entries else None
        return record_from_redis(job_id, values, entry)

    async def _events(self, job_id: str, sent_outputs: int) -> AsyncIterator[JobEvent]:
        last: tuple[Any, ...] | None = None
        with self._changes.watching(job_id) as changed:
            while True:
                changed.clear()
                record = await self.get(job_id)
                outputs = await self._guard(self._redis.lrange(layout.outputs_key(job_id), sent_outputs, -1))
                for raw in outputs:
                    sent_outputs += 1
                    yield JobEvent("output", json.loads(raw), sent_outputs)
                if record.status.is_final:
                    yield JobEvent("end", record.to_json(), sent_outputs)
                    return
                state = (record.status, record.progress, record.message)
                if state != last:
                    last = state
                    yield JobEvent("progress", record.to_json(), sent_outputs)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), STREAM_RECHECK_S)

    async def _clean_up(self) -> object:
        owner = f"api-{os.getpid()}"
        failed = abandoned_callback(self._queues, self._metrics)
        return await asyncio.to_thread(clean_up_abandoned, self._rq_connection, self._queues.values(), owner, failed)

    async def _sweep_storage(self) -> object:
        return await asyncio.to_thread(sweep_storage, self._rq_connection, self._store, f"api-{os.getpid()}")

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except _OFFLINE as exc:
            self._registered_queues = False
            raise QueueUnavailable(f"the Redis queue is unreachable: {exc}") from None
        except (OutOfMemoryError, ReadOnlyError) as exc:
            raise QueueUnavailable(f"the Redis queue cannot take writes now: {exc}") from None
        except ResponseError as exc:
            if str(exc).startswith(("OOM", "READONLY")):  # raised by a command inside a Lua script
                raise QueueUnavailable(f"the Redis queue cannot take writes now: {exc}") from None
            raise

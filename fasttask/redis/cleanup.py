"""RQ's cleanup of abandoned jobs, run by every live fasttask process, one at a time per queue.

A job whose worker died keeps its StartedJobRegistry entry until the entry's lease runs out; RQ's
`StartedJobRegistry.cleanup()` then re-queues it (while it has retries left) or fails it with
`AbandonedJobError`. Workers and API processes both run it, so a cluster whose workers all died still
ends such jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from ..jobs import JobRecord, JobStatus
from ..logs import job_log, log_job
from ..loops import SKIPPED
from ..metrics import JobMetrics
from ..storage import ObjectStore
from . import keys as layout

logger = logging.getLogger("fasttask.redis")

CLEANUP_INTERVAL_S = 10
"""How often each live process tries; a lock in Redis lets one of them do it per interval."""


def clean_up_abandoned(
    connection: redis.Redis,
    queues: Iterable[str],
    owner: str,
    on_failed: Callable[[str, str], None] | None = None,
) -> object:
    """Run RQ's cleanup on the queues no other process cleaned in this interval; True if a job was re-queued,
    SKIPPED if other processes had the turn of every queue.

    `on_failed(queue, job_id)` is told of each job the cleanup failed (its last attempt was abandoned).
    """
    requeued = False
    cleaned = False
    errors: list[Exception] = []
    for name in queues:
        try:
            outcome = _clean_queue(connection, name, owner, on_failed)
        except Exception as exc:  # the other queues are still cleaned; the caller's loop logs and retries
            errors.append(exc)
            continue
        if outcome is not SKIPPED:
            cleaned = True
            requeued = requeued or outcome is True
    if requeued:
        for name in queues:
            connection.publish(layout.queued_channel(name), "cleanup")
    if errors:
        raise errors[0]
    if not cleaned:
        return SKIPPED
    return requeued


def _clean_queue(
    connection: redis.Redis, name: str, owner: str, on_failed: Callable[[str, str], None] | None
) -> object:
    if not connection.set(layout.cleanup_lock_key(name), owner, nx=True, ex=CLEANUP_INTERVAL_S):
        return SKIPPED
    with _released_on_error(connection, layout.cleanup_lock_key(name), owner):
        return _run_cleanup(connection, name, on_failed)


def _run_cleanup(connection: redis.Redis, name: str, on_failed: Callable[[str, str], None] | None) -> bool:
    queue = Queue(name, connection=connection, serializer=JSONSerializer)
    before = queue.count
    registry = StartedJobRegistry(queue=queue, serializer=JSONSerializer)
    _drop_unreadable(connection, registry)
    # only jobs that were still running can be failed by the cleanup (leftover entries are skipped)
    expired = [job_id for job_id in registry.get_expired_job_ids() if _status(connection, job_id) == b"started"]
    registry.cleanup()
    if on_failed is not None:
        for job_id in expired:
            if _status(connection, job_id) == b"failed":
                on_failed(name, job_id)
    return queue.count > before


def _drop_unreadable(connection: redis.Redis, registry: StartedJobRegistry) -> None:
    """Remove expired registry entries whose job record RQ cannot read (a key of another type, a field
    that does not parse): RQ's cleanup would raise on them in every round, and so never reach the
    abandoned jobs behind them."""
    for member in connection.zrangebyscore(registry.key, 0, time.time()):
        raw = member.decode() if isinstance(member, bytes) else str(member)
        job_id = registry.parse_job_id(raw)
        try:
            Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            continue  # RQ's cleanup drops those itself
        except (RedisConnectionError, RedisTimeoutError):
            raise  # Redis is away: nothing is wrong with the record
        except Exception as exc:
            connection.zrem(registry.key, raw)
            logger.error(
                "dropped the unreadable job %s from %s (%s: %s)", job_id, registry.key, type(exc).__name__, exc
            )


def sweep_storage(connection: redis.Redis, store: ObjectStore | None, owner: str) -> object:
    """Delete expired objects from the bucket, one process per interval; SKIPPED when another process had
    its turn (or there is no bucket)."""
    lock = layout.cleanup_lock_key("storage")
    if store is None or not connection.set(lock, owner, nx=True, ex=CLEANUP_INTERVAL_S):
        return SKIPPED
    with _released_on_error(connection, lock, owner):
        return store.sweep()


@contextlib.contextmanager
def _released_on_error(connection: redis.Redis, lock: str, owner: str) -> Iterator[None]:
    """A round that failed gives up its turn, so that its own retry, or another process, tries again soon."""
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):
            if connection.get(lock) == owner.encode():
                connection.delete(lock)
        raise


def _status(connection: redis.Redis, job_id: str) -> bytes | None:
    status = connection.hget(layout.job_key(job_id), "status")
    return status.encode() if isinstance(status, str) else status


def abandoned_callback(queues: Mapping[str, str], metrics: JobMetrics | None) -> Callable[[str, str], None]:
    """What RQ's cleanup (run in a thread) calls for each job it failed: counted and logged on the event loop.
    `queues`: endpoint path to queue name."""
    loop = asyncio.get_running_loop()
    endpoints_of = {queue: path for path, queue in queues.items()}

    def count(endpoint: str, job_id: str) -> None:
        if metrics is not None:
            metrics.ended(endpoint, JobStatus.FAILED, None)
        if job_log.isEnabledFor(logging.INFO):
            log_job(JobRecord(job_id, endpoint, JobStatus.FAILED), "failed: its worker was lost")

    def failed(queue: str, job_id: str) -> None:
        endpoint = endpoints_of.get(queue)
        if endpoint is not None:
            loop.call_soon_threadsafe(count, endpoint, job_id)

    return failed

"""RQ's cleanup of abandoned jobs, run by every live fasttask process, one at a time per queue.

A job whose worker died keeps its StartedJobRegistry entry until the entry's lease runs out; RQ's
`StartedJobRegistry.cleanup()` then re-queues it (while it has retries left) or fails it with
`AbandonedJobError`. Workers and API processes both run it, so a cluster whose workers all died still
ends such jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import redis
from rq import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from . import redis_layout as layout
from .storage import ObjectStore

CLEANUP_INTERVAL_S = 10
"""How often each live process tries; a lock in Redis lets one of them do it per interval."""


def clean_up_abandoned(
    connection: redis.Redis,
    queues: Iterable[str],
    owner: str,
    on_failed: Callable[[str, str], None] | None = None,
) -> bool:
    """Run RQ's cleanup on the queues no other process cleaned in this interval; True if a job was re-queued.

    `on_failed(queue, job_id)` is told of each job the cleanup failed (its last attempt was abandoned).
    """
    requeued = False
    for name in queues:
        if not connection.set(layout.cleanup_lock_key(name), owner, nx=True, ex=CLEANUP_INTERVAL_S):
            continue
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        before = queue.count
        registry = StartedJobRegistry(queue=queue, serializer=JSONSerializer)
        # only jobs that were still running can be failed by the cleanup (leftover entries are skipped)
        expired = [job_id for job_id in registry.get_expired_job_ids() if _status(connection, job_id) == b"started"]
        registry.cleanup()
        requeued = requeued or queue.count > before
        if on_failed is not None:
            for job_id in expired:
                if _status(connection, job_id) == b"failed":
                    on_failed(name, job_id)
    if requeued:
        for name in queues:
            connection.publish(layout.queued_channel(name), "cleanup")
    return requeued


def sweep_storage(connection: redis.Redis, store: ObjectStore | None, owner: str) -> int:
    """Delete expired objects from the bucket, one process per interval; returns how many."""
    if store is None or not connection.set(layout.cleanup_lock_key("storage"), owner, nx=True, ex=CLEANUP_INTERVAL_S):
        return 0
    return store.sweep()


def _status(connection: redis.Redis, job_id: str) -> bytes | None:
    status = connection.hget(layout.job_key(job_id), "status")
    return status.encode() if isinstance(status, str) else status

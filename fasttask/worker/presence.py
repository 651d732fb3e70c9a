"""A worker's life in Redis besides its jobs: RQ registration, heartbeat, leases, commands and cleanup."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from rq import Queue
from rq import Worker as RQWorker
from rq.serializers import JSONSerializer

from .. import redis_layout as layout
from ..jobs import JobRecord, JobStatus
from ..logs import job_log, log_job
from ..redis_cleanup import CLEANUP_INTERVAL_S, clean_up_abandoned, sweep_storage

if TYPE_CHECKING:
    from .main import Worker

logger = logging.getLogger("fasttask.worker")

TICK_S = 0.1
LISTEN_TICK_S = 0.05
"""How soon the listener follows the worker between busy and waiting for work."""
HEARTBEAT_S = 5.0
WORKER_TTL_S = 30
"""The worker's RQ record expires this long after its last heartbeat: how long a dead worker stays listed."""


class Presence:
    """Two threads: one keeps the worker's records alive, one listens for commands and new jobs."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        connection = worker.redis
        queues = [Queue(name, connection=connection, serializer=JSONSerializer) for name in worker.queues]
        self.rq_worker = RQWorker(queues, connection=connection, name=worker.name, serializer=JSONSerializer)
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._keep_alive, name="fasttask-heartbeat", daemon=True),
            threading.Thread(target=self._listen, name="fasttask-listener", daemon=True),
        ]
        self._registered = False
        self._beat_job: str | None = None

    def start(self) -> None:
        self._register()
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5)
        try:
            self.rq_worker.register_death()
        except RedisError as exc:
            logger.warning("could not deregister worker %s: %s", self.worker.name, exc)

    def _register(self) -> None:
        try:
            self.rq_worker.register_birth()
            self.rq_worker.set_state("idle")
            self.worker.redis.expire(layout.worker_key(self.worker.name), WORKER_TTL_S)
            self._registered = True
        except (RedisError, OSError) as exc:
            logger.warning("could not register worker %s yet: %s", self.worker.name, exc)

    def _keep_alive(self) -> None:
        next_beat = 0.0
        next_cleanup = time.monotonic() + CLEANUP_INTERVAL_S
        while not self._closed.wait(TICK_S):
            claimed = self.worker.pending_progress_job()
            if claimed is not None:
                self.worker.io.flush_progress(claimed)
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_S
                    self._beat()
                elif self.worker.current_job_id() != self._beat_job:
                    self._show_job()  # `current_job` and `state` follow the job in hand within a tick
                if now >= next_cleanup:
                    next_cleanup = now + CLEANUP_INTERVAL_S
                    self._clean_up()
            except (RedisError, OSError) as exc:
                logger.warning("heartbeat failed: %s", exc)
                self._registered = False
                next_beat = now + 1.0

    def _beat(self) -> None:
        worker = self.worker
        current = worker._current
        self._beat_job = current.job_id if current is not None else None
        key = layout.worker_key(worker.name)
        if not self._registered or not worker.redis.exists(key):
            self._register()  # after a Redis restart, or when Redis was away longer than the TTL
        pipe = worker.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"last_heartbeat": _rq_now(), "state": "busy" if current else "idle"})
        if current is not None:  # RQ's field for the job a worker runs (`rq info`, rq-dashboard, /dashboard)
            pipe.hset(key, "current_job", current.job_id)
        else:
            pipe.hdel(key, "current_job")
        pipe.expire(key, WORKER_TTL_S)
        if current is not None:
            lease = int(time.time()) + _lease_s()
            pipe.zadd(layout.started_registry_key(current.queue), {current.member: lease}, xx=True)
            pipe.hset(layout.job_key(current.job_id), "last_heartbeat", _rq_now())
        pipe.execute()

    def _show_job(self) -> None:
        """Only the worker record's `state` and `current_job`: one or two commands, not a whole beat."""
        worker = self.worker
        current = worker._current
        self._beat_job = current.job_id if current is not None else None
        key = layout.worker_key(worker.name)
        if current is not None:
            worker.redis.hset(key, mapping={"state": "busy", "current_job": current.job_id})
        else:
            pipe = worker.redis.pipeline(transaction=False)
            pipe.hset(key, "state", "idle")
            pipe.hdel(key, "current_job")
            pipe.execute()

    def _clean_up(self) -> None:
        if clean_up_abandoned(self.worker.redis, self.worker.queues, self.worker.name, self._abandoned):
            self.worker.ring()
        sweep_storage(self.worker.redis, self.worker.store, self.worker.name)

    def _abandoned(self, queue: str, job_id: str) -> None:
        """A job RQ's cleanup failed here (its worker was lost): count and log it."""
        task = self.worker.queues.get(queue)
        if task is None:
            return
        if self.worker.metrics is not None:
            self.worker.metrics.ended(task.path, JobStatus.FAILED, None)
        if job_log.isEnabledFor(logging.INFO):
            log_job(JobRecord(job_id, task.path, JobStatus.FAILED), "failed: its worker was lost")

    def _listen(self) -> None:
        """RQ's command channel always; the queued-job channels only while the worker waits for work.

        A busy worker takes its next job when it finishes the last (in the same round trip), so ringing it
        on every submit would only wake it for nothing: with many workers that is most of their work.
        """
        worker = self.worker
        doorbells = [layout.queued_channel(name) for name in worker.queues]
        backoff = 0.1
        while not self._closed.is_set():
            pubsub = worker.redis.pubsub(ignore_subscribe_messages=True)
            listening = False
            try:
                pubsub.subscribe(layout.worker_command_channel(worker.name))
                backoff = 0.1
                while not self._closed.is_set():
                    idle = worker.waiting_for_work.is_set()
                    if idle and not listening:
                        pubsub.subscribe(*doorbells)
                        worker.ring()  # a job may have been queued before we listened
                    elif listening and not idle:
                        pubsub.unsubscribe(*doorbells)
                    listening = idle
                    message = pubsub.get_message(timeout=LISTEN_TICK_S)
                    if message is not None:
                        self._handle(message)
            except (RedisError, OSError) as exc:
                logger.warning("command subscription lost (%s); retrying in %.1f s", exc, backoff)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    pubsub.close()

    def _handle(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if channel.startswith("fasttask:queued:"):
            self.worker.ring()
            return
        try:
            command = json.loads(message["data"])
        except ValueError:
            return
        if command.get("command") == "stop-job" and command.get("job_id"):
            self.worker.request_stop(str(command["job_id"]))
        elif command.get("command") == "shutdown":
            self.worker.stop()


def _rq_now() -> str:
    from ..jobs import utcnow
    from ..redis_records import rq_timestamp

    return rq_timestamp(utcnow())


def _lease_s() -> int:
    from .main import LEASE_S

    return LEASE_S

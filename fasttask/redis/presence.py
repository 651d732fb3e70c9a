"""A worker's life in Redis besides its jobs: RQ registration, heartbeat, leases, commands and cleanup."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Protocol

import redis
from redis.exceptions import RedisError
from rq import Queue, worker_registration
from rq import Worker as RQWorker
from rq.serializers import JSONSerializer

from ..jobs import JobRecord, JobStatus, utcnow
from ..logs import job_log, log_job
from ..loops import Backoff, LoopHealth, run_round
from ..metrics import JobMetrics
from ..storage import ObjectStore
from ..tasks import TaskDef
from . import keys as layout
from .cleanup import CLEANUP_INTERVAL_S, clean_up_abandoned, sweep_storage
from .codec import rq_timestamp
from .jobio import Claimed, JobIO

logger = logging.getLogger("fasttask.worker")

TICK_S = 0.1
LISTEN_TICK_S = 0.05
"""How soon the listener follows the worker between busy and waiting for work."""
HEARTBEAT_S = 5.0
WORKER_TTL_S = 30
"""The worker's RQ record expires this long after its last heartbeat: how long a dead worker stays listed."""
LEASE_S = 20
"""A running job's StartedJobRegistry entry is kept this far ahead by the heartbeat; if the worker dies,
RQ's cleanup finds the entry expired within about this long and re-queues or fails the job."""


class JobTally:
    """RQ's worker counters (`rq info`, rq-dashboard and rq-exporter show them), kept here and written with
    each heartbeat: no command per job, and a record Redis lost gets its totals back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.successful = 0
        self.failed = 0
        self.working_s = 0.0

    def add(self, succeeded: bool, ran_s: float) -> None:
        with self._lock:
            if succeeded:
                self.successful += 1
            else:
                self.failed += 1
            self.working_s += max(0.0, ran_s)

    def rq_fields(self) -> dict[Any, str]:  # Any: redis-py types its keys as a union a str key is not
        with self._lock:
            return {
                "successful_job_count": str(self.successful),
                "failed_job_count": str(self.failed),
                "total_working_time": repr(self.working_s),
            }


def default_worker_name() -> str:
    """Host, pid and a random part: unique per process, and readable in `rq info`."""
    return f"fasttask-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerState(Protocol):
    """What presence reads of its worker, and the calls it makes on it: the worker module imports this one,
    never the reverse."""

    name: str
    redis: redis.Redis
    queues: dict[str, TaskDef]
    store: ObjectStore | None
    io: JobIO
    tally: JobTally
    metrics: JobMetrics | None
    loops: LoopHealth
    loop_label: str
    waiting_for_work: threading.Event

    def current_job(self) -> Claimed | None: ...

    def running_jobs(self) -> list[Claimed]: ...

    def pending_progress_job(self) -> Claimed | None: ...

    def ring(self) -> None: ...

    def stop(self) -> None: ...

    def request_stop(self, job_id: str) -> None: ...


class Presence:
    """Three threads: one keeps the worker's records and leases alive, one cleans up after lost workers
    and expired files, one listens for commands and new jobs. None of them ends before the worker does:
    a failed round is logged, shown in the worker's loop health, and tried again with backoff."""

    def __init__(self, worker: WorkerState) -> None:
        self.worker = worker
        self.loops = worker.loops
        label = worker.loop_label
        self.heartbeat_loop = f"heartbeat{label}"
        self.cleanup_loop = f"abandoned-job cleanup{label}"
        self.sweep_loop = f"storage sweep{label}"
        self.listener_loop = f"command subscription{label}"
        connection = worker.redis
        queues = [Queue(name, connection=connection, serializer=JSONSerializer) for name in worker.queues]
        self.rq_worker = RQWorker(queues, connection=connection, name=worker.name, serializer=JSONSerializer)
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._keep_alive, name="fasttask-heartbeat", daemon=True),
            threading.Thread(target=self._maintain, name="fasttask-cleanup", daemon=True),
            threading.Thread(target=self._listen, name="fasttask-listener", daemon=True),
        ]
        for name in (self.heartbeat_loop, self.cleanup_loop, self.listener_loop):
            self.loops.register(name)
        if worker.store is not None:
            self.loops.register(self.sweep_loop)
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
            self.worker.redis.hset(layout.worker_key(self.worker.name), mapping=self.worker.tally.rq_fields())
            self.rq_worker.register_death()
        except (RedisError, OSError) as exc:
            logger.warning("could not deregister worker %s: %s", self.worker.name, exc)

    def _register(self) -> None:
        try:
            self._announce()
        except (RedisError, OSError) as exc:
            logger.warning("could not register worker %s yet: %s", self.worker.name, exc)

    def _announce(self) -> None:
        """Register as an RQ worker, or again after Redis came back."""
        connection = self.worker.redis
        key = layout.worker_key(self.worker.name)
        kind = connection.type(key)
        if kind not in (b"hash", b"none"):  # not a worker record: made again
            logger.error("the record %s of this worker was a %r, not a hash; made it again", key, kind)
            connection.delete(key)
        elif kind == b"hash" and not connection.hexists(key, "death"):
            # Our own record (names are unique per process), kept across a Redis restart by its AOF: RQ's
            # register_birth would refuse it as "an active worker named ... already". Keep it, with its
            # job counters, and join the worker sets again.
            pipe = connection.pipeline(transaction=False)
            worker_registration.register(self.rq_worker, pipe)
            pipe.expire(key, WORKER_TTL_S)
            pipe.execute()
        else:
            self.rq_worker.register_birth()
            self.rq_worker.set_state("idle")
            connection.expire(key, WORKER_TTL_S)
        self._registered = True

    def _keep_alive(self) -> None:
        next_beat = 0.0
        backoff = Backoff(0.5, HEARTBEAT_S)
        while not self._closed.wait(TICK_S):
            claimed = self.worker.pending_progress_job()
            if claimed is not None and claimed.throttle is not None:
                claimed.throttle.flush()  # the last report of a burst, which the task itself did not write
            now = time.monotonic()
            if now >= next_beat:
                retry_in = run_round(self.loops, self.heartbeat_loop, self._beat, backoff)
                next_beat = now + (HEARTBEAT_S if retry_in is None else retry_in)
                if retry_in is not None:
                    self._registered = False  # Redis may have restarted without our record: check at the next beat
            elif self._job_id(self.worker.current_job()) != self._beat_job:
                # `current_job` and `state` follow the job in hand within a tick
                retry_in = run_round(self.loops, self.heartbeat_loop, self._show_job, backoff)
                if retry_in is not None:
                    next_beat = now + retry_in

    def _maintain(self) -> None:
        """RQ's cleanup of lost workers' jobs and the storage sweep, each with its own backoff: storage
        being away never stops the cleanup, and neither can delay the heartbeat's lease renewal."""
        cleanup_backoff = Backoff(0.5, CLEANUP_INTERVAL_S)
        sweep_backoff = Backoff(0.5, CLEANUP_INTERVAL_S)
        next_cleanup = next_sweep = time.monotonic() + CLEANUP_INTERVAL_S
        while not self._closed.wait(max(0.0, min(next_cleanup, next_sweep) - time.monotonic())):
            now = time.monotonic()
            if now >= next_cleanup:
                retry_in = run_round(self.loops, self.cleanup_loop, self._clean_up, cleanup_backoff)
                next_cleanup = time.monotonic() + (CLEANUP_INTERVAL_S if retry_in is None else retry_in)
            if now >= next_sweep:
                if self.worker.store is None:
                    next_sweep = float("inf")
                    continue
                retry_in = run_round(self.loops, self.sweep_loop, self._sweep, sweep_backoff)
                next_sweep = time.monotonic() + (CLEANUP_INTERVAL_S if retry_in is None else retry_in)

    def _beat(self) -> None:
        worker = self.worker
        current = worker.current_job()
        self._beat_job = self._job_id(current)
        key = layout.worker_key(worker.name)
        if not self._registered or not worker.redis.exists(key):
            self._announce()  # after a Redis restart, or when Redis was away longer than the TTL
        pipe = worker.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"last_heartbeat": _rq_now(), "state": "busy" if current else "idle"})
        pipe.hset(key, mapping=worker.tally.rq_fields())
        if current is not None:  # RQ's field for the job a worker runs (`rq info`, rq-dashboard, /dashboard)
            pipe.hset(key, "current_job", current.job_id)
        else:
            pipe.hdel(key, "current_job")
        pipe.expire(key, WORKER_TTL_S)
        running = worker.running_jobs()
        if running:  # one job, or every job of a batch (all of one queue)
            lease = int(time.time()) + LEASE_S
            pipe.zadd(layout.started_registry_key(running[0].queue), {c.member: lease for c in running}, xx=True)
            for claimed in running:
                pipe.hset(layout.job_key(claimed.job_id), "last_heartbeat", _rq_now())
        pipe.execute()

    def _show_job(self) -> None:
        """Only the worker record's `state` and `current_job`: one or two commands, not a whole beat."""
        worker = self.worker
        current = worker.current_job()
        self._beat_job = self._job_id(current)
        key = layout.worker_key(worker.name)
        if current is not None:
            worker.redis.hset(key, mapping={"state": "busy", "current_job": current.job_id})
        else:
            pipe = worker.redis.pipeline(transaction=False)
            pipe.hset(key, "state", "idle")
            pipe.hdel(key, "current_job")
            pipe.execute()

    def _clean_up(self) -> object:
        outcome = clean_up_abandoned(self.worker.redis, self.worker.queues, self.worker.name, self._abandoned)
        if outcome is True:
            self.worker.ring()
        return outcome

    @staticmethod
    def _job_id(claimed: Claimed | None) -> str | None:
        return claimed.job_id if claimed is not None else None

    def _sweep(self) -> object:
        return sweep_storage(self.worker.redis, self.worker.store, self.worker.name)

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
        backoff = Backoff(0.1, 5.0)
        while not self._closed.is_set():
            pubsub = worker.redis.pubsub(ignore_subscribe_messages=True)
            listening = False
            try:
                pubsub.subscribe(layout.worker_command_channel(worker.name))
                backoff.reset()
                self.loops.succeeded(self.listener_loop)
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
            except Exception as exc:  # whatever ended the subscription, it is made again
                delay = backoff.next_delay()
                self.loops.failed(self.listener_loop, exc, delay)
                worker.ring()  # a job queued while we were away would otherwise wait for the idle poll
                self._closed.wait(delay)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _handle(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        if isinstance(channel, bytes) and channel.startswith(_QUEUED_CHANNEL):
            self.worker.ring()
            return
        try:
            command = json.loads(message["data"])
        except (ValueError, TypeError):
            logger.warning("ignored a command that is not JSON on %r", channel)
            return
        if not isinstance(command, dict):
            logger.warning("ignored a command that is not a JSON object on %r", channel)
            return
        if command.get("command") == "stop-job" and command.get("job_id"):
            self.worker.request_stop(str(command["job_id"]))
        elif command.get("command") == "shutdown":
            self.worker.stop()


_QUEUED_CHANNEL = layout.QUEUED_CHANNEL_PREFIX.encode()


def _rq_now() -> str:
    return rq_timestamp(utcnow())

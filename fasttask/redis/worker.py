"""The worker: claims RQ jobs of its endpoints, runs them in this process, writes progress and results.

One job at a time, in the main thread, with the app imported once and its setup hooks run once, so a
model loaded there stays warm for every job. Each step that changes a job in Redis is one Lua script
(`fasttask.redis.scripts`); finishing a job and claiming the next share one round trip.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry as RedisRetry

from ..errors import ConfigError
from ..files import MediaFile, close_files
from ..jobs import JobRecord, JobStatus, utcnow
from ..logs import job_log, log_job, log_job_error
from ..loops import LoopHealth
from ..metrics import JobMetrics
from ..progress import ProgressThrottle
from ..runner import ASYNC_KINDS, Call, CallJob, error_info, run_call_here
from ..storage import ObjectStore
from . import codec, scripts
from . import keys as layout
from .codec import rq_timestamp
from .guard import Guard, JobInterrupted, Watch, install_interrupt_signal, interrupter
from .jobio import PROGRESS_INTERVAL_S, Claimed, JobIO
from .presence import LEASE_S, JobTally, Presence, default_worker_name

if TYPE_CHECKING:
    from ..app import FastTaskAPI

logger = logging.getLogger("fasttask.worker")

T = TypeVar("T")

IDLE_POLL_S = 1.0
"""An idle worker wakes on a queued-job notification, and at least this often in case one was missed."""


class Worker:
    """Runs the jobs of `endpoints` (default: all task endpoints of `app`)."""

    def __init__(
        self,
        app: FastTaskAPI,
        redis_url: str,
        endpoints: Sequence[str] | None = None,
        grace_s: float | None = None,
        install_signals: bool = True,
        name: str | None = None,
        owns_process: bool | None = None,
        metrics: JobMetrics | None = None,
        loops: LoopHealth | None = None,
        lane: int | None = None,
    ) -> None:
        unknown = [path for path in endpoints or () if path not in app.tasks]
        if unknown:
            raise ConfigError(f"no task endpoint {', '.join(unknown)} in this app")
        self.app = app
        self.tasks = {path: app.tasks[path] for path in (endpoints or app.tasks)}
        if not self.tasks:
            raise ConfigError("the app has no task endpoints to work on")
        self.queues = {layout.queue_name(path): task for path, task in self.tasks.items()}
        self.name = name or default_worker_name()
        self.grace_s = app.settings.worker_grace_s if grace_s is None else grace_s
        self.redis = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=2,
            socket_timeout=10,
            retry=RedisRetry(NoBackoff(), 1),  # a connection from before a Redis restart fails once
            retry_on_error=[RedisConnectionError],
        )
        self.store = ObjectStore(app.settings) if app.settings.s3_bucket else None
        self.io = JobIO(self.redis, self.store)
        self._claim_script = self.redis.register_script(scripts.CLAIM)
        self._finish_script = self.redis.register_script(scripts.FINISH)
        self._finish_and_claim_script = self.redis.register_script(scripts.FINISH_AND_CLAIM)
        self._requeue_script = self.redis.register_script(scripts.REQUEUE)
        self._install_signals = install_signals
        self.metrics = metrics
        self.loops = loops if loops is not None else LoopHealth()
        """This worker's background loops (heartbeat, cleanup, sweep, subscription) and how they go."""
        self.loop_label = f" (lane {lane})" if lane is not None else ""
        self.tally = JobTally()
        self._owns_process = install_signals if owns_process is None else owns_process
        self._stopping = threading.Event()
        self._doorbell = threading.Event()
        self.waiting_for_work = threading.Event()
        """Set while the worker found no job and waits for one (the listener then rings it on new jobs)."""
        self._current: Claimed | None = None
        self._loop = asyncio.new_event_loop()
        self.presence = Presence(self)
        self.guard = Guard(self._mark_timed_out, self._requeue_cut_off, self._replace_process, stuck_after_s=10.0)

    # -- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Work until stopped (SIGTERM/SIGINT, or `stop()`); returns the exit code."""
        if self._install_signals:
            # a process that replaced itself inherits the signal mask of the task that got it stuck
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
            install_interrupt_signal(lambda: self._current is not None and self._current.stop.is_set())
        self._loop.run_until_complete(self.app.run_setup_hooks())
        self.presence.start()
        self.guard.start()
        logger.info("worker %s on %s", self.name, ", ".join(self.queues))
        try:
            claimed: Claimed | None = None
            while not self._stopping.is_set():
                if claimed is None:
                    claimed = self._retrying(self._claim)
                if claimed is None:
                    self.waiting_for_work.set()
                    self._doorbell.wait(IDLE_POLL_S)
                    self._doorbell.clear()
                    continue
                self.waiting_for_work.clear()
                try:
                    claimed = self._work(claimed)
                except JobInterrupted:
                    claimed = None  # an interrupt that arrived just after its job had ended
        finally:
            self.guard.close()
            self.presence.close()
            self._loop.close()
            self.redis.close()
        return 0

    def stop(self) -> None:
        """Take no new job; the one in hand gets the grace period to finish, then is re-queued."""
        if not self._stopping.is_set():
            logger.info("worker %s stopping: finishing the current job within %.0f s", self.name, self.grace_s)
            self._stopping.set()
            self._doorbell.set()
            self.guard.shutdown_after(self.grace_s)

    def ring(self) -> None:
        """A job was queued on one of our queues."""
        self._doorbell.set()

    def current_job(self) -> Claimed | None:
        return self._current

    def request_stop(self, job_id: str) -> None:
        """RQ's stop-job command (sent by a cancel) for the job in hand."""
        self.guard.request_stop(job_id, "cancelled")

    # -- one job -----------------------------------------------------------------------------------
    def _work(self, claimed: Claimed) -> Claimed | None:
        """Run a claimed job to its end, record the outcome, and return the next job (claimed with it)."""
        self._current = claimed
        stored: list[MediaFile] = []
        report = claimed.throttle.report if claimed.throttle is not None else None
        job = CallJob(
            claimed.job_id, {}, report, self.io.output_sink(claimed), self.io.file_store(claimed, stored), claimed.stop
        )
        call = Call(claimed.task, [job], may_retry=claimed.record.failures < claimed.record.retries)
        deadline = time.monotonic() + claimed.record.timeout_s if claimed.record.timeout_s is not None else None
        self.guard.watch(Watch(claimed.job_id, deadline, claimed.stop, self._interrupter(call, job)))
        interrupted = False
        try:
            if self._prepare(claimed, call, job):
                run_call_here(call, self._loop)
        except (JobInterrupted, asyncio.CancelledError):
            interrupted = True  # whoever stopped it has already recorded why
        finally:
            self.guard.release()
            self._current = None
            close_files([*job.params.values(), *stored])
        if interrupted or job.stopped or claimed.stop.is_set():
            self.io.forget_inputs(claimed)
            return self._retrying(self._claim)
        if job.retrying:
            self._retrying(lambda: self._requeue(claimed, count_failure=True))
            return self._retrying(self._claim)
        self.io.forget_inputs(claimed)
        if job.error is None:
            outcome: tuple[str, Any] = ("finished", job.result)
        else:
            outcome = ("failed", job.error)
        claim_next = not self._stopping.is_set()
        return self._retrying(lambda: self._finish(claimed, *outcome, claim_next=claim_next))

    def _prepare(self, claimed: Claimed, call: Call, job: CallJob) -> bool:
        """The job's parameters, decoded from its record (validated once, by the API that took the job) and
        with their files downloaded from the bucket. A job that cannot have them fails (and is logged) here."""
        try:
            if claimed.record.unreadable is not None:
                call.may_retry = False  # a record this worker cannot read will not read better next time
                raise codec.InvalidJobRecord(claimed.record.unreadable)
            job.params = claimed.task.decode_params(claimed.record.params)
            self.io.fetch_inputs(claimed, job.params)
        except Exception as exc:
            job.error = exc
            job.retrying = call.may_retry
            log_job_error(claimed.job_id, claimed.task.path, exc, retrying=job.retrying)
            return False
        return True

    def _interrupter(self, call: Call, job: CallJob) -> Callable[[], None]:
        if call.task.kind in ASYNC_KINDS:
            return lambda: call.stop_job(job)  # cancels the call's coroutine on the worker's event loop
        in_main = threading.current_thread() is threading.main_thread()
        return interrupter(threading.current_thread(), use_signal=in_main and self._install_signals)

    # -- Redis steps -------------------------------------------------------------------------------
    def _claim(self) -> Claimed | None:
        if self._stopping.is_set():
            return None
        return self._parse_claim(self._claim_script(keys=self._claim_keys(), args=self._claim_args()))

    def _claim_keys(self) -> list[str]:
        return [layout.queue_key(queue) for queue in self.queues]

    def _claim_args(self) -> list[Any]:
        now = utcnow()
        return [rq_timestamp(now), int(now.timestamp()) + LEASE_S, uuid.uuid4().hex, self.name, *self.queues]

    def _parse_claim(self, reply: Any) -> Claimed | None:
        paths = {queue: task.path for queue, task in self.queues.items()}
        job = codec.decode_claim(reply, self.tasks, paths)
        if job is None:
            return None
        if job.unreadable is not None:  # a record this worker cannot read fails as a job, not the worker
            logger.error("job %s: %s", job.job_id, job.unreadable)
        task = self.tasks[job.path]
        if self.metrics is not None and job.queued_at is not None:
            self.metrics.started(job.path, (job.started_at - job.queued_at).total_seconds())
        if job_log.isEnabledFor(logging.INFO):
            log_job(JobRecord(job.job_id, job.path, JobStatus.RUNNING), "started")
        claimed = Claimed(
            job, task, job.result_ttl if job.result_ttl is not None else int(self.queues[job.queue].result_ttl_s)
        )
        if task.progress_param is not None:
            claimed.throttle = ProgressThrottle(partial(self.io.write_progress, claimed), PROGRESS_INTERVAL_S)
        return claimed

    def _finish(self, claimed: Claimed, status: str, value: Any, claim_next: bool) -> Claimed | None:
        now = utcnow()
        if status == "finished":
            ending = codec.finished(value)
            registry = layout.finished_registry_key(claimed.queue)
        else:
            error = value if isinstance(value, dict) else error_info(value, self.app.settings.debug)
            ending = codec.failed(error, timed_out=status == "timeout")
            registry = layout.failed_registry_key(claimed.queue)
        extra: dict[str, Any] = dict(ending.fields)
        last_report = claimed.take_progress(finished=status == "finished")
        if last_report is not None:
            progress, message = last_report
            extra[layout.F_PROGRESS] = repr(progress)
            if message is not None:
                extra[layout.F_MESSAGE] = message
        flat = [part for pair in extra.items() for part in pair]
        args = [
            claimed.member,
            ending.rq_status,
            rq_timestamp(now),
            claimed.result_ttl,
            now.timestamp() + claimed.result_ttl,  # to the microsecond: GET /jobs pages on it
            claimed.job_id,
            ending.result_type,
            ending.payload_field,
            ending.payload,
            self.name,
            claimed.record.execution_id,
            claimed.record.started_at.timestamp(),
            now.timestamp(),
            "1" if claimed.outputs or claimed.files else "0",
            *flat,
        ]
        keys = [
            layout.job_key(claimed.job_id),
            layout.started_registry_key(claimed.queue),
            layout.results_key(claimed.job_id),
            registry,
            layout.outputs_key(claimed.job_id),
        ]
        if not claim_next:
            if self._finish_script(keys=keys, args=args):
                self._count_end(claimed, status, now)
            return None
        # one script call, not a pipeline of two: no EVALSHA more, and no SCRIPT EXISTS that redis-py sends
        # before a pipeline holding scripts
        ended, reply = self._finish_and_claim_script(
            keys=[*keys, *self._claim_keys()], args=[len(args), *args, *self._claim_args()]
        )
        if ended:
            self._count_end(claimed, status, now)
        return self._parse_claim(reply)

    def _count_end(self, claimed: Claimed, status: str, now: datetime) -> None:
        """Count and log a job this worker ended (not one whose end a cancel or the cleanup took first)."""
        final = JobStatus(status)
        ran_s = (now - claimed.record.started_at).total_seconds()
        self.tally.add(final is JobStatus.FINISHED, ran_s)
        if self.metrics is not None:
            self.metrics.ended(claimed.task.path, final, ran_s)
        if job_log.isEnabledFor(logging.INFO):
            log_job(JobRecord(claimed.job_id, claimed.task.path, final), final.value, ran_s)

    def _requeue(self, claimed: Claimed, count_failure: bool) -> None:
        now = utcnow()
        requeued = self._requeue_script(
            keys=[
                layout.job_key(claimed.job_id),
                layout.started_registry_key(claimed.queue),
                layout.queue_key(claimed.queue),
            ],
            args=[
                claimed.member,
                claimed.job_id,
                layout.queued_channel(claimed.queue),
                rq_timestamp(now),
                "1" if count_failure else "0",
            ],
        )
        if requeued and count_failure:  # RQ counts every failed attempt, retried or not
            self.tally.add(False, (now - claimed.record.started_at).total_seconds())

    def _mark_timed_out(self, job_id: str) -> None:
        """Called by the guard at the job's deadline, while the task may still run."""
        claimed = self._current
        if claimed is not None and claimed.job_id == job_id:
            message = f"job ran longer than its timeout of {claimed.record.timeout_s:g} s"
            error = {"type": "TimeoutError", "message": message}
            self._retrying(lambda: self._finish(claimed, "timeout", error, claim_next=False), attempts=5)

    def _requeue_cut_off(self, job_id: str) -> None:
        """Called by the guard when the shutdown grace period ends with the job still running."""
        claimed = self._current
        if claimed is not None and claimed.job_id == job_id:
            claimed.requeued = True
            logger.warning("job %s outlived the %.0f s grace period; re-queued", job_id, self.grace_s)
            self._retrying(lambda: self._requeue(claimed, count_failure=False), attempts=5)

    def _replace_process(self, job_id: str) -> None:
        if not self._owns_process:
            logger.error("job %s cannot be interrupted, and this worker does not own its process", job_id)
            return
        self.presence.close()
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

    def pending_progress_job(self) -> Claimed | None:
        current = self._current
        throttle = current.throttle if current is not None else None
        return current if throttle is not None and throttle.pending is not None else None

    # -- resilience --------------------------------------------------------------------------------
    def _retrying(self, step: Callable[[], T], attempts: int | None = None) -> T | None:
        """Run a Redis step; while Redis is unreachable, retry with backoff (forever unless `attempts`)."""
        backoff = 0.1
        tried = 0
        while True:
            try:
                result = step()
            except (RedisError, OSError) as exc:
                tried += 1
                if attempts is not None and tried >= attempts:
                    logger.error("giving up on Redis after %d attempts: %s", tried, exc)
                    return None
                if self._stopping.is_set() and self._current is None:
                    return None
                logger.warning("Redis unreachable (%s); retrying in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if tried:
                logger.warning("Redis is reachable again, after %d failed attempt(s)", tried)
            return result

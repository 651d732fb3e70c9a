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
from ..logs import job_log, log_job
from ..loops import LoopHealth
from ..metrics import JobMetrics
from ..progress import ProgressThrottle, Report
from ..runner import ASYNC_KINDS, Call, CallJob, error_info, run_call_here
from ..storage import ObjectStore
from ..tasks import TaskDef
from . import codec, scripts
from . import keys as layout
from .batches import Batches
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
        self._single_queues = [queue for queue, task in self.queues.items() if task.batch is None]
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
        self.owns_signals = install_signals
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
        self.loop = asyncio.new_event_loop()
        self.batches = Batches(self, {q: task for q, task in self.queues.items() if task.batch is not None})
        self.presence = Presence(self)
        self.guard = Guard(self._mark_timed_out, self._requeue_cut_off, self._replace_process, stuck_after_s=10.0)

    # -- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Work until stopped (SIGTERM/SIGINT, or `stop()`); returns the exit code."""
        if self.owns_signals:
            # a process that replaced itself inherits the signal mask of the task that got it stuck
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
            install_interrupt_signal(self._stopping_its_work)
        self.loop.run_until_complete(self.app.run_setup_hooks())
        self.presence.start()
        self.guard.start()
        logger.info("worker %s on %s", self.name, ", ".join(self.queues))
        try:
            claimed: list[Claimed] | None = None
            while not self._stopping.is_set():
                if claimed is None:
                    claimed = self.retrying(self._claim)
                if claimed is None:
                    self.waiting_for_work.set()
                    due_in = self.batches.wake_in_s  # a forming batch is due before the next poll
                    self._doorbell.wait(IDLE_POLL_S if due_in is None else min(IDLE_POLL_S, due_in))
                    self._doorbell.clear()
                    continue
                self.waiting_for_work.clear()
                try:
                    if claimed[0].task.batch is None:
                        claimed = self._work(claimed[0])
                    else:
                        self.batches.work(claimed)
                        claimed = None
                except JobInterrupted:
                    claimed = None  # an interrupt that arrived just after its job had ended
        finally:
            self.guard.close()
            self.presence.close()
            self.loop.close()
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
        """The job in hand (the first of a batch)."""
        if self.batches.running:
            return self.batches.running[0]
        return self._current

    def running_jobs(self) -> list[Claimed]:
        """Every job in hand: one, or a batch's."""
        current = self._current
        return list(self.batches.running) or ([current] if current is not None else [])

    def request_stop(self, job_id: str) -> None:
        """RQ's stop-job command (sent by a cancel) for the job in hand."""
        if not self.batches.stop_job(job_id):
            self.guard.request_stop(job_id, "cancelled")

    def _stopping_its_work(self) -> bool:
        """Whether the job (or batch) in hand is being stopped: then SIGUSR1 interrupts it."""
        if self.batches.running:
            return self.batches.stop_flag.is_set()
        return self._current is not None and self._current.stop.is_set()

    def observe_batch(self, path: str) -> Callable[[int], None] | None:
        """What counts each call's number of jobs in `fasttask_batch_size`."""
        return partial(self.metrics.observe_batch, path) if self.metrics is not None else None

    # -- one job -----------------------------------------------------------------------------------
    def _work(self, claimed: Claimed) -> list[Claimed] | None:
        """Run a claimed job to its end, record the outcome, and return the next job (claimed with it)."""
        self._current = claimed
        stored: list[MediaFile] = []
        report = claimed.throttle.report if claimed.throttle is not None else None
        job = CallJob(
            claimed.job_id, {}, report, self.io.output_sink(claimed), self.io.file_store(claimed, stored), claimed.stop
        )
        call = Call(claimed.task, [job], may_retry=claimed.record.failures < claimed.record.retries)
        deadline = time.monotonic() + claimed.record.timeout_s if claimed.record.timeout_s is not None else None
        self.guard.watch(Watch(claimed.job_id, deadline, claimed.stop, self.interrupter(claimed.task, lambda: call)))
        interrupted = False
        try:
            if self.io.prepare(claimed, job, call.may_retry):
                run_call_here(call, self.loop)
        except (JobInterrupted, asyncio.CancelledError):
            interrupted = True  # whoever stopped it has already recorded why
        finally:
            self.guard.release()
            self._current = None
            close_files([*job.params.values(), *stored])
        if interrupted or job.stopped or claimed.stop.is_set():
            self.io.forget_inputs(claimed)
            return self.retrying(self._claim)
        if job.retrying:
            self.retrying(lambda: self.requeue(claimed, count_failure=True))
            return self.retrying(self._claim)
        self.io.forget_inputs(claimed)
        if job.error is None:
            outcome: tuple[str, Any] = ("finished", job.result)
        else:
            outcome = ("failed", job.error)
        claim_next = not self._stopping.is_set()
        return self.retrying(lambda: self._finish(claimed, *outcome, claim_next=claim_next))

    def interrupter(self, task: TaskDef, running: Callable[[], Call | None]) -> Callable[[], None]:
        """What interrupts the task's call in hand: cancels async code on the worker's event loop, else
        raises `JobInterrupted` in this thread."""
        if task.kind in ASYNC_KINDS:

            def cancel() -> None:
                call = running()
                if call is not None:
                    for job in call.jobs:
                        call.stop_job(job)

            return cancel
        in_main = threading.current_thread() is threading.main_thread()
        return interrupter(threading.current_thread(), use_signal=in_main and self.owns_signals)

    # -- Redis steps -------------------------------------------------------------------------------
    def _claim(self) -> list[Claimed] | None:
        """The next job of a queue without batching, else a batch that is ready."""
        if self._stopping.is_set():
            return None
        if self._single_queues:
            claimed = self._parse_claim(self._claim_script(keys=self._claim_keys(), args=self._claim_args()))
            if claimed is not None:
                return [claimed]
        return self.batches.claim() if self.batches.queues else None

    def _claim_keys(self) -> list[str]:
        return [layout.queue_key(queue) for queue in self._single_queues]

    def _claim_args(self) -> list[Any]:
        now = utcnow()
        return [rq_timestamp(now), int(now.timestamp()) + LEASE_S, uuid.uuid4().hex, self.name, *self._single_queues]

    def _parse_claim(self, reply: Any) -> Claimed | None:
        paths = {queue: task.path for queue, task in self.queues.items()}
        job = codec.decode_claim(reply, self.tasks, paths)
        return self.claimed(job) if job is not None else None

    def claimed(self, job: codec.ClaimedRecord) -> Claimed:
        """A job the CLAIM or CLAIM_BATCH script took, counted and logged as started."""
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
        if task.progress_param is not None and task.batch is None:  # a batch's jobs share one
            claimed.throttle = ProgressThrottle(partial(self.io.write_progress, claimed), PROGRESS_INTERVAL_S)
        return claimed

    def _finish(self, claimed: Claimed, status: str, value: Any, claim_next: bool) -> list[Claimed] | None:
        now = utcnow()
        report = claimed.take_progress(finished=status == "finished")
        keys, args = self.finish_step(claimed, status, value, now, report)
        if not claim_next:
            if self._finish_script(keys=keys, args=args):
                self.count_end(claimed, status, now)
            return None
        # one script call, not a pipeline of two: no EVALSHA more, and no SCRIPT EXISTS that redis-py sends
        # before a pipeline holding scripts
        ended, reply = self._finish_and_claim_script(
            keys=[*keys, *self._claim_keys()], args=[len(args), *args, *self._claim_args()]
        )
        if ended:
            self.count_end(claimed, status, now)
        next_job = self._parse_claim(reply)
        return [next_job] if next_job is not None else None

    def finish_step(
        self, claimed: Claimed, status: str, value: Any, now: datetime, report: Report | None
    ) -> tuple[list[str], list[Any]]:
        """The FINISH script's keys and arguments that end a job `finished` (with its result), `failed` or
        `timeout` (with an exception or the error's JSON), with the last progress `report` if any."""
        if status == "finished":
            ending = codec.finished(value)
        else:
            error = value if isinstance(value, dict) else error_info(value, self.app.settings.debug)
            ending = codec.failed(error, timed_out=status == "timeout")
        return codec.finish_arguments(
            claimed.record, claimed.result_ttl, ending, report, self.name, now, bool(claimed.outputs or claimed.files)
        )

    def count_end(self, claimed: Claimed, status: str, now: datetime) -> None:
        """Count and log a job this worker ended (not one whose end a cancel or the cleanup took first)."""
        final = JobStatus(status)
        ran_s = (now - claimed.record.started_at).total_seconds()
        self.tally.add(final is JobStatus.FINISHED, ran_s)
        if self.metrics is not None:
            self.metrics.ended(claimed.task.path, final, ran_s)
        if job_log.isEnabledFor(logging.INFO):
            log_job(JobRecord(claimed.job_id, claimed.task.path, final), final.value, ran_s)

    def requeue(self, claimed: Claimed, count_failure: bool) -> None:
        now = utcnow()
        requeued = self._requeue_script(*codec.requeue_arguments(claimed.record, now, count_failure))
        if requeued and count_failure:  # RQ counts every failed attempt, retried or not
            self.tally.add(False, (now - claimed.record.started_at).total_seconds())

    def _mark_timed_out(self, job_id: str) -> None:
        """Called by the guard at the deadline of the job (or batch) in hand, while the task may still run."""
        jobs = self.running_jobs()
        if not jobs or jobs[0].job_id != job_id:
            return
        message = f"job ran longer than its timeout of {jobs[0].task.timeout_s:g} s"
        error = {"type": "TimeoutError", "message": message}
        if not self.batches.running:
            self.retrying(lambda: self._finish(jobs[0], "timeout", error, claim_next=False), attempts=5)
            return
        self.batches.stop_all()
        self.retrying(lambda: self.batches.finish([(claimed, "timeout", error) for claimed in jobs]), attempts=5)

    def _requeue_cut_off(self, job_id: str) -> None:
        """Called by the guard when the shutdown grace period ends with the job (or batch) still running."""
        jobs = self.running_jobs()
        if not jobs or jobs[0].job_id != job_id:
            return
        self.batches.stop_all()
        for claimed in jobs:
            claimed.requeued = True
            logger.warning("job %s outlived the %.0f s grace period; re-queued", claimed.job_id, self.grace_s)
            self.retrying(partial(self.requeue, claimed, False), attempts=5)

    def _replace_process(self, job_id: str) -> None:
        if not self._owns_process:
            logger.error("job %s cannot be interrupted, and this worker does not own its process", job_id)
            return
        self.presence.close()
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

    def pending_progress_job(self) -> Claimed | None:
        current = self.current_job()
        throttle = current.throttle if current is not None else None
        return current if throttle is not None and throttle.pending is not None else None

    # -- resilience --------------------------------------------------------------------------------
    def retrying(self, step: Callable[[], T], attempts: int | None = None) -> T | None:
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
                if self._stopping.is_set() and not self.running_jobs():
                    return None
                logger.warning("Redis unreachable (%s); retrying in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if tried:
                logger.warning("Redis is reachable again, after %d failed attempt(s)", tried)
            return result

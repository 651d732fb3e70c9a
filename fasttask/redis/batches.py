"""Batched endpoints on a worker: forming a batch from the queue's depth in Redis, running it, finishing it.

A batch forms in the queue, not in the worker: its jobs stay `queued` (and cancellable as such) until the
CLAIM_BATCH script takes them, all at once, when `max_size` are waiting or the oldest has waited
`max_wait_ms` (by its `enqueued_at`, or by how long this worker has seen it, whichever is longer: a clock
behind the API's does not make a batch wait more). Each job taken is registered in RQ's StartedJobRegistry
as a single job is, so cancels, RQ's tools, the recovery of a killed worker's jobs and the queue limits all
work per job. The batch runs through `fasttask.batching` (jobs stopped before a call are left out; a raising
call is narrowed down to the jobs that make it raise), and its jobs end in one FINISH_MANY round trip.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from ..batching import BatchRun
from ..files import MediaFile, close_files
from ..jobs import utcnow
from ..progress import ProgressThrottle, Report
from ..runner import CallJob
from ..tasks import TaskDef
from . import codec, scripts
from . import keys as layout
from .codec import rq_timestamp
from .guard import JobInterrupted, Watch
from .jobio import PROGRESS_INTERVAL_S, Claimed, ending_report
from .presence import LEASE_S

if TYPE_CHECKING:
    from .worker import Worker


class Batches:
    """The batched endpoints' side of one worker."""

    def __init__(self, worker: Worker, queues: dict[str, TaskDef]) -> None:
        self.worker = worker
        self.queues = queues
        """The worker's queues whose endpoints have `batch=`."""
        self._claim_script = worker.redis.register_script(scripts.CLAIM_BATCH)
        self._finish_script = worker.redis.register_script(scripts.FINISH_MANY)
        self._first_seen: dict[str, float] = {}
        """When this worker first saw each forming batch's queue non-empty (monotonic)."""
        self.wake_in_s: float | None = None
        """After a claim that took nothing: how soon a forming batch is due (None: no batch is forming)."""
        self.running: list[Claimed] = []
        self._run: BatchRun | None = None
        self._call_jobs: dict[str, CallJob] = {}
        self._pending: Report | None = None
        self._last: Report = (0.0, None)
        self.stop_flag = threading.Event()
        """Set when the guard stops the whole batch (timeout, shutdown) or every job of it was cancelled."""

    # -- forming and claiming ------------------------------------------------------------------------
    def claim(self) -> list[Claimed] | None:
        """A batch of the first queue that has one ready, else None (and `wake_in_s` set when one is forming)."""
        self.wake_in_s = None
        for queue, task in self.queues.items():
            batch = self._claim_from(queue, task)
            if batch:
                return batch
        return None

    def _claim_from(self, queue: str, task: TaskDef) -> list[Claimed] | None:
        assert task.batch is not None
        worker = self.worker
        now = utcnow()
        first_seen = self._first_seen.get(queue)
        seen_long_enough = first_seen is not None and time.monotonic() - first_seen >= task.batch.max_wait_s
        # '' takes what is there; else only when max_size wait, or the oldest was queued before the cut-off
        cutoff = "" if seen_long_enough else rq_timestamp(now - timedelta(seconds=task.batch.max_wait_s))
        reply = self._claim_script(
            keys=[layout.queue_key(queue)],
            args=[
                rq_timestamp(now),
                int(now.timestamp()) + LEASE_S,
                uuid.uuid4().hex,
                worker.name,
                queue,
                task.batch.max_size,
                cutoff,
            ],
        )
        paths = {queue: task.path}
        claim = codec.decode_batch_claim(reply, {task.path}, paths)
        if claim.jobs:
            self._first_seen.pop(queue, None)
            return [worker.claimed(job) for job in claim.jobs]
        if claim.depth == 0:
            self._first_seen.pop(queue, None)
            return None
        first_seen = self._first_seen.setdefault(queue, time.monotonic())
        waited_s = time.monotonic() - first_seen
        if claim.oldest_queued_at is not None:
            waited_s = max(waited_s, (now - claim.oldest_queued_at).total_seconds())
        due_in = max(0.0, task.batch.max_wait_s - waited_s)
        self.wake_in_s = due_in if self.wake_in_s is None else min(self.wake_in_s, due_in)
        return None

    # -- running -------------------------------------------------------------------------------------
    def work(self, batch: list[Claimed]) -> None:
        """Run a claimed batch to its end and record each job's outcome."""
        worker = self.worker
        task = batch[0].task
        stored: list[MediaFile] = []
        throttle = ProgressThrottle(partial(self._write_progress, batch), PROGRESS_INTERVAL_S)
        for claimed in batch:
            claimed.throttle = throttle
        report = throttle.report if task.progress_param is not None else None
        call_jobs = [
            CallJob(claimed.job_id, {}, report, _no_outputs, worker.io.file_store(claimed, stored), claimed.stop)
            for claimed in batch
        ]
        self.running, self.stop_flag = batch, threading.Event()
        self._call_jobs = {job.job_id: job for job in call_jobs}
        may_retry = any(claimed.record.failures < claimed.record.retries for claimed in batch)
        ready = [
            job for claimed, job in zip(batch, call_jobs, strict=True) if worker.io.prepare(claimed, job, may_retry)
        ]
        run = self._run = BatchRun(task, ready, may_retry, observe=worker.observe_batch(task.path))
        deadline = time.monotonic() + task.timeout_s if task.timeout_s is not None else None
        interrupt = worker.interrupter(task, lambda: run.current)
        worker.guard.watch(Watch(batch[0].job_id, deadline, self.stop_flag, interrupt))
        try:
            if ready:
                run.run_here(lambda decided: None, worker.loop)
        except JobInterrupted:
            pass  # whoever stopped the batch recorded its jobs' ends; jobs decided before still end below
        finally:
            worker.guard.release()
            self.running, self._run, self._call_jobs = [], None, {}
            close_files([*(value for job in call_jobs for value in job.params.values()), *stored])
        self._pending, self._last = throttle.take(), throttle.last
        throttle.close()
        self._end(batch, call_jobs)

    def _end(self, batch: list[Claimed], call_jobs: list[CallJob]) -> None:
        worker = self.worker
        ending: list[tuple[Claimed, str, Any]] = []
        for claimed, job in zip(batch, call_jobs, strict=True):
            if job.stopped or claimed.stop.is_set():  # its end was recorded by whoever stopped it
                worker.io.forget_inputs(claimed)
            elif job.error is not None and job.retrying and claimed.record.failures < claimed.record.retries:
                worker.retrying(partial(worker.requeue, claimed, True))
            elif job.error is not None:
                worker.io.forget_inputs(claimed)
                ending.append((claimed, "failed", job.error))
            else:
                worker.io.forget_inputs(claimed)
                ending.append((claimed, "finished", job.result))
        if ending:
            worker.retrying(partial(self.finish, ending))

    def finish(self, ending: list[tuple[Claimed, str, Any]]) -> None:
        """End jobs of the batch in one round trip: each `(job, status, result or error)` as
        `Worker.finish_step` reads them."""
        now = utcnow()
        keys: list[str] = []
        args: list[Any] = []
        for claimed, status, value in ending:
            report = ending_report(self._pending, self._last, finished=status == "finished")
            job_keys, job_args = self.worker.finish_step(claimed, status, value, now, report)
            keys += job_keys
            args += [len(job_args), *job_args]
        ended = self._finish_script(keys=keys, args=args)
        for (claimed, status, _), done in zip(ending, ended, strict=True):
            if done:
                self.worker.count_end(claimed, status, now)

    # -- stopping ------------------------------------------------------------------------------------
    def stop_job(self, job_id: str) -> bool:
        """Stop one job of the running batch (a cancel); True when it was one of it."""
        job, run = self._call_jobs.get(job_id), self._run
        if job is None or run is None:
            return False
        run.stop_job(job)
        if all(other.stop.is_set() for other in self._call_jobs.values()):
            self.worker.guard.request_stop(self.running[0].job_id, "cancelled")  # interrupt the call too
        return True

    def stop_all(self) -> None:
        """The guard stops the whole batch (its timeout, the shutdown grace period)."""
        run = self._run
        for job in self._call_jobs.values():
            if run is not None:
                run.stop_job(job)
            else:
                job.stop.set()

    def _write_progress(self, batch: list[Claimed], progress: float, message: str | None) -> None:
        items = [layout.F_PROGRESS, repr(progress)]
        if message is not None:
            items += [layout.F_MESSAGE, message]
        pipe = self.worker.redis.pipeline(transaction=False)
        for claimed in batch:
            if not claimed.stop.is_set():
                pipe.hset(layout.job_key(claimed.job_id), items=items)
                pipe.publish(layout.EVENTS_CHANNEL, claimed.job_id)
        pipe.execute()


def _no_outputs(value: Any) -> None:
    raise AssertionError("a batched task is never a generator")

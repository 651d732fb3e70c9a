"""The embedded queue: jobs wait in memory and run in this process, a bounded number at once."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from ..batching import BatchRun
from ..errors import JobAlreadyFinal, JobNotFound
from ..files import close_files
from ..idempotency import KeyedJob
from ..jobs import JobRecord, JobStatus, new_job_id, utcnow
from ..logs import job_log, log_job
from ..loops import LoopHealth
from ..metrics import JobMetrics
from ..runner import CallJob, error_info
from ..settings import Settings
from ..tasks import TaskDef
from ..threads import JobThreads
from ..webhook_loops import MemoryStore, WebhookService
from ..webhooks import WebhookSpec, initial_state
from .base import Broker, JobEvent, ResultFile
from .deadlines import Deadlines
from .expiry import Expiries
from .local_job import LocalJob
from .local_keys import KeyTable
from .local_views import LocalViews, RecentCounts
from .slots import Slots

DEFAULT_CONCURRENCY = 4


class LocalBroker(Broker):
    """Runs jobs in this process: sync tasks on a fixed pool of threads, async tasks on the event loop.

    At most `concurrency` calls run at once, whatever their kind; the rest wait in arrival order, at most
    `queue_size` per endpoint (`slots.Slots`, which also forms the batches of endpoints with `batch=`).
    """

    def __init__(
        self,
        tasks: Mapping[str, TaskDef],
        settings: Settings,
        setup: Callable[[], Awaitable[None]] | None = None,
        metrics: JobMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._recent = RecentCounts()
        self._running_ids: set[str] = set()
        self._settings = settings
        self._setup = setup
        self._concurrency = settings.concurrency or DEFAULT_CONCURRENCY
        self._jobs: dict[str, LocalJob] = {}
        self._slots: Slots[LocalJob] = Slots(self._concurrency, self._begin, self._running_loop)
        for path, task in tasks.items():
            if metrics is not None and task.batch is not None:
                metrics.stats(path).batched()  # the series exists from the start
        self._running_count: Counter[str] = Counter()
        self._stopping_count: Counter[str] = Counter()
        self._threads: JobThreads | None = None
        self.loops = LoopHealth()  # the webhook loops; jobs are purged by timers, not by a loop
        self.webhooks = WebhookService(MemoryStore(self._set_webhook_state), self, settings, self.loops, metrics)
        # the views hold these very containers, so they must be changed in place, never rebound
        counts = (self._slots.waiting_count, self._running_count, self._stopping_count)
        self.views = LocalViews(tasks, self._concurrency, self._jobs, counts, self._running_ids, self._recent)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._keys = KeyTable()
        self._expiries = Expiries(self._purge)
        self._deadlines: Deadlines | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadlines = Deadlines(self._loop)  # bound to this loop: a restarted broker makes new ones
        # A fixed pool: threads are made as needed up to the limit and reused, never one per job.
        self._threads = JobThreads(self._concurrency, "fasttask-job")
        if self._setup is not None:
            await self._setup()
        self.webhooks.start()
        self._ready = True

    async def close(self) -> None:
        self._ready = False
        await self.webhooks.close()
        self._slots.close()
        for job in list(self._jobs.values()):
            if job.stop is not None:
                job.stop.set()
            if job.runner is not None:
                job.runner.cancel()
        if self._threads is not None:
            self._threads.shutdown()
        self._expiries.close()
        if self._deadlines is not None:
            self._deadlines.close()
            self._deadlines = None
        for job_id in list(self._jobs):
            self._purge(job_id)

    async def ready(self) -> bool:
        return self._ready

    # -- jobs --------------------------------------------------------------------------------------
    async def submit(self, task: TaskDef, params: dict[str, Any], webhook: WebhookSpec | None = None) -> JobRecord:
        slots = self._slots
        slots.check_room(task)
        queued_at = self._running_loop().time() if task.batch is not None else 0.0  # only a batch waits for it
        job = LocalJob(JobRecord(new_job_id(), task.path), task, params, slots.next_seq(), queued_at)
        self._jobs[job.record.id] = job
        if job_log.isEnabledFor(logging.INFO):
            log_job(job.record, "queued")
        slots.add(job)  # may start it at once
        if webhook is not None:  # its events come from its state, so a job that already started loses none
            job.record.webhook = initial_state()
            await self.webhooks.watch(job.record.id, webhook)
        return job.record

    async def hold_key(self, task: TaskDef, key: str, quick: bool = False) -> KeyedJob | None:
        return self._keys.hold(task.path, key)

    async def submit_keyed(
        self,
        task: TaskDef,
        params: dict[str, Any],
        key: str,
        fingerprint: str,
        webhook: WebhookSpec | None = None,
    ) -> JobRecord | KeyedJob:
        made = self._keys.made(task.path, key)
        if made is not None:
            return made
        # nothing inside suspends (the memory store's watch neither): nobody takes the key meanwhile
        record = await self.submit(task, params, webhook)
        self._keys.remember(task.path, key, KeyedJob(record.id, fingerprint))
        return record

    async def release_key(self, task: TaskDef, key: str, held: KeyedJob | None = None) -> None:
        self._keys.release(task.path, key, held)

    async def get(self, job_id: str) -> JobRecord:
        return self._job(job_id).record

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        job = self._job(job_id)
        if self._deadlines is None:
            raise RuntimeError("the broker was not started")
        return await job.wait(self._deadlines, timeout_s)

    async def cancel(self, job_id: str) -> JobRecord:
        job = self._job(job_id)
        record = job.record
        if record.status.is_final:
            raise JobAlreadyFinal(f"job {job_id} already ended with status {record.status.value}")
        if record.status is JobStatus.QUEUED:
            self._slots.cancelled(job)  # left out when its turn comes
        self._stop(job, JobStatus.CANCELLED, None)
        return record

    async def open_stream(self, job_id: str, after_outputs: int = 0) -> AsyncIterator[JobEvent]:
        return self._job(job_id).events(after_outputs)

    async def result_file(self, job_id: str, index: int) -> ResultFile:
        job = self._job(job_id)
        if job.files is None or not 0 <= index < len(job.files):
            raise JobNotFound(f"{job_id}/files/{index}")
        media = job.files[index]
        return ResultFile(media.file_name, media.content_type, media.size, media.iter_range)

    # -- internals ---------------------------------------------------------------------------------
    def _job(self, job_id: str) -> LocalJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    def _begin(self, task: TaskDef, jobs: list[LocalJob]) -> None:
        loop = self._running_loop()
        path = task.path
        live = [job for job in jobs if job.record.status is JobStatus.QUEUED]  # cancelled ones never run
        self._slots.started(task, len(live))
        if not live:
            return
        self._running_count[path] += len(live)
        started_at = utcnow()
        stats = self._metrics.stats(path) if self._metrics is not None else None
        logging_jobs = job_log.isEnabledFor(logging.INFO)
        call_jobs = []
        for job in live:
            record = job.record
            record.status = JobStatus.RUNNING
            record.started_at = started_at
            job.held = True
            self._running_ids.add(record.id)
            if stats is not None:
                stats.started((started_at - record.created_at).total_seconds())
            if logging_jobs:
                log_job(record, "started")
            call_jobs.append(job.prepare_call(loop))
        observe = stats.observe_batch if stats is not None and task.batch is not None else None
        run = BatchRun(task, call_jobs, observe=observe)
        timer = None
        if task.timeout_s is not None:  # bounds the batch's calls, isolation's re-runs included
            timer = loop.call_later(task.timeout_s, self._time_out, live)
        runner = loop.create_task(self._run(task, live, run, timer))
        for job in live:
            job.run, job.runner = run, runner
            job.notify()

    async def _run(self, task: TaskDef, jobs: list[LocalJob], run: BatchRun, timer: asyncio.TimerHandle | None) -> None:
        local = {id(job.call_job): job for job in jobs} if len(jobs) > 1 else None
        retry: list[CallJob] = []

        def decided(call_jobs: list[CallJob]) -> None:
            for outcome in call_jobs:
                job = local[id(outcome)] if local is not None else jobs[0]
                if outcome.retrying:
                    retry.append(outcome)
                    continue
                self._release(job)  # its code returned
                if outcome.error is None:
                    self._finish(job, JobStatus.FINISHED, outcome.result, None)
                elif not outcome.stopped:  # a stopped one was marked cancelled or timed out already
                    self._finish(job, JobStatus.FAILED, None, error_info(outcome.error, self._settings.debug))

        attempts = 0
        try:
            while True:
                attempts += 1
                run.may_retry = attempts <= task.retries
                try:
                    await run.run(self._threads, decided)
                except asyncio.CancelledError:
                    return  # the broker closes
                if not retry:
                    return
                run = BatchRun(task, retry, observe=run.observe)
                retry = []
                for job in jobs:
                    job.run = run
        finally:
            if timer is not None:
                timer.cancel()
            for job in jobs:
                if job.held:
                    self._release(job)
                job.returned()
            # The slot frees only when the code really stopped: a cancelled sync task keeps its thread.
            self._slots.release()

    def _release(self, job: LocalJob) -> None:
        """The job's code returned: it no longer counts as running or stopping."""
        if job.held:
            job.held = False
            (self._stopping_count if job.stopping else self._running_count)[job.task.path] -= 1
            self._running_ids.discard(job.record.id)

    def _time_out(self, jobs: list[LocalJob]) -> None:
        for job in jobs:
            if not job.record.status.is_final:
                message = f"job ran longer than its timeout of {job.task.timeout_s:g} s"
                self._stop(job, JobStatus.TIMEOUT, {"type": "TimeoutError", "message": message})

    def _stop(self, job: LocalJob, status: JobStatus, error: dict[str, str] | None) -> None:
        if job.stop is not None:
            job.stop.set()
        if job.record.status is JobStatus.RUNNING:  # its slot stays taken until the code returns
            job.stopping = True
            self._running_count[job.task.path] -= 1
            self._stopping_count[job.task.path] += 1
        self._finish(job, status, None, error)
        if job.run is not None and job.call_job is not None:
            job.run.stop_job(job.call_job)  # async code is cancelled; a thread stops at its next report

    def _finish(self, job: LocalJob, status: JobStatus, result: Any, error: dict[str, str] | None) -> None:
        record = job.record
        if record.status.is_final:
            return  # a late result of a cancelled or timed-out job is discarded
        if job.throttle is not None:
            job.throttle.flush()
        record.status = status
        record.finished_at = utcnow()
        record.result = result
        record.error = error
        if status is JobStatus.FINISHED:
            record.progress = 1.0
        ran_s = (record.finished_at - record.started_at).total_seconds() if record.started_at is not None else None
        self._recent.add(record.endpoint, status)
        if self._metrics is not None:
            self._metrics.stats(record.endpoint).ended(status, ran_s)
        if job_log.isEnabledFor(logging.INFO):
            log_job(record, status.value, ran_s)
        close_files(job.params.values(), keep=job.files or ())
        job.params = {}
        job.ended()
        self._expiries.add(self._running_loop(), job.task.result_ttl_s, record.id)

    def _purge(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        self._keys.forget_job(job_id)
        if job is not None:
            close_files(job.params.values())
            close_files(job.files or ())

    def _set_webhook_state(self, job_id: str, state: dict[str, Any]) -> None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.record.webhook = state

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the broker was not started")
        return self._loop

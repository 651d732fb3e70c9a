"""The job runner: how a task call is run for the process that hosts it.

A host (the embedded queue, the runpod handler; the Redis worker) hands the runner a `Call`: the task and the
jobs the call runs, each a `CallJob` with its own id, parameters, stop flag, progress target, output sink
and result-file store, and, once the call is over, its own `result` or `error`. The runner

- calls the task: `def` functions and generators on one of the host's threads (`threads.JobThreads`),
  `async def` functions and async generators on the running event loop (`run_call`), or all in the calling
  thread (`run_call_here`, for a host whose own thread is the job's);
- hands each yield of a generator, made JSON-ready, to the job's output sink: with `run_call` always on the
  event loop, in order, and before the call's end is seen, so a job's last outputs reach its stream;
- turns the result into JSON (`results.to_json_value`), each file through the job's store callback;
- stops: `Call.stop_job` sets a job's stop flag, so its `JobProgress.set_status` raises `JobCancelled`;
  once every job of the call is stopped the call is interrupted (async code is cancelled; a thread stops at
  its next progress report or yield). A call stopped before it started never calls the task.
  `Call.arm_timeout` stops every job when the task's timeout passes;
- captures what the call raised as the error of its jobs, logs each failure with its job id
  (`logs.log_job_error`), and shapes it for the job record (`error_info`);
- passes each job's progress reports to its target, which the hosts make a `progress.ProgressThrottle`: at
  most one delivery per interval, the latest report wins, a trailing report is delivered when the window
  ends (by the host's scheduler, or by the host calling `flush`).

The hosts keep only what differs: the embedded queue its slots, threads and event loop and the job
records; the runpod handler the input, its result shape and runpod's progress calls; the Redis worker its
main thread, signals and Redis.

Several jobs as one call (batching): a `Call` with n jobs passes every parameter as a list with one entry
per job, in the jobs' order, and a `JobProgress` whose reports reach every job's progress target. The task
returns a list of n entries: entry i becomes job i's result, an `Exception` entry fails job i alone, and a
return that is not a list of n entries fails every job of the call. A task declared with `batch=` is always
called that way, with one job too; any other task's call of one job is a plain task call. The hosts collect
waiting jobs into batches and run them through `fasttask.batching`, which leaves out stopped jobs and re-runs
a raising call on fewer jobs to find the ones that make it raise; each host records each job's outcome as it
would a single job's. Generator tasks always run one job per call.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import JobCancelled
from .logs import log_job_error
from .progress import JobProgress, ProgressReporter
from .results import FileStore, to_json_value
from .tasks import TaskDef, TaskKind
from .threads import JobThreads

OutputSink = Callable[[Any], None]
"""Receives each JSON-ready yield of a generator task as it happens."""

ASYNC_KINDS = (TaskKind.ASYNC, TaskKind.ASYNC_GENERATOR)
GENERATOR_KINDS = (TaskKind.GENERATOR, TaskKind.ASYNC_GENERATOR)


@dataclass(eq=False, slots=True)
class CallJob:
    """One job of a call: what the runner needs of it, and its outcome once the call is over."""

    job_id: str
    params: dict[str, Any]
    report: ProgressReporter | None
    """Where the job's progress reports go (usually a `ProgressThrottle.report`)."""
    on_output: OutputSink
    store_file: FileStore
    stop: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    """What failed this job: the call's exception, or its entry of a several-job call's result."""
    retrying: bool = False
    """The failure was logged as one the host runs again (`Call.may_retry` and the job was not stopped)."""

    @property
    def stopped(self) -> bool:
        """Ended by a stop (cancel, timeout): its outcome is the host's, not the call's."""
        return isinstance(self.error, JobCancelled)


class Call:
    """One call of a task, for one or more jobs (see the module's docstring for several)."""

    __slots__ = (
        "_running",
        "_timer",
        "jobs",
        "may_retry",
        "per_job",
        "raised",
        "split_on_raise",
        "stop",
        "task",
        "timed_out",
    )

    def __init__(self, task: TaskDef, jobs: Sequence[CallJob], may_retry: bool = False) -> None:
        if not jobs:
            raise ValueError("a call runs at least one job")
        if len(jobs) > 1 and task.kind in GENERATOR_KINDS:
            raise ValueError(f"{task.path}: a generator task runs one job per call")
        self.task = task
        self.jobs = list(jobs)
        self.may_retry = may_retry
        self.timed_out = False
        self.per_job = len(jobs) > 1 or task.batch is not None
        """Parameters go in as lists and the result comes back as a list, one entry per job."""
        self.raised: Exception | None = None
        """What the call itself raised (then every job's error), as opposed to what it returned."""
        self.split_on_raise = False
        """Set by `fasttask.batching`: when the call of several jobs raises, their failures are not logged, for
        the jobs are run again in smaller calls (`splits`)."""
        # what the task's own JobProgress checks: with one job that job's flag, else set once all are stopped
        self.stop = jobs[0].stop if len(jobs) == 1 else threading.Event()
        self._running: asyncio.Task[Any] | None = None  # the task awaiting async code, to cancel it
        self._timer: asyncio.TimerHandle | None = None

    @property
    def splits(self) -> bool:
        """The call raised on several jobs, not for a stop: `fasttask.batching` runs them again in halves."""
        raised = self.raised
        if raised is None or isinstance(raised, JobCancelled):
            return False
        return self.split_on_raise and len(self.jobs) > 1

    def stop_job(self, job: CallJob) -> None:
        """Stop one job; once all of the call's jobs are stopped, interrupt the call."""
        job.stop.set()
        if self.stop is not job.stop and all(other.stop.is_set() for other in self.jobs):
            self.stop.set()
        running = self._running
        if self.stop.is_set() and running is not None:
            self._running = None  # once: the call is being cancelled
            loop = running.get_loop()
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if here:
                running.cancel()
            else:
                loop.call_soon_threadsafe(running.cancel)

    def arm_timeout(self, loop: asyncio.AbstractEventLoop, on_timeout: Callable[[CallJob], None]) -> None:
        """When the task's timeout passes: `timed_out`, then `on_timeout(job)` and a stop for each job."""
        if self.task.timeout_s is not None:
            self._timer = loop.call_later(self.task.timeout_s, self._time_out, on_timeout)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def kwargs(self) -> dict[str, Any]:
        """The task's keyword arguments: each parameter's value, or with several jobs the list of theirs."""
        jobs = self.jobs
        if not self.per_job:
            job = jobs[0]
            if self.task.progress_param is None:
                return dict(job.params)
            return self.task.call_kwargs(job.params, JobProgress(job.job_id, job.report, self.stop))
        reporters = [job.report for job in jobs if job.report is not None]

        def report_all(progress: float, message: str | None) -> None:
            for report in reporters:
                report(progress, message)

        params = {name: [job.params[name] for job in jobs] for name in jobs[0].params}
        return self.task.call_kwargs(params, JobProgress(None, report_all, self.stop))

    def settle(self, value: Any) -> None:
        """Hand out what the task returned: the result, or with several jobs one entry to each job."""
        jobs = self.jobs
        if not self.per_job:
            jobs[0].result = to_json_value(value, jobs[0].store_file)
            return
        if not isinstance(value, list | tuple) or len(value) != len(jobs):
            got = f"{len(value)} entries" if isinstance(value, list | tuple) else type(value).__name__
            error = TypeError(
                f"{self.task.path} ran {len(jobs)} job{'s' if len(jobs) > 1 else ''} in one call and returned {got}:"
                " a batched task returns a list with one entry per job"
            )
            for job in jobs:
                job.error = error
            return
        for job, entry in zip(jobs, value, strict=True):
            if isinstance(entry, Exception):
                job.error = entry
                continue
            try:
                job.result = to_json_value(entry, job.store_file)
            except Exception as exc:
                job.error = exc

    def _time_out(self, on_timeout: Callable[[CallJob], None]) -> None:
        self._timer = None
        self.timed_out = True
        for job in self.jobs:
            if not job.stop.is_set():
                on_timeout(job)
                self.stop_job(job)

    def _begin(self) -> None:
        self.raised = None
        for job in self.jobs:
            job.result = job.error = None
            job.retrying = False
        if self.stop.is_set():  # stopped while it waited for a thread or the loop
            raise JobCancelled(f"job {self.jobs[0].job_id} was stopped")

    def _fail(self, exc: Exception) -> None:
        self.raised = exc
        for job in self.jobs:
            job.error = exc

    def _log_failures(self) -> None:
        if self.raised is not None and self.splits:
            return  # not these jobs' outcome yet: each is logged once its own call decides it
        for job in self.jobs:
            if job.error is not None and not job.stopped:
                job.retrying = self.may_retry and not job.stop.is_set()
                log_job_error(job.job_id, self.task.path, job.error, job.retrying)


async def run_call(call: Call, threads: JobThreads | None) -> None:
    """Run the call to its end, from the event loop: each job's `result` or `error` then holds its outcome.

    Raises `asyncio.CancelledError` when async code was interrupted by its stop, or the host's own task was
    cancelled. A thread that runs the call is not interrupted: this returns when it returns.
    """
    try:
        call._begin()
        if call.task.kind in ASYNC_KINDS:
            call._running = asyncio.current_task()
            try:
                await _call_async(call)
            finally:
                call._running = None
        else:
            loop = asyncio.get_running_loop()
            if threads is None:
                await loop.run_in_executor(None, _call_sync, call, loop)
            else:
                await threads.run(_call_sync, call, loop)
    except Exception as exc:
        call._fail(exc)
    call._log_failures()


def run_call_here(call: Call, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Run the call to its end in this thread (async kinds on `loop`, which this thread then runs); outputs
    go to the sinks from this thread."""
    if call.task.kind in ASYNC_KINDS:
        if loop is None:
            raise ValueError(f"{call.task.path} is async: give the loop to run it on")
        loop.run_until_complete(run_call(call, None))
        return
    try:
        call._begin()
        _call_sync(call, None)
    except Exception as exc:
        call._fail(exc)
    call._log_failures()


def _call_sync(call: Call, loop: asyncio.AbstractEventLoop | None) -> None:
    """Run a `def` task or a generator; outputs reach the sinks through `loop` when given, else here."""
    if call.stop.is_set():  # stopped while it waited for a thread
        raise JobCancelled(f"job {call.jobs[0].job_id} was stopped")
    task = call.task
    kwargs = call.kwargs()
    if task.kind is TaskKind.GENERATOR:
        job = call.jobs[0]
        outputs = []
        for item in task.fn(**kwargs):
            if call.stop.is_set():
                raise JobCancelled(f"job {job.job_id} was stopped")
            value = to_json_value(item, job.store_file)
            outputs.append(value)
            if loop is None:
                job.on_output(value)
            else:
                # The loop runs these in order, and the call's end (handed back the same way once the task
                # returns, see `threads.JobThreads`) only after them.
                loop.call_soon_threadsafe(job.on_output, value)
        job.result = outputs
        return
    call.settle(task.fn(**kwargs))


async def _call_async(call: Call) -> None:
    task = call.task
    kwargs = call.kwargs()
    if task.kind is TaskKind.ASYNC_GENERATOR:
        job = call.jobs[0]
        outputs = []
        async for item in task.fn(**kwargs):
            if call.stop.is_set():
                raise JobCancelled(f"job {job.job_id} was stopped")
            value = to_json_value(item, job.store_file)
            outputs.append(value)
            # On the loop already: hand it over at once. Scheduling it would let the call's end, which can
            # come in the same tick as its last yield, overtake it and drop it.
            job.on_output(value)
        job.result = outputs
        return
    call.settle(await task.fn(**kwargs))


def error_info(exc: BaseException, debug: bool) -> dict[str, str]:
    """The job's `error` field: the exception's type and message, the traceback only when debugging."""
    info = {"type": type(exc).__name__, "message": str(exc)}
    if debug:
        info["traceback"] = "".join(traceback.format_exception(exc))
    return info

"""Batching across jobs, written once for every host: when a forming batch is called, and how a batch's jobs
reach their outcomes.

- `wait_left_s`: the waiting rule. A batch with fewer than `max_size` jobs waits for more until its oldest job
  has been queued `max_wait_ms`; a full one goes at once. The embedded queue applies it to the jobs it holds,
  the Redis worker to what it claimed and the queue's depth.
- `BatchRun`: one batch's jobs run to their outcomes. Jobs stopped before a call never reach the task. When a
  call of several jobs raises (not for a stop), its jobs are run again in two halves, and so on down to single
  jobs: a job whose call of one raises ends failed with that error, and every other job is run in a call that
  does not hold the jobs that make it raise. k bad inputs among n cost about 2·k·log2(n) more calls, and one
  good batch costs one call. Each job's outcome is handed to the host as soon as a call decides it.

`BatchRun` drives `fasttask.runner`'s calls: `run` from an event loop (the embedded queue), `run_here` in the
calling thread (a host whose thread is the job's). A task without `batch=` is a batch of one: one call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from .errors import JobCancelled
from .runner import Call, CallJob, run_call, run_call_here
from .tasks import Batch, TaskDef
from .threads import JobThreads

Decided = Callable[[list[CallJob]], None]
"""Receives the jobs a call decided: each one's `result` or `error` (possibly a stop) is its outcome."""


def wait_left_s(batch: Batch, count: int, oldest_age_s: float) -> float:
    """How much longer a forming batch of `count` jobs waits for more, whose oldest job was queued
    `oldest_age_s` ago: 0 when it is to be called now."""
    if count >= batch.max_size:
        return 0.0
    return max(0.0, batch.max_wait_s - oldest_age_s)


class BatchRun:
    """One batch's jobs, run to their outcomes through as few calls as isolation allows."""

    __slots__ = ("_groups", "current", "jobs", "may_retry", "observe", "task")

    def __init__(
        self,
        task: TaskDef,
        jobs: Sequence[CallJob],
        may_retry: bool = False,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.task = task
        self.jobs = list(jobs)
        self.may_retry = may_retry
        self.observe = observe
        """Called with each call's number of jobs (the `fasttask_batch_size` histogram)."""
        self.current: Call | None = None
        """The call running now, to stop a job in it."""
        self._groups: deque[list[CallJob]] = deque([self.jobs])

    def stop_job(self, job: CallJob) -> None:
        """Stop one job: left out of every later call, and stopped in the running one (which is interrupted
        once all its jobs are stopped)."""
        job.stop.set()
        call = self.current
        if call is not None and any(other is job for other in call.jobs):
            call.stop_job(job)

    def next_call(self) -> tuple[Call | None, list[CallJob]]:
        """The next call to run (None when every job is decided), and the jobs left out of it because they were
        stopped since: those are decided, each with a `JobCancelled` error."""
        dropped: list[CallJob] = []
        while self._groups:
            running: list[CallJob] = []
            for job in self._groups.popleft():  # one look at each flag: another thread may set it meanwhile
                if job.stop.is_set():
                    job.result, job.error = None, JobCancelled(f"job {job.job_id} was stopped")
                    dropped.append(job)
                else:
                    running.append(job)
            if running:
                call = self.current = Call(self.task, running, self.may_retry)
                call.split_on_raise = True
                if self.observe is not None:
                    self.observe(len(running))
                return call, dropped
        self.current = None
        return None, dropped

    def record(self, call: Call) -> list[CallJob]:
        """Take a call's end: the jobs it decided (none when it raised on several jobs, which run again in
        halves)."""
        self.current = None
        if call.raised is not None and call.splits:
            half = len(call.jobs) // 2
            self._groups.extendleft((call.jobs[half:], call.jobs[:half]))
            return []
        return call.jobs

    async def run(self, threads: JobThreads | None, decided: Decided) -> None:
        """Run every call from the event loop; raises `asyncio.CancelledError` only when the host's own task
        was cancelled (a stop that interrupts async code ends just that call's jobs)."""
        while (call := self._next(decided)) is not None:
            try:
                await run_call(call, threads)
            except asyncio.CancelledError:
                if not call.stop.is_set():
                    raise
                _uncancel()
                decided(self._interrupted(call))
                continue
            decided(self.record(call))
            if not self._groups:  # the common end: no call raised, nothing left to run
                self.current = None
                return

    def run_here(self, decided: Decided, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run every call in this thread (async tasks on `loop`, see `runner.run_call_here`)."""
        while (call := self._next(decided)) is not None:
            try:
                run_call_here(call, loop)
            except asyncio.CancelledError:
                if not call.stop.is_set():
                    raise
                decided(self._interrupted(call))
                continue
            decided(self.record(call))
            if not self._groups:
                self.current = None
                return

    def _next(self, decided: Decided) -> Call | None:
        call, dropped = self.next_call()
        if dropped:
            decided(dropped)
        return call

    def _interrupted(self, call: Call) -> list[CallJob]:
        """Async code of a call whose jobs were all stopped was cancelled: they are decided as stopped."""
        self.current = None
        for job in call.jobs:
            job.result, job.error = None, JobCancelled(f"job {job.job_id} was stopped")
        return call.jobs


def _uncancel() -> None:
    """Our own stop cancelled the task that runs the batch: take that cancellation back so the task goes on."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
        task.uncancel()

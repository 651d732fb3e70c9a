"""The embedded queue's order: which waiting jobs a free runner slot takes next, and batches that form."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..batching import wait_left_s
from ..errors import QueueFull
from ..tasks import TaskDef


class Waiting(Protocol):
    """What the order needs of a job."""

    task: TaskDef
    seq: int
    """Its place in the arrival order across endpoints (`Slots.next_seq`)."""
    queued_at: float
    """When it was queued, on the event loop's clock: a batch waits from its oldest job's."""

    @property
    def queued(self) -> bool:
        """Still waiting to start (not cancelled)."""


J = TypeVar("J", bound=Waiting)


@dataclass(eq=False)
class _Forming(Generic[J]):
    """A batch that holds a slot and waits for more jobs of its endpoint (they stay queued)."""

    jobs: list[J]
    timer: asyncio.TimerHandle | None = None


class Slots(Generic[J]):
    """At most `concurrency` calls at once; waiting jobs in arrival order, at most `queue_size` per endpoint.

    A free slot takes the oldest waiting job, and for an endpoint with `batch=` every waiting job of it up to
    `max_size`; a batch with fewer waits for more (`batching.wait_left_s`) while it holds the slot, and jobs of
    its endpoint submitted meanwhile join it. `begin(task, jobs)` starts a call of the jobs still queued; the
    host calls `release` when the call's code has returned.
    """

    def __init__(
        self,
        concurrency: int,
        begin: Callable[[TaskDef, list[J]], None],
        loop: Callable[[], asyncio.AbstractEventLoop],
    ) -> None:
        self.free = concurrency
        self.waiting_count: Counter[str] = Counter()
        """Jobs per endpoint that wait to start, forming batches included (the `queue_size` bound)."""
        self._begin = begin
        self._loop = loop
        self._waiting: dict[str, deque[J]] = {}
        """Per endpoint, in arrival order; cancelled ones stay until they come up."""
        self._entries = 0  # in all of `_waiting`
        self._sole: deque[J] | None = None
        """`_waiting`'s one queue while it has one endpoint (the common case: no search for the oldest)."""
        self._forming: dict[str, _Forming[J]] = {}
        self._seq = itertools.count()

    def next_seq(self) -> int:
        return next(self._seq)

    def check_room(self, task: TaskDef) -> None:
        """Raise QueueFull when a job of `task` would wait and its endpoint has `queue_size` waiting already."""
        if self.free > 0 and not self._entries and task.path not in self._forming:
            return  # it starts at once
        if self.waiting_count[task.path] >= task.queue_size:
            raise QueueFull(task.path, task.queue_size)

    def add(self, job: J) -> None:
        """Queue a job (`check_room` first): it joins its endpoint's forming batch, starts on a free slot, or
        waits."""
        task = job.task
        path = task.path
        self.waiting_count[path] += 1
        forming = self._forming.get(path)
        if forming is not None:
            forming.jobs.append(job)
            if task.batch is not None and len(forming.jobs) >= task.batch.max_size:
                self._launch(path)
        elif self.free > 0 and not self._entries:
            self._take(task, [job])
        else:
            queue = self._waiting.get(path)
            if queue is None:
                queue = self._waiting[path] = deque()
                self._sole = queue if len(self._waiting) == 1 else None
            queue.append(job)
            self._entries += 1

    def cancelled(self, job: J) -> None:
        """A queued job was cancelled: it no longer counts, and is left out when its turn comes."""
        self.waiting_count[job.task.path] -= 1

    def started(self, task: TaskDef, count: int) -> None:
        """`begin` started a call of `count` jobs (0: all were cancelled, the slot is free again)."""
        self.waiting_count[task.path] -= count
        if count == 0:
            self.free += 1

    def release(self) -> None:
        """A call's code returned: its slot takes the next jobs."""
        self.free += 1
        self.dispatch()

    def dispatch(self) -> None:
        waiting = self._waiting
        while self.free > 0 and self._entries:
            queue = self._sole
            if queue is None:  # the endpoint whose oldest waiting job came first: arrival order across endpoints
                queue = waiting[min((queue[0].seq, path) for path, queue in waiting.items() if queue)[1]]
            task = queue[0].task
            size = task.batch.max_size if task.batch is not None else 1
            jobs: list[J] = []
            while queue and len(jobs) < size:
                job = queue.popleft()
                self._entries -= 1
                if job.queued:
                    jobs.append(job)
            if jobs:
                self._take(task, jobs)

    def close(self) -> None:
        for forming in self._forming.values():
            if forming.timer is not None:
                forming.timer.cancel()
        self._forming.clear()

    def _take(self, task: TaskDef, jobs: list[J]) -> None:
        """A free slot takes these queued jobs: their call starts, or a batch forms that waits for more."""
        self.free -= 1
        batch = task.batch
        if batch is None:
            self._begin(task, jobs)
            return
        loop = self._loop()
        wait_s = wait_left_s(batch, len(jobs), loop.time() - jobs[0].queued_at)
        if wait_s <= 0:
            self._begin(task, jobs)
            return
        forming = self._forming[task.path] = _Forming(jobs)
        forming.timer = loop.call_later(wait_s, self._launch, task.path)

    def _launch(self, path: str) -> None:
        """The forming batch of `path` is full or waited long enough: its call starts."""
        forming = self._forming.pop(path)
        if forming.timer is not None:
            forming.timer.cancel()
        self._begin(forming.jobs[0].task, forming.jobs)
        self.dispatch()  # when every job of it was cancelled, its slot is free again

"""One job of the embedded queue: its record and parameters, what its call produced, and who waits on it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..batching import BatchRun
from ..files import MediaFile
from ..jobs import JobRecord, JobStatus
from ..progress import ProgressThrottle
from ..runner import CallJob
from ..tasks import TaskDef
from .base import JobEvent
from .deadlines import Deadlines


@dataclass(eq=False, slots=True)
class LocalJob:
    """A job's state while it waits, runs, and after it ended until it is purged.

    Everything a job needs only while it runs, or only when someone follows it, is made when needed and let go
    after: a finished job is kept in memory for `result_ttl_s`, so at a few thousand jobs a second what each
    one keeps is what the garbage collector walks through again and again.
    """

    record: JobRecord
    task: TaskDef
    params: dict[str, Any]
    seq: int
    queued_at: float  # see `slots.Waiting`
    stop: threading.Event | None = None
    """Set to stop its call: made with the call, dropped once the call returned."""
    outputs: list[Any] | None = None
    files: list[MediaFile] | None = None
    changed: asyncio.Event | None = None
    """Set at the job's next change: made by a stream that waits for one."""
    waiters: list[asyncio.Future[None]] | None = None
    """`wait` calls, woken when the job ends (a bare future each: cheaper than wait_for's task)."""
    runner: asyncio.Task[None] | None = None
    run: BatchRun | None = None
    call_job: CallJob | None = None
    throttle: ProgressThrottle | None = None
    held: bool = False
    """Counted as running (or stopping) until its code returned."""
    stopping: bool = False
    """Cancelled or timed out while running, and its code has not returned yet."""

    @property
    def queued(self) -> bool:
        return self.record.status is JobStatus.QUEUED

    def notify(self) -> None:
        """Wake the streams following the job: something of it changed."""
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    async def wait(self, deadlines: Deadlines, timeout_s: float) -> JobRecord:
        """The record once the job ended or `timeout_s` passed, whichever comes first."""
        if not self.record.status.is_final and timeout_s > 0:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(waiter)
            token = deadlines.add(waiter, timeout_s)
            try:
                await waiter
            finally:
                deadlines.discard(waiter, token)
                if not self.record.status.is_final and self.waiters is not None:
                    self.waiters.remove(waiter)
        return self.record

    def ended(self) -> None:
        """The record is final: wake everyone who waits on it."""
        if self.waiters is not None:
            for waiter in self.waiters:
                _wake(waiter)
            self.waiters = None
        self.notify()

    def returned(self) -> None:
        """Its code returned: let go of what only the run needed (they refer back to the job, too)."""
        self.run = self.call_job = self.throttle = self.runner = None
        self.stop = None

    def prepare_call(self, loop: asyncio.AbstractEventLoop) -> CallJob:
        """The job as its call sees it: progress coalesced onto the loop, outputs and files kept with the job."""

        def apply_progress(progress: float, message: str | None) -> None:
            if self.record.status is JobStatus.RUNNING:
                self.record.progress, self.record.message = progress, message
                self.notify()

        def store_file(media: MediaFile) -> dict[str, Any]:
            if self.files is None:
                self.files = []
            self.files.append(media)
            url = f"/jobs/{self.record.id}/files/{len(self.files) - 1}"
            return {"file_name": media.file_name, "content_type": media.content_type, "size": media.size, "url": url}

        if self.task.progress_param is not None:  # coalesced: a tight loop of reports cannot flood the loop
            self.throttle = ProgressThrottle(
                apply_progress, schedule=lambda _, then: loop.call_soon_threadsafe(then), inline=False
            )

        def on_output(value: Any) -> None:  # on the loop, in order, before the call's end
            if self.record.status is JobStatus.RUNNING:
                if self.outputs is None:
                    self.outputs = []
                self.outputs.append(value)
                self.notify()

        report = self.throttle.report if self.throttle is not None else None
        self.stop = threading.Event()
        self.call_job = CallJob(self.record.id, self.params, report, on_output, store_file, self.stop)
        return self.call_job

    async def events(self, sent_outputs: int) -> AsyncIterator[JobEvent]:
        """The job's outputs after the first `sent_outputs`, its changes of state, then its end."""
        last: tuple[Any, ...] | None = None
        while True:
            if self.changed is None:
                self.changed = asyncio.Event()
            changed = self.changed
            outputs = self.outputs or ()
            while sent_outputs < len(outputs):
                sent_outputs += 1
                yield JobEvent("output", outputs[sent_outputs - 1], sent_outputs)
            record = self.record
            if record.status.is_final:
                yield JobEvent("end", record.to_json(), sent_outputs)
                return
            state = (record.status, record.progress, record.message)
            if state != last:
                last = state
                yield JobEvent("progress", record.to_json(), sent_outputs)
            await changed.wait()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

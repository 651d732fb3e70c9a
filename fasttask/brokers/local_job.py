"""One job of the embedded queue: its record and parameters, what its call produced, and who waits on it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..batching import BatchRun
from ..files import MediaFile
from ..jobs import JobRecord, JobStatus
from ..progress import ProgressThrottle
from ..runner import CallJob
from ..tasks import TaskDef
from .base import JobEvent


@dataclass(eq=False)
class LocalJob:
    record: JobRecord
    task: TaskDef
    params: dict[str, Any]
    seq: int
    queued_at: float  # see `slots.Waiting`
    stop: threading.Event = field(default_factory=threading.Event)
    outputs: list[Any] = field(default_factory=list)
    files: list[MediaFile] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
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
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> JobRecord:
        """The record once the job ended or `timeout_s` passed, whichever comes first."""
        if not self.record.status.is_final and timeout_s > 0:
            waiter: asyncio.Future[None] = loop.create_future()
            self.waiters.append(waiter)
            timer = loop.call_later(timeout_s, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if not self.record.status.is_final:
                    self.waiters.remove(waiter)
        return self.record

    def ended(self) -> None:
        """The record is final: wake everyone who waits on it."""
        self.done.set()
        for waiter in self.waiters:
            _wake(waiter)
        self.waiters.clear()
        self.notify()

    def prepare_call(self, loop: asyncio.AbstractEventLoop) -> CallJob:
        """The job as its call sees it: progress coalesced onto the loop, outputs and files kept with the job."""

        def apply_progress(progress: float, message: str | None) -> None:
            if self.record.status is JobStatus.RUNNING:
                self.record.progress, self.record.message = progress, message
                self.notify()

        def store_file(media: MediaFile) -> dict[str, Any]:
            self.files.append(media)
            url = f"/jobs/{self.record.id}/files/{len(self.files) - 1}"
            return {"file_name": media.file_name, "content_type": media.content_type, "size": media.size, "url": url}

        if self.task.progress_param is not None:  # coalesced: a tight loop of reports cannot flood the loop
            self.throttle = ProgressThrottle(
                apply_progress, schedule=lambda _, then: loop.call_soon_threadsafe(then), inline=False
            )

        def on_output(value: Any) -> None:  # on the loop, in order, before the call's end
            if self.record.status is JobStatus.RUNNING:
                self.outputs.append(value)
                self.notify()

        report = self.throttle.report if self.throttle is not None else None
        self.call_job = CallJob(self.record.id, self.params, report, on_output, store_file, self.stop)
        return self.call_job

    async def events(self, sent_outputs: int) -> AsyncIterator[JobEvent]:
        """The job's outputs after the first `sent_outputs`, its changes of state, then its end."""
        last: tuple[Any, ...] | None = None
        while True:
            changed = self.changed
            while sent_outputs < len(self.outputs):
                sent_outputs += 1
                yield JobEvent("output", self.outputs[sent_outputs - 1], sent_outputs)
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

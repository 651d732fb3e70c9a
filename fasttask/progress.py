"""JobProgress: the handle a running task reports progress through, and learns it was cancelled; and
ProgressThrottle: how often those reports reach where the host keeps them."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .errors import JobCancelled

ProgressReporter = Callable[[float, "str | None"], None]
Report = tuple[float, "str | None"]

logger = logging.getLogger("fasttask.progress")


class JobProgress:
    """Passed to a task as its `job_progress` parameter.

    `set_status` records progress (0 to 1) and an optional message; once the job has been cancelled or
    has timed out it raises `JobCancelled` instead, so a task stops at its next report.
    """

    def __init__(
        self,
        job_id: str | None = None,
        reporter: ProgressReporter | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.job_id = job_id
        self.progress = 0.0
        self.message: str | None = None
        self._reporter = reporter
        self._stop = stop if stop is not None else threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or timed out: a task that never reports may poll this."""
        return self._stop.is_set()

    def set_status(self, progress: float | None = None, message: str | None = None) -> JobProgress:
        """Record progress in [0, 1] (None keeps the last) and a message (None keeps the last)."""
        if self._stop.is_set():
            raise JobCancelled(f"job {self.job_id} was stopped")
        if progress is not None:
            value = float(progress)
            if math.isnan(value):
                raise ValueError("progress must be a number in [0, 1], not NaN")
            self.progress = min(1.0, max(0.0, value))
        if message is not None:
            self.message = str(message)
        if self._reporter is not None:
            self._reporter(self.progress, self.message)
        return self


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]
"""Runs a callback after a delay in seconds (an event loop's `call_soon_threadsafe`, a `threading.Timer`)."""


class ProgressThrottle:
    """One job's progress reports on their way to where the host keeps them: the latest report wins.

    With `inline` (the default) a report is delivered at once, in the reporting thread, when the last
    delivery is at least `interval_s` old; otherwise it waits, and `schedule(delay_s, callback)` (when given)
    delivers it when the window ends. A host without a scheduler delivers the waiting report itself with
    `flush` (the Redis worker's heartbeat thread), or takes it with `take` to write it with the job's end.
    Without `inline` every delivery goes through `schedule`, one scheduled at a time: a task that reports in
    a tight loop costs its host one callback per turn of the host's event loop, not one per report.
    `deliver` runs under the throttle's lock, so deliveries never overlap or reorder. A delivery that raises
    is logged and its report kept waiting for the next one (progress never fails the task).
    """

    __slots__ = (
        "_closed",
        "_deliver",
        "_delivered_at",
        "_inline",
        "_last",
        "_lock",
        "_pending",
        "_schedule",
        "_scheduled",
        "interval_s",
    )

    def __init__(
        self,
        deliver: ProgressReporter,
        interval_s: float = 0.0,
        schedule: Schedule | None = None,
        inline: bool = True,
    ) -> None:
        self._deliver = deliver
        self.interval_s = interval_s
        self._schedule = schedule
        self._inline = inline
        self._lock = threading.Lock()
        self._pending: Report | None = None
        self._last: Report = (0.0, None)
        self._delivered_at = -math.inf
        self._scheduled: Cancellable | None = None
        self._closed = False

    @property
    def pending(self) -> Report | None:
        """The report not delivered yet, if any."""
        return self._pending

    @property
    def last(self) -> Report:
        """The last report delivered (`(0.0, None)` before the first)."""
        return self._last

    def report(self, progress: float, message: str | None) -> None:
        """A `JobProgress` reporter: deliver now, or keep it until the window ends."""
        with self._lock:
            if self._closed:
                return
            self._pending = (progress, message)
            wait_s = 0.0
            if self._inline:
                wait_s = self._delivered_at + self.interval_s - time.monotonic()
                if wait_s <= 0:
                    self._send()
                    return
            if self._scheduled is None and self._schedule is not None:
                self._scheduled = self._schedule(max(0.0, wait_s), self._on_schedule)

    def flush(self) -> None:
        """Deliver the waiting report now, if there is one."""
        with self._lock:
            if not self._closed and self._pending is not None:
                self._send()

    def take(self) -> Report | None:
        """The waiting report, which the caller now delivers itself (with the job's end)."""
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    def close(self) -> None:
        """The job ended: a report still waiting is dropped, later ones are ignored."""
        with self._lock:
            self._closed = True
            self._pending = None
            if self._scheduled is not None:
                self._scheduled.cancel()
                self._scheduled = None

    def _on_schedule(self) -> None:
        with self._lock:
            self._scheduled = None
            if not self._closed and self._pending is not None:
                self._send()

    def _send(self) -> None:
        report = self._pending
        assert report is not None
        self._pending = None
        self._delivered_at = time.monotonic()
        try:
            self._deliver(*report)
        except Exception as exc:
            logger.warning("a progress report was not delivered (kept for the next try): %s", exc)
            self._pending = report
            return
        self._last = report

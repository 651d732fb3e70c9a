"""JobProgress: the handle a running task reports progress through, and learns it was cancelled."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from .errors import JobCancelled

ProgressReporter = Callable[[float, "str | None"], None]


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

"""A runpod job's progress reports: handed to runpod's `progress_update`, at most one per interval."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from .sdk import runpod_sdk

logger = logging.getLogger("fasttask.runpod")

PROGRESS_INTERVAL_S = 0.5
"""At most one progress update per job this often; a report inside the window is sent when it ends."""


def progress_update(job: Mapping[str, Any], update: dict[str, Any]) -> None:
    """Hand a progress report to runpod, when there is a runpod to receive it.

    Off the platform (runpod's local test API, `--test_input`) the SDK would post to an unset URL and log an
    error for every report, so the report is only logged here.
    """
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        logger.debug("job %s progress %s (not sent: not running on runpod)", job.get("id"), update)
        return
    runpod_sdk().serverless.progress_update(dict(job), update)


class ProgressSender:
    """One job's progress reports to runpod: at most one per PROGRESS_INTERVAL_S; a report inside the
    window is sent when the window ends, so the latest progress always shows while the job runs. Reports
    still pending when the job ends are dropped: the job's result replaces them."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job = job
        self._lock = threading.Lock()
        self._sent_at = -math.inf
        self._pending: tuple[float, str | None] | None = None
        self._timer: threading.Timer | None = None
        self._closed = False

    def report(self, progress: float, message: str | None) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending = (progress, message)
            wait_s = self._sent_at + PROGRESS_INTERVAL_S - time.monotonic()
            if wait_s <= 0:
                self._send()
            elif self._timer is None:
                self._timer = threading.Timer(wait_s, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            if not self._closed and self._pending is not None:
                self._send()

    def _send(self) -> None:
        assert self._pending is not None
        progress, message = self._pending
        self._pending = None
        self._sent_at = time.monotonic()
        try:
            progress_update(self.job, {"progress": progress, "message": message})
        except Exception as exc:  # progress is best effort: never fail the task for it
            logger.warning("job %s: progress update failed: %s", self.job.get("id"), exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

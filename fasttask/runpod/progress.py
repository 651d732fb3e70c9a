"""A runpod job's progress reports: handed to runpod's `progress_update`, at most one per interval."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..progress import ProgressThrottle
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
        self._throttle = ProgressThrottle(self._send, PROGRESS_INTERVAL_S, _timer)

    def report(self, progress: float, message: str | None) -> None:
        self._throttle.report(progress, message)

    def close(self) -> None:
        self._throttle.close()

    def _send(self, progress: float, message: str | None) -> None:
        try:
            progress_update(self.job, {"progress": progress, "message": message})
        except Exception as exc:  # progress is best effort: never fail the task for it
            logger.warning("job %s: progress update failed: %s", self.job.get("id"), exc)


def _timer(delay_s: float, callback: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay_s, callback)
    timer.daemon = True
    timer.start()
    return timer

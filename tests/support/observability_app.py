"""The app the observability tests serve: in-process on both queues, and in `fasttask serve` / `fasttask worker`
subprocesses (`tests.support.observability_app:app`, settings from the environment)."""

from __future__ import annotations

import time
from typing import Any

from fasttask import FastTaskAPI, JobProgress


def build(**settings: Any) -> FastTaskAPI:
    app = FastTaskAPI(title="observed service", **settings)

    @app.task_endpoint("/echo", queue_size=10_000)
    def echo(n: int) -> int:
        return n * 2

    @app.task_endpoint("/fail")
    def fail(message: str = "boom") -> None:
        raise ValueError(message)

    @app.task_endpoint("/sleep", queue_size=100)
    def sleep(job_progress: JobProgress, seconds: float = 1.0, steps: int = 10) -> str:
        """Sleeps in `steps` steps, reporting each."""
        for step in range(steps):
            time.sleep(seconds / steps)
            job_progress.set_status((step + 1) / steps, f"step {step + 1} of {steps}")
        return "slept"

    @app.task_endpoint("/limited", queue_size=2)
    def limited() -> str:
        return "ran"

    return app


app = build()

"""The worker process of the Redis queue (`fasttask worker MODULE:APP`): one worker, or one per lane."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .presence import default_worker_name
from .worker import Worker

if TYPE_CHECKING:
    from ..app import FastTaskAPI
    from ..loops import LoopHealth
    from ..metrics import JobMetrics

__all__ = ["execute", "run_worker_process"]


def run_worker_process(
    app: FastTaskAPI,
    redis_url: str,
    endpoints: Sequence[str] | None = None,
    grace_s: float | None = None,
    name: str | None = None,
    concurrency: int | None = None,
    metrics: JobMetrics | None = None,
    loops: LoopHealth | None = None,
) -> int:
    """Work in this process until SIGTERM/SIGINT: one job at a time, or `concurrency` (FTAPI_CONCURRENCY).

    With more than one, each lane is a worker of its own (an RQ worker each, in `rq info` too) on a thread
    of this process, sharing the app and its setup. Lanes are interrupted without signals, so a task
    blocked in a long sleep or C call notices a stop only when that call returns; and a task that cannot
    be stopped makes the whole process replace itself, which re-queues the other lanes' jobs.
    """
    lanes = concurrency or app.settings.concurrency or 1
    if lanes == 1:
        return Worker(app, redis_url, endpoints, grace_s, name=name, metrics=metrics, loops=loops).run()
    base = name or default_worker_name()
    workers = [
        Worker(
            app,
            redis_url,
            endpoints,
            grace_s,
            install_signals=False,
            owns_process=True,
            name=f"{base}-{lane}",
            metrics=metrics,
            loops=loops,
            lane=lane,
        )
        for lane in range(lanes)
    ]
    threads = [threading.Thread(target=worker.run, name=f"fasttask-lane-{lane}") for lane, worker in enumerate(workers)]

    def stop_all(*_: object) -> None:
        for worker in workers:
            worker.stop()

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # short joins keep the main thread free to take signals
    return 0


def execute(path: str, **params: Any) -> Any:
    """The function every fasttask RQ job names. Only a fasttask worker can run it: it needs the app."""
    raise RuntimeError(
        f"fasttask job for {path} was taken by a plain RQ worker; run `fasttask worker MODULE:APP` instead"
    )

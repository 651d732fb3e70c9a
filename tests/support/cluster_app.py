"""The app the multi-process tests run in `fasttask serve` and `fasttask worker` subprocesses."""

from __future__ import annotations

import os
import signal
import time

import redis

from fasttask import Batch, FastTaskAPI, JobProgress, MediaFile

app = FastTaskAPI(title="cluster test")
_counter = redis.Redis.from_url(os.environ["FTAPI_REDIS_URL"]) if os.environ.get("FTAPI_REDIS_URL") else None


def _count_run(key: str) -> None:
    """Record each execution in Redis, so tests can tell how often a job really ran, and where."""
    if _counter is not None:
        _counter.hincrby("test:runs", key, 1)
        _counter.hset("test:ran_on", key, os.getpid())


@app.task_endpoint("/echo", queue_size=10_000)
def echo(n: int) -> int:
    _count_run(f"echo:{n}")
    return n * 2


@app.task_endpoint("/echo_file", queue_size=100)
def echo_file(file: MediaFile) -> MediaFile:
    return file


@app.task_endpoint("/limited", queue_size=3)
def limited() -> str:
    return "ran"


@app.task_endpoint("/sleep", queue_size=100)
def sleep(job_progress: JobProgress, key: str, seconds: float = 1.0) -> str:
    """Sleeps in small steps, reporting progress; records that it started."""
    _count_run(f"sleep:{key}")
    steps = max(1, int(seconds / 0.1))
    for step in range(steps):
        time.sleep(seconds / steps)
        job_progress.set_status((step + 1) / steps, f"slept {step + 1} of {steps}")
    return f"slept {key}"


@app.task_endpoint("/stubborn", queue_size=10, timeout=1)
def stubborn(key: str) -> str:
    """Cannot be interrupted: it blocks the signal the worker interrupts with, and never reports."""
    _count_run(f"stubborn:{key}")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    time.sleep(60)
    return "too late"


@app.task_endpoint("/sleep_batch", queue_size=100, batch=Batch(max_size=4, max_wait_ms=0))
def sleep_batch(key: list[str], seconds: list[float]) -> list[str]:
    """A batched task that records each run of each job, then sleeps the longest of its jobs' times."""
    for one in key:
        _count_run(f"sleep_batch:{one}")
    time.sleep(max(seconds))
    return [f"slept {one}" for one in key]

"""Apps the tests serve: one per behaviour, built fresh for each test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from fasttask import FastTaskAPI, ImageFile, JobCancelled, JobProgress, MediaFile


class Point(BaseModel):
    x: int
    y: int = 0


@dataclass
class Probe:
    """What tasks saw, for the tests to read back."""

    release: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    calls: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_app(probe: Probe | None = None, **settings: Any) -> FastTaskAPI:
    probe = probe or Probe()
    app = FastTaskAPI(title="test service", **{"queue": "local", **settings})

    @app.task_endpoint("/make_fries", queue_size=100)
    def make_fries(job_progress: JobProgress, fries_name: str, amount: int = 1) -> str:
        job_progress.set_status(0.5, "frying")
        return f"{amount} x {fries_name}"

    @app.task_endpoint("/shape")
    def shape(point: Point, tags: list[str] | None = None, scale: float = 1.0) -> dict[str, Any]:
        return {"x": point.x * scale, "y": point.y * scale, "tags": tags or []}

    @app.task_endpoint("/fail", retries=0)
    def fail(message: str = "boom") -> None:
        raise ValueError(message)

    @app.task_endpoint("/flaky", retries=2)
    def flaky() -> int:
        with probe.lock:
            probe.calls.append("flaky")
            attempt = len([c for c in probe.calls if c == "flaky"])
        if attempt < 3:
            raise RuntimeError(f"attempt {attempt} failed")
        return attempt

    @app.task_endpoint("/block", queue_size=10)
    def block(job_progress: JobProgress, tag: str = "") -> str:
        """Runs until the test releases it, reporting progress so a cancel can reach it."""
        probe.started.set()
        try:
            while not probe.release.wait(0.01):
                job_progress.set_status(0.1, "blocked")
        except JobCancelled:
            probe.stopped.set()
            raise
        return f"released {tag}"

    @app.task_endpoint("/deaf")
    def deaf() -> str:
        """Never reports progress: it cannot be stopped, only abandoned."""
        probe.started.set()
        probe.release.wait(10)
        return "late result"

    @app.task_endpoint("/stubborn", timeout=0.3)
    def stubborn() -> str:
        """Passes its timeout and never reports: its thread stays busy until the test releases it."""
        probe.started.set()
        probe.release.wait(10)
        return "too late"

    @app.task_endpoint("/slow", timeout=0.3)
    def slow(job_progress: JobProgress) -> str:
        try:
            while not probe.release.wait(0.01):
                job_progress.set_status(0.2, "working")
        except JobCancelled:
            probe.stopped.set()
            raise
        return "done"

    @app.task_endpoint("/sleepy_async", timeout=0.3)
    async def sleepy_async() -> str:
        probe.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.stopped.set()
            raise
        return "woke"

    @app.task_endpoint("/async_echo")
    async def async_echo(job_progress: JobProgress, text: str) -> str:
        probe.threads.append(threading.current_thread().name)
        job_progress.set_status(0.5, "echoing")
        await asyncio.sleep(0)
        return text

    @app.task_endpoint("/count")
    def count(n: int = 3) -> Iterator[int]:
        yield from range(n)

    @app.task_endpoint("/async_count")
    async def async_count(n: int = 3) -> AsyncIterator[dict[str, int]]:
        for i in range(n):
            await asyncio.sleep(0)
            yield {"i": i}

    @app.task_endpoint("/stream_slowly")
    def stream_slowly(job_progress: JobProgress, n: int = 3) -> Iterator[str]:
        for i in range(n):
            probe.release.wait(5)
            job_progress.set_status((i + 1) / n, f"part {i}")
            yield f"part {i}"

    @app.task_endpoint("/async_stream_slowly")
    async def async_stream_slowly(job_progress: JobProgress, n: int = 3) -> AsyncIterator[str]:
        """Like /stream_slowly, but its yields and its end all come in one tick of the event loop."""
        await asyncio.to_thread(probe.release.wait, 5)
        for i in range(n):
            job_progress.set_status((i + 1) / n, f"part {i}")
            yield f"part {i}"

    @app.task_endpoint("/thumbnail")
    def thumbnail(image: ImageFile, note: str = "") -> ImageFile:
        data = image.to_bytes()
        return ImageFile.from_bytes(data[::-1], file_name=f"reversed-{image.file_name}", content_type="image/png")

    @app.task_endpoint("/sizes")
    def sizes(files: list[MediaFile]) -> dict[str, int]:
        return {f.file_name: f.size for f in files}

    @app.task_endpoint("/echo_file")
    def echo_file(file: MediaFile) -> MediaFile:
        return file

    @app.task_endpoint("/maybe_image")
    def maybe_image(image: ImageFile | None = None, images: list[ImageFile] | None = None) -> dict[str, Any]:
        return {"image": image.size if image else None, "images": [i.file_name for i in images or []]}

    @app.task_endpoint("/lookup", methods=["GET", "POST"])
    def lookup(key: str) -> str:
        return key.upper()

    @app.task_endpoint("/short_lived", result_ttl=0.3)
    def short_lived() -> str:
        return "soon gone"

    @app.endpoint("/ping", methods=["GET"])
    def ping(job_progress: JobProgress) -> dict[str, str]:
        job_progress.set_status(1.0)
        return {"pong": "ok"}

    @app.setup
    def load_model() -> None:
        probe.calls.append("setup")

    return app

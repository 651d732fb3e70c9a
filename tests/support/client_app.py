"""The app the client's tests serve, and wrappers that answer as an API process does while Redis is down, or
that note what the client sent and lose a submit's answer."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from pydantic import BaseModel

from fasttask import FastTaskAPI, ImageFile, JobCancelled, JobProgress, MediaFile
from tests.support.apps import Probe

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


class Point(BaseModel):
    x: int
    y: int = 0


def client_app(probe: Probe, **settings: Any) -> FastTaskAPI:
    """Tasks for what tests/support/apps.py does not have: a tiny queue, form-encoded models, nested file results."""
    app = FastTaskAPI(title="client tests", **{"queue": "local", **settings})
    lock = threading.Lock()
    running: list[int] = [0]

    @app.task_endpoint("/hold", queue_size=1)
    def hold(job_progress: JobProgress, data: MediaFile | None = None) -> int:
        probe.started.set()
        try:
            while not probe.release.wait(0.01):
                job_progress.set_status(0.1, "holding")
        except JobCancelled:
            probe.stopped.set()
            raise
        return -1 if data is None else data.size

    @app.task_endpoint("/annotate")
    def annotate(image: ImageFile, point: Point, tags: list[str], scale: float = 1.0, flag: bool = False) -> Any:
        return {
            "file": [image.file_name, image.content_type, image.to_bytes() == PNG],
            "point": point,
            "tags": tags,
            "scale": scale,
            "flag": flag,
        }

    @app.task_endpoint("/pair")
    def pair(name: str = "x") -> Any:
        first = MediaFile.from_bytes(b"first", file_name=f"{name}.txt")
        second = MediaFile.from_bytes(b"second", file_name="../../escape.txt")
        return {"one": first, "more": [second], "n": 2}

    @app.task_endpoint("/steps")
    def steps(job_progress: JobProgress, n: int = 3, pause: float = 0.15) -> str:
        for i in range(n):
            time.sleep(pause)
            job_progress.set_status((i + 1) / n, f"step {i + 1}")
        time.sleep(pause)
        return "stepped"

    @app.task_endpoint("/square")
    def square(job_progress: JobProgress, value: int, pause: float = 0.05) -> int:
        """Squares, slowly; fails for a negative value, and holds for 0 until released or cancelled."""
        with lock:
            running[0] += 1
            probe.calls.append(f"running {running[0]}")
        try:
            time.sleep(pause)
            while value == 0 and not probe.release.wait(0.01):
                job_progress.set_status(0.5, "holding")
        except JobCancelled:
            probe.stopped.set()
            raise
        finally:
            with lock:
                running[0] -= 1
        if value < 0:
            raise ValueError(f"negative: {value}")
        return value * value

    return app


class Unavailable:
    """Answers the first `failures` POSTs with 503, as an API process does while Redis is unreachable."""

    def __init__(self, app: FastTaskAPI, failures: int) -> None:
        self.app = app
        self.failures = failures
        self.refused_at: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.failures > 0:
            self.failures -= 1
            self.refused_at.append(time.monotonic())
            body = b'{"detail":"the queue backend is unreachable"}'
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class Recorder:
    """Notes each request's method, path and headers; answers the first `fail_submits` submits with a 500
    after the service made their job (the job ids it hid are kept)."""

    def __init__(self, app: FastTaskAPI, fail_submits: int = 0) -> None:
        self.app = app
        self.fail_submits = fail_submits
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.hidden_jobs: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        self.requests.append((scope["method"], scope["path"], headers))
        if scope["method"] != "POST" or self.fail_submits <= 0:
            await self.app(scope, receive, send)
            return
        self.fail_submits -= 1
        body: list[bytes] = []

        async def keep(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        self.hidden_jobs.append(json.loads(b"".join(body))["id"])
        answer = b'{"detail":"internal server error"}'
        start = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 500, "headers": start})
        await send({"type": "http.response.body", "body": answer})

    def submits(self) -> list[dict[str, str]]:
        return [headers for method, _, headers in self.requests if method == "POST"]

"""The app the runpod tests serve: imported by tests/runpod/test_mode.py, and run as a script for runpod's local
test API (`FTAPI_BACKEND=runpod python tests/support/runpod_app.py --rp_serve_api --rp_api_port P --rp_api_host
127.0.0.1`). With FASTTASK_TEST_NET_GUARD=1 the script refuses, and reports on stderr, every connection
and name lookup beyond loopback."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from fasttask import FastTaskAPI, ImageFile, JobProgress, MediaFile

NET_GUARD_MARK = "NET GUARD refused"


class Point(BaseModel):
    x: int
    y: int = 0


@dataclass
class Probe:
    """What the tasks saw, for in-process tests to read back."""

    setups: int = 0
    running: int = 0
    most_running: int = 0
    stopped: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_app(probe: Probe | None = None, **settings: Any) -> FastTaskAPI:
    probe = probe or Probe()
    app = FastTaskAPI(title="runpod test service", **settings)

    @app.setup
    def load_model() -> None:
        probe.setups += 1

    @app.task_endpoint("/make_fries")
    def make_fries(job_progress: JobProgress, fries_name: str, amount: int = 1) -> str:
        job_progress.set_status(0.5, "frying")
        return f"{amount} x {fries_name}"

    @app.task_endpoint("/shape")
    def shape(point: Point, tags: list[str] | None = None, scale: float = 1.0) -> dict[str, Any]:
        return {"x": point.x * scale, "y": point.y * scale, "tags": tags or []}

    @app.task_endpoint("/fail")
    def fail(message: str = "boom") -> None:
        raise ValueError(message)

    @app.task_endpoint("/count")
    def count(n: int = 3, fail_at: int | None = None) -> Iterator[int]:
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"failed at {i}")
            yield i

    @app.task_endpoint("/acount")
    async def acount(n: int = 3, delay: float = 0.0) -> AsyncIterator[dict[str, int]]:
        for i in range(n):
            await asyncio.sleep(delay)
            yield {"i": i}

    @app.task_endpoint("/nap")
    async def nap(seconds: float = 0.3) -> float:
        with probe.lock:
            probe.running += 1
            probe.most_running = max(probe.most_running, probe.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            with probe.lock:
                probe.running -= 1
        return seconds

    @app.task_endpoint("/report")
    def report(job_progress: JobProgress, steps: int = 5, pause: float = 0.0) -> str:
        for step in range(1, steps + 1):
            job_progress.set_status(step / steps, f"step {step}")
        time.sleep(pause)
        return "reported"

    @app.task_endpoint("/slow_async", timeout=0.3)
    async def slow_async() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.stopped.append("slow_async")
            raise
        return "late"

    @app.task_endpoint("/slow_sync", timeout=0.3)
    def slow_sync(job_progress: JobProgress) -> str:
        for _ in range(300):
            try:
                job_progress.set_status(0.1, "working")
            except BaseException:
                probe.stopped.append("slow_sync")
                raise
            time.sleep(0.01)
        return "late"

    @app.task_endpoint("/spin")
    def spin(job_progress: JobProgress) -> str:
        for _ in range(3000):
            try:
                job_progress.set_status(0.1, "spinning")
            except BaseException:
                probe.stopped.append("spin")
                raise
            time.sleep(0.01)
        return "late"

    @app.task_endpoint("/echo_file")
    def echo_file(file: MediaFile) -> MediaFile:
        return file

    @app.task_endpoint("/make_images")
    def make_images(count: int = 2) -> dict[str, Any]:
        images = [ImageFile.from_bytes(bytes([i]) * 10, f"image-{i}.png") for i in range(count)]
        return {"images": images, "count": count}

    @app.task_endpoint("/file_stream")
    def file_stream(count: int = 2) -> Iterator[MediaFile]:
        for i in range(count):
            yield MediaFile.from_bytes(f"part {i}".encode(), f"part-{i}.txt")

    return app


def install_net_guard() -> None:
    """Refuse (and report on stderr) any connection or name lookup that would leave loopback."""
    local_hosts = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}

    def is_local(address: Any) -> bool:
        if isinstance(address, tuple) and address:
            host = address[0]
            return host in local_hosts or str(host).startswith("127.")
        return isinstance(address, str | bytes)  # unix sockets

    def refuse(what: str) -> None:
        print(f"{NET_GUARD_MARK}: {what}", file=sys.stderr, flush=True)
        raise OSError(f"{NET_GUARD_MARK}: {what}")

    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if not (name in local_hosts or str(name).startswith("127.")):
            refuse(f"name lookup of {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if not is_local(address):
            refuse(f"connection to {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not is_local(address):
            refuse(f"connection to {address!r}")
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign, assignment]
    try:  # aiohttp resolves names with c-ares (aiodns) when it is installed, past the socket module
        import aiodns
    except ImportError:
        return
    for method in ("query", "query_dns", "gethostbyname", "getaddrinfo"):
        original = getattr(aiodns.DNSResolver, method, None)
        if original is None:
            continue

        def guarded(self: Any, host: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if not (host in local_hosts or str(host).startswith("127.")):
                refuse(f"name lookup of {host!r} (c-ares)")
            return _original(self, host, *args, **kwargs)

        setattr(aiodns.DNSResolver, method, guarded)


if __name__ == "__main__":
    import os

    if os.environ.get("FASTTASK_TEST_NET_GUARD") == "1":
        install_net_guard()
    make_app().start()

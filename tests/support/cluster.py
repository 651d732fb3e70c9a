"""Real processes on a redis-server of a test's own: `fasttask serve` and `fasttask worker` subprocesses run
from the repository's root, and the HTTP calls the multi-process tests make to them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.support import ROOT
from tests.support.redis_server import RedisServer
from tests.support.servers import free_port

APP = "tests.support.cluster_app:app"
"""The app the processes serve and work on (a test may point this module at another)."""


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Cluster:
    """Processes of one test: a redis-server of its own, API processes and workers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis = RedisServer(directory / "redis").start()
        self.env = {**os.environ, "FTAPI_REDIS_URL": self.redis.url, "PYTHONPATH": str(ROOT)}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.apis: list[str] = []

    def spawn(self, *argv: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "fasttask", *argv], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.processes.append(process)
        return process

    def api(self) -> str:
        port = free_port()
        process = self.spawn("serve", APP, "--port", str(port), "--log-level", "warning", name=f"api-{port}")
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, self.log(f"api-{port}")
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, "the API process")
        self.apis.append(url)
        return url

    def worker(self, *options: str) -> subprocess.Popen[bytes]:
        before = self.worker_count()
        process = self.spawn("worker", APP, *options, name=f"worker-{len(self.processes)}")
        wait_until(lambda: self.worker_count() > before or process.poll() is not None, 30, "the worker to register")
        assert process.poll() is None, self.log(f"worker-{len(self.processes) - 1}")
        return process

    def worker_count(self) -> int:
        with redis.Redis.from_url(self.redis.url) as connection:
            return int(connection.scard("rq:workers"))

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.redis.stop()


def submit(url: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}{path}", json=params, timeout=30)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def final(url: str, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """Long-poll until the job ends (each poll at most 30 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{url}/jobs/{job_id}", params={"wait": 30}, timeout=40)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in ("finished", "failed", "cancelled", "timeout"):
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}: {job}"


def running(url: str, job_id: str) -> bool:
    return bool(httpx.get(f"{url}/jobs/{job_id}").json()["status"] == "running")

"""Fixtures every folder of the suite uses: servers on loopback (uvicorn, redis-server, moto's S3, a file
server), the queue under test, workers in threads. A folder's own fixtures are in its conftest.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from tests.support.browser import CHROMEDRIVER, CHROMIUM, FLAGS
from tests.support.redis_server import RedisServer
from tests.support.servers import S3_CREDENTIALS, FileServer, LiveServer, free_port, start_s3_server
from tests.support.worker import WorkerThread


@pytest.fixture
def live_server() -> Iterator[Callable[[FastTaskAPI], LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: FastTaskAPI) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture
def client_for() -> Iterator[Callable[[FastTaskAPI], TestClient]]:
    clients: list[TestClient] = []

    def make(app: FastTaskAPI) -> TestClient:
        client = TestClient(app).__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the session's redis-server."""
    import redis

    with redis.Redis.from_url(redis_server.url) as connection:
        connection.flushall()
    return redis_server.url


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerThread]]:
    workers: list[WorkerThread] = []

    def start(app: FastTaskAPI, redis_url: str, **options: Any) -> WorkerThread:
        worker = WorkerThread(app, redis_url, **options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(params=["local", "redis"])
def queue_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queue_settings(queue_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the queue under test (a clean Redis for the Redis queue)."""
    if queue_kind == "local":
        return {"queue": "local"}
    return {"queue": "redis", "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture
def with_workers(
    queue_settings: dict[str, Any], start_worker: Callable[..., WorkerThread]
) -> Callable[[FastTaskAPI], FastTaskAPI]:
    """Start a worker for `app` when it runs on the Redis queue; the embedded queue needs none."""

    def start(app: FastTaskAPI) -> FastTaskAPI:
        if app.settings.queue == "redis":
            start_worker(app, queue_settings["redis_url"])
        return app

    return start


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    url, server = start_s3_server(free_port())
    yield url
    server.terminate()
    server.wait(10)


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the session's S3 server, with credentials in the environment for boto3."""
    import boto3

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = f"test-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium driven by selenium (tests that take it skip when Chromium is not installed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()

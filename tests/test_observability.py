"""Observability in one process: /metrics (parsed with prometheus_client's parser), GET /jobs, JSON logs.

The counter and listing tests run on both queues (the Redis one with a worker in a thread, which counts its
jobs in the worker's own metrics: see tests/redis/test_observability_cluster.py for the sum across processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from tests.support import ROOT
from tests.support.metrics import Samples, scrape, value
from tests.support.observability_app import build
from tests.support.servers import free_port


def metrics(client: TestClient | httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return scrape(response.text)


def final(client: TestClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/jobs/{job_id}", params={"wait": 20}).json()
    assert job["status"] in ("finished", "failed", "cancelled", "timeout"), job
    return job


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return result


def test_counters_move_by_exactly_the_jobs_run_embedded(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    client = client_for(build(queue="local", concurrency=1))
    before = metrics(client)
    echoes = [client.post("/echo", json={"n": n}).json()["id"] for n in range(7)]
    fails = [client.post("/fail", json={}).json()["id"] for _ in range(3)]
    for job_id in echoes + fails:
        final(client, job_id)
    sleeper = client.post("/sleep", json={"seconds": 30, "steps": 300}).json()["id"]
    wait_for(lambda: client.get(f"/jobs/{sleeper}").json()["status"] == "running", 10, "the sleep to start")
    held = [client.post("/limited").json()["id"] for _ in range(2)]  # the one runner is busy: they wait
    assert client.post("/limited").status_code == 429
    assert client.post("/echo", json={"n": "not a number"}).status_code == 422
    for job_id in [*held, sleeper]:  # the waiting ones first: a freed runner would start and end them
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    after = metrics(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("fasttask_jobs_submitted_total", endpoint="/echo") == 7
    assert moved("fasttask_jobs_submitted_total", endpoint="/fail") == 3
    assert moved("fasttask_jobs_submitted_total", endpoint="/sleep") == 1
    assert moved("fasttask_jobs_submitted_total", endpoint="/limited") == 2
    assert moved("fasttask_jobs_rejected_total", endpoint="/limited", reason="queue_full") == 1
    assert moved("fasttask_jobs_rejected_total", endpoint="/echo", reason="invalid") == 1
    assert moved("fasttask_jobs_rejected_total", endpoint="/echo", reason="unavailable") == 0
    assert moved("fasttask_jobs_finished_total", endpoint="/echo", status="finished") == 7
    assert moved("fasttask_jobs_finished_total", endpoint="/fail", status="failed") == 3
    assert moved("fasttask_jobs_finished_total", endpoint="/sleep", status="cancelled") == 1
    assert moved("fasttask_jobs_finished_total", endpoint="/limited", status="cancelled") == 2
    assert moved("fasttask_jobs_finished_total", endpoint="/echo", status="failed") == 0
    # waits and run times: every started job once; the cancelled queued ones never started
    assert moved("fasttask_job_wait_seconds_count", endpoint="/echo") == 7
    assert moved("fasttask_job_run_seconds_count", endpoint="/echo") == 7
    assert moved("fasttask_job_run_seconds_count", endpoint="/fail") == 3
    assert moved("fasttask_job_run_seconds_count", endpoint="/sleep") == 1
    assert moved("fasttask_job_wait_seconds_count", endpoint="/limited") == 0
    assert value(after, "fasttask_job_wait_seconds_bucket", endpoint="/echo", le="+Inf") == 7
    assert value(after, "fasttask_queue_limit", endpoint="/limited") == 2
    assert value(after, "fasttask_workers", endpoint="/echo") == 1
    assert value(after, "fasttask_queue_jobs", endpoint="/echo", state="queued") == 0
    # requests, by route template and never by id
    assert moved("fasttask_http_requests_total", route="/echo", method="POST", code="202") == 7
    assert moved("fasttask_http_requests_total", route="/echo", method="POST", code="422") == 1
    assert moved("fasttask_http_requests_total", route="/limited", method="POST", code="429") == 1
    assert moved("fasttask_http_requests_total", route="/jobs/{id}/cancel", method="POST", code="200") == 3
    assert value(after, "fasttask_http_requests_total", route="/jobs/{id}", method="GET", code="200") >= 10
    routes = {dict(labels).get("route") for (name, labels) in after if name == "fasttask_http_requests_total"}
    assert not any(job_id in str(route) for route in routes for job_id in echoes)


def test_queue_gauges_show_waiting_and_running_jobs(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    client = client_for(build(queue="local", concurrency=1))
    sleeper = client.post("/sleep", json={"seconds": 30, "steps": 300}).json()["id"]
    wait_for(lambda: client.get(f"/jobs/{sleeper}").json()["status"] == "running", 10, "the sleep to start")
    waiting = client.post("/limited").json()["id"]
    samples = metrics(client)
    assert value(samples, "fasttask_queue_jobs", endpoint="/sleep", state="running") == 1
    assert value(samples, "fasttask_queue_jobs", endpoint="/limited", state="queued") == 1
    for job_id in (sleeper, waiting):
        client.post(f"/jobs/{job_id}/cancel")


def test_a_thousand_more_jobs_add_no_series(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    client = client_for(build(queue="local"))
    for job_id in [client.post("/echo", json={"n": n}).json()["id"] for n in range(5)]:
        final(client, job_id)
        client.get(f"/jobs/{job_id}/stream")
        client.get(f"/status?job_id={job_id}")
    metrics(client)  # the scrape's own series appears from the second scrape on
    before = set(metrics(client))
    ids = [client.post("/echo", json={"n": n}).json()["id"] for n in range(1000)]
    for job_id in ids:
        final(client, job_id)
        client.get(f"/jobs/{job_id}/stream")
        client.get(f"/status?job_id={job_id}")
    after = metrics(client)
    assert set(after) == before
    assert value(after, "fasttask_jobs_finished_total", endpoint="/echo", status="finished") == 1005


def test_metrics_can_be_turned_off(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    client = client_for(build(queue="local", metrics=False))
    job = client.post("/echo", json={"n": 1}).json()
    assert final(client, job["id"])["result"] == 2
    assert client.get("/metrics").status_code == 404


def test_metrics_need_the_api_key_and_count_refused_requests(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    client = client_for(build(queue="local", api_key="k" * 32))
    assert client.get("/metrics").status_code == 401
    assert client.post("/jobs/abc/cancel").status_code == 401
    samples = metrics(client.__class__(client.app, headers={"Authorization": "Bearer " + "k" * 32}))
    assert value(samples, "fasttask_http_requests_total", route="/metrics", method="GET", code="401") == 1
    assert value(samples, "fasttask_http_requests_total", route="/jobs/{id}/cancel", method="POST", code="401") == 1


# -- GET /jobs ---------------------------------------------------------------------------------------


def all_pages(client: TestClient, limit: int, **filters: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit, **filters}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["jobs"]) <= limit
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs
    raise AssertionError("paging did not end")


def order_key(job: dict[str, Any]) -> tuple[str, str]:
    return (job["finished_at"] or job["started_at"] or job["created_at"], job["id"])


def test_jobs_listing_pages_newest_first_with_filters(
    queue_settings: dict[str, Any],
    with_workers: Callable[[FastTaskAPI], FastTaskAPI],
    client_for: Callable[[FastTaskAPI], TestClient],
) -> None:
    client = client_for(with_workers(build(**queue_settings)))
    echoes = [client.post("/echo", json={"n": n}).json()["id"] for n in range(12)]
    fails = [client.post("/fail", json={"message": f"no {n}"}).json()["id"] for n in range(4)]
    for job_id in echoes + fails:
        final(client, job_id)
    sleeper = client.post("/sleep", json={"seconds": 30, "steps": 300}).json()["id"]
    wait_for(lambda: client.get(f"/jobs/{sleeper}").json()["status"] == "running", 20, "the sleep to start")
    try:
        everything = all_pages(client, 5)
        assert sorted(job["id"] for job in everything) == sorted([*echoes, *fails, sleeper])
        assert everything[0]["id"] == sleeper  # the latest change: it started after the others ended
        finals = [job for job in everything if job["id"] != sleeper]
        assert finals == sorted(finals, key=order_key, reverse=True)
        assert everything[1] == client.get(f"/jobs/{everything[1]['id']}").json()  # the same job JSON

        failed = all_pages(client, 3, status="failed")
        assert sorted(job["id"] for job in failed) == sorted(fails)
        assert {job["error"]["type"] for job in failed} == {"ValueError"}
        assert [job["id"] for job in all_pages(client, 50, status="running")] == [sleeper]
        assert sorted(job["id"] for job in all_pages(client, 4, endpoint="/echo")) == sorted(echoes)
        assert all_pages(client, 10, endpoint="/echo", status="failed") == []
        assert all_pages(client, 10, endpoint="/limited") == []

        first = client.get("/jobs", params={"limit": 1}).json()
        assert len(first["jobs"]) == 1 and first["next_cursor"]
        assert client.get("/jobs", params={"limit": 0}).status_code == 422
        assert client.get("/jobs", params={"limit": 201}).status_code == 422
        assert client.get("/jobs", params={"status": "sleeping"}).status_code == 422
        assert client.get("/jobs", params={"endpoint": "/nope"}).status_code == 422
        assert client.get("/jobs", params={"cursor": "not-a-cursor"}).status_code == 422
    finally:
        client.post(f"/jobs/{sleeper}/cancel")
    cancelled = all_pages(client, 10, status="cancelled")
    assert [job["id"] for job in cancelled] == [sleeper]


def test_jobs_listing_shows_queued_jobs(
    queue_settings: dict[str, Any],
    client_for: Callable[[FastTaskAPI], TestClient],
) -> None:
    """No worker (Redis) or one busy runner (embedded): submitted jobs stay queued, and list newest first."""
    client = client_for(build(**queue_settings, concurrency=1))
    blocker = None
    if queue_settings["queue"] == "local":
        blocker = client.post("/sleep", json={"seconds": 30, "steps": 300}).json()["id"]
    queued = []
    for n in range(7):
        queued.append(client.post("/echo", json={"n": n}).json()["id"])
        time.sleep(0.002)  # distinct submit times
    listed = all_pages(client, 3, status="queued")
    assert [job["id"] for job in listed] == queued[::-1]
    if blocker is not None:
        client.post(f"/jobs/{blocker}/cancel")


# -- structured logs -----------------------------------------------------------------------------------


@pytest.fixture
def json_logged_server(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """`fasttask serve` with FTAPI_LOG_FORMAT=json and secrets in its environment."""
    secrets = {"FTAPI_API_KEY": "key-" + "7" * 28, "AWS_SECRET_ACCESS_KEY": "aws-" + "9" * 36}
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, **secrets, "FTAPI_LOG_FORMAT": "json", "FTAPI_QUEUE": "local", "PYTHONPATH": str(ROOT)}
    env.pop("FTAPI_REDIS_URL", None)
    with log.open("wb") as out, open(tmp_path / "serve.err", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "fasttask", "serve", "tests.support.observability_app:app", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(process, url), 30, "the API process")
        yield url, tmp_path, secrets
    finally:
        process.terminate()
        process.wait(10)


def _healthy(process: subprocess.Popen[bytes], url: str) -> bool:
    assert process.poll() is None
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def test_json_logs_parse_line_by_line_carry_job_ids_and_no_secret(
    json_logged_server: tuple[str, Path, dict[str, str]],
) -> None:
    url, directory, secrets = json_logged_server
    key = secrets["FTAPI_API_KEY"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        ok = client.post("/echo", json={"n": 4}).json()["id"]
        bad = client.post("/fail", json={"message": "nope"}).json()["id"]
        for job_id in (ok, bad):
            assert client.get(f"/jobs/{job_id}", params={"wait": 10}).json()["status"] in ("finished", "failed")
        client.get("/queues", params={"api_key": key})  # a client that wrongly puts the key in the URL
        assert httpx.get(f"{url}/queues", headers={"X-API-Key": key + "x"}).status_code == 401
    time.sleep(0.5)  # the access log line of the last request
    raw = (directory / "serve.log").read_text() + (directory / "serve.err").read_text()
    for secret in secrets.values():
        assert secret not in raw
    lines = [json.loads(line) for line in (directory / "serve.log").read_text().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    events = {(line["job_id"], line["status"]) for line in lines if line["logger"] == "fasttask.jobs"}
    assert {(ok, "queued"), (ok, "running"), (ok, "finished"), (bad, "failed")} <= events
    ended = next(line for line in lines if line.get("job_id") == ok and line.get("status") == "finished")
    assert ended["endpoint"] == "/echo" and ended["duration_ms"] >= 0
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(line.get("job_id") == ok and line["path"].startswith(f"/jobs/{ok}") for line in access)
    assert any(line["status_code"] == 401 for line in access)
    assert any("api_key=***" in line["path"] for line in access)

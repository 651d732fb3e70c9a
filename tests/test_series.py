"""The dashboard's charts data (`GET /dashboard/series`) on both queues, and the arithmetic behind it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from fasttask.metrics import JOB_BUCKETS
from fasttask.series import MINUTES, bucket_quantile, percentile
from tests.support.observability_app import build


def ended(client: TestClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/jobs/{job_id}", params={"wait": 20}).json()
    assert job["status"] in ("finished", "failed", "cancelled", "timeout"), job
    return job


def test_series_show_the_last_minutes_per_endpoint_on_both_queues(
    client_for: Callable[[FastTaskAPI], TestClient],
    queue_settings: dict[str, Any],
    with_workers: Callable[[FastTaskAPI], FastTaskAPI],
) -> None:
    app = build(**queue_settings, concurrency=1)
    client = client_for(app)
    with_workers(app)
    done = [client.post("/echo", json={"n": n}).json()["id"] for n in range(4)]
    failed = client.post("/fail", json={}).json()["id"]
    slept = client.post("/sleep", json={"seconds": 0.4, "steps": 4}).json()["id"]
    for job_id in [*done, failed, slept]:
        ended(client, job_id)
    # one job runs, three wait behind it: the current minute's depth shows them
    blocker = client.post("/sleep", json={"seconds": 30, "steps": 300}).json()["id"]
    deadline = time.monotonic() + 15
    while client.get(f"/jobs/{blocker}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the blocking job did not start"
        time.sleep(0.02)
    waiting = [client.post("/sleep", json={"seconds": 0.1, "steps": 1}).json()["id"] for _ in range(3)]

    answer = client.get("/dashboard/series")
    assert answer.status_code == 200
    series = answer.json()
    assert series["minute_s"] == 60
    assert set(series["endpoints"]) == {"/echo", "/fail", "/sleep", "/limited"}
    for figures in series["endpoints"].values():
        assert all(len(values) == MINUTES for values in figures.values())

    echo, fail, sleep = (series["endpoints"][path] for path in ("/echo", "/fail", "/sleep"))
    assert sum(v or 0 for v in echo["finished"]) == 4
    assert sum(v or 0 for v in echo["failed"]) == 0
    assert sum(v or 0 for v in fail["failed"]) == 1
    assert sum(v or 0 for v in sleep["finished"]) == 1
    run_p95 = max(v for v in sleep["run_p95"] if v is not None)
    assert 0.3 <= run_p95 <= 1.0  # the 0.4 s job (a histogram estimate on the embedded queue)
    assert any(v is not None for v in echo["wait_p50"])
    assert sleep["queued"][-1] >= 3
    assert sleep["running"][-1] >= 1

    for job_id in [blocker, *waiting]:
        client.post(f"/jobs/{job_id}/cancel")
    later = client.get("/dashboard/series").json()["endpoints"]["/sleep"]
    assert sum(v or 0 for v in later["cancelled"]) == 4


def test_the_series_need_the_api_key(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    client = client_for(build(queue="local", api_key="series-" + "5" * 25))
    assert client.get("/dashboard/series").status_code == 401
    assert client.get("/dashboard/series", headers={"X-API-Key": "series-" + "5" * 25}).status_code == 200


def test_histogram_quantiles_interpolate_inside_the_bucket() -> None:
    bounds = JOB_BUCKETS
    counts = [0] * (len(bounds) + 1)
    assert bucket_quantile(bounds, counts, 0.5) is None
    counts[bounds.index(1.0)] = 10  # ten observations in (0.5, 1.0]
    assert bucket_quantile(bounds, counts, 0.5) == 0.75
    assert bucket_quantile(bounds, counts, 1.0) == 1.0
    counts[-1] = 90  # most above the last bound: only that bound is known
    assert bucket_quantile(bounds, counts, 0.95) == bounds[-1]


def test_sample_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.95) == 95.0

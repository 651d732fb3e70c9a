"""Metrics and JSON logs of a real cluster: 2 `fasttask serve` and 2 `fasttask worker --metrics-port` processes
on a redis-server of the test's own. Each counter, summed over the processes Prometheus would scrape, moves
by exactly the jobs run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import cluster as cluster_processes
from tests.support.cluster import Cluster, final, running, submit, wait_until
from tests.support.metrics import Samples, scrape, value
from tests.support.servers import free_port

APP = "tests.support.observability_app:app"


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    monkeypatch.setattr(cluster_processes, "APP", APP)  # Cluster serves and works on this module's app
    processes = Cluster(tmp_path)
    processes.env["FTAPI_LOG_FORMAT"] = "json"
    yield processes
    processes.close()


def scrape_all(urls: list[str]) -> list[Samples]:
    return [scrape(httpx.get(f"{url}/metrics", timeout=10).text) for url in urls]


def total(scrapes: list[Samples], name: str, **labels: str) -> float:
    return sum(value(samples, name, **labels) for samples in scrapes)


@pytest.mark.timeout(120)
def test_counters_summed_over_two_apis_and_two_workers_move_by_exactly_the_jobs_run(cluster: Cluster) -> None:
    apis = [cluster.api(), cluster.api()]
    ports = [free_port(), free_port()]
    for port in ports:
        cluster.worker("--endpoints", "/echo,/fail,/sleep", "--metrics-port", str(port))
    workers = [f"http://127.0.0.1:{port}" for port in ports]
    everyone = apis + workers
    before = scrape_all(everyone)

    echoes = [submit(apis[n % 2], "/echo", n=n)["id"] for n in range(20)]
    fails = [submit(apis[n % 2], "/fail")["id"] for n in range(5)]
    for n, job_id in enumerate(echoes + fails):
        final(apis[(n + 1) % 2], job_id)  # read through the other API process
    sleeper = submit(apis[0], "/sleep", seconds=30, steps=300)["id"]
    wait_until(lambda: running(apis[1], sleeper), 20, "the sleep to start")
    assert httpx.post(f"{apis[1]}/jobs/{sleeper}/cancel").status_code == 200
    limited = [httpx.post(f"{apis[n % 2]}/limited", json={}) for n in range(3)]  # nobody works on /limited
    assert [r.status_code for r in limited] == [202, 202, 429]
    assert httpx.post(f"{apis[0]}/echo", json={"n": "x"}).status_code == 422
    wait_until(lambda: total(scrape_all(workers), "fasttask_jobs_finished_total", endpoint="/fail", status="failed")
               >= 5, 10, "the workers' counts")  # fmt: skip
    after = scrape_all(everyone)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("fasttask_jobs_submitted_total", endpoint="/echo") == 20
    assert moved("fasttask_jobs_submitted_total", endpoint="/fail") == 5
    assert moved("fasttask_jobs_submitted_total", endpoint="/sleep") == 1
    assert moved("fasttask_jobs_submitted_total", endpoint="/limited") == 2
    assert moved("fasttask_jobs_rejected_total", endpoint="/limited", reason="queue_full") == 1
    assert moved("fasttask_jobs_rejected_total", endpoint="/echo", reason="invalid") == 1
    assert moved("fasttask_jobs_finished_total", endpoint="/echo", status="finished") == 20
    assert moved("fasttask_jobs_finished_total", endpoint="/fail", status="failed") == 5
    assert moved("fasttask_jobs_finished_total", endpoint="/sleep", status="cancelled") == 1
    assert moved("fasttask_jobs_finished_total", endpoint="/echo", status="failed") == 0
    assert moved("fasttask_job_wait_seconds_count", endpoint="/echo") == 20
    assert moved("fasttask_job_run_seconds_count", endpoint="/echo") == 20
    assert moved("fasttask_job_run_seconds_count", endpoint="/fail") == 5
    assert moved("fasttask_job_run_seconds_count", endpoint="/sleep") == 1
    # who reports what: submits and cancels in the API processes, job ends in the workers
    assert total(scrape_all(apis), "fasttask_jobs_finished_total", endpoint="/echo", status="finished") == 0
    assert total(scrape_all(workers), "fasttask_jobs_submitted_total", endpoint="/echo") == 0
    # queue gauges are cluster-wide, read from Redis by each API process
    for samples in scrape_all(apis):
        assert value(samples, "fasttask_queue_jobs", endpoint="/limited", state="queued") == 2
        assert value(samples, "fasttask_queue_limit", endpoint="/limited") == 2
        assert value(samples, "fasttask_workers", endpoint="/echo") == 2
        assert value(samples, "fasttask_workers", endpoint="/limited") == 0
    assert moved("fasttask_http_requests_total", route="/jobs/{id}/cancel", method="POST", code="200") == 1
    assert moved("fasttask_http_requests_total", route="/echo", method="POST", code="202") == 20

    # JSON logs: every line of every process parses, and the job events carry their ids
    events = set()
    for name in [path.stem for path in cluster.directory.glob("*.log") if not path.stem.startswith("redis")]:
        for line in cluster.log(name).splitlines():
            entry = json.loads(line)
            if entry["logger"] == "fasttask.jobs":
                events.add((entry["job_id"], entry["status"]))
    assert {(job_id, "finished") for job_id in echoes} <= events
    assert {(job_id, "failed") for job_id in fails} <= events
    assert {(sleeper, "running"), (sleeper, "cancelled")} <= events

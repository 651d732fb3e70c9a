"""Webhooks of the Redis queue with real processes: pending deliveries outlive every API and worker process,
and API processes that share a Redis send each delivery once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.cluster import Cluster, final, wait_until
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def webhook_cluster(cluster: Cluster) -> Cluster:
    # loopback receivers are private addresses; retries come quickly and many times
    cluster.env.update(FTAPI_ALLOW_PRIVATE_URLS="1", FTAPI_WEBHOOK_RETRY_S=",".join(["0.2"] * 50))
    return cluster


def submit(url: str, body: dict[str, Any]) -> str:
    response = httpx.post(f"{url}/echo", json=body, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def backlog(cluster: Cluster) -> int:
    with cluster.client() as connection:
        return int(connection.zcard("fasttask:webhook:watches")) + int(connection.zcard("fasttask:webhook:due"))


def test_a_pending_delivery_survives_a_restart_of_every_process(cluster: Cluster, receiver: Receiver) -> None:
    receiver.then = 500
    webhook_cluster(cluster)
    api = cluster.api()
    cluster.worker()
    job_id = submit(api, {"input": {"n": 4}, "webhook": receiver.url})
    assert final(api, job_id)["status"] == "finished"
    receiver.wait_for(2)  # failing, and being retried
    for process in cluster.processes:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    receiver.then = 200
    api = cluster.api()
    cluster.worker()
    wait_until(lambda: httpx.get(f"{api}/jobs/{job_id}").json()["webhook"]["delivered"], 120, "the delivery")
    received = receiver.received
    assert len({item.headers["webhook-id"] for item in received}) == 1, "one delivery, retried across the restart"
    assert {item.event["type"] for item in received} == {"job.completed"}
    assert received[-1].event["data"]["result"] == 8


def test_api_processes_sharing_a_redis_send_each_delivery_once(cluster: Cluster, receiver: Receiver) -> None:
    webhook_cluster(cluster)
    apis = [cluster.api(), cluster.api(), cluster.api()]
    cluster.worker()
    events = ["start", "completed"]
    body = {"webhook": receiver.url, "webhook_events_filter": events}
    jobs = [submit(apis[n % 3], {"input": {"n": n}, **body}) for n in range(30)]
    for job_id in jobs:
        final(apis[0], job_id)
    wait_until(lambda: backlog(cluster) == 0, 60, "every delivery sent")
    received = receiver.received
    sent = sorted((item.event["data"]["id"], item.event["type"]) for item in received)
    assert sent == sorted((job_id, f"job.{event}") for job_id in jobs for event in events)
    assert len({item.headers["webhook-id"] for item in received}) == len(received) == 60


def test_an_api_process_that_stops_mid_attempt_leaves_the_delivery_due(cluster: Cluster, receiver: Receiver) -> None:
    receiver.delay_s = 5  # the attempt is under way when the process is told to stop
    webhook_cluster(cluster)
    api = cluster.api()
    cluster.worker()
    submit(api, {"input": {"n": 1}, "webhook": receiver.url})
    delivery_id = receiver.wait_for(1)[0].headers["webhook-id"]
    process = cluster.processes[0]
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    with cluster.client() as connection:
        due = connection.zscore("fasttask:webhook:due", delivery_id)
    assert due is not None and due <= time.time(), "due again at once, not when the claim would run out"

"""Idempotency-Keys on the Redis queue with real `fasttask serve` processes: one job per key however many API
processes race on it, and keys that outlive an API restart."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fasttask.redis.keys import idempotency_key
from fasttask.tasks import DEFAULT_RESULT_TTL_S
from tests.support.cluster import Cluster

pytestmark = pytest.mark.timeout(120)

QUEUE = "rq:queue:fasttask.echo"


def test_two_api_processes_racing_on_one_key_make_one_job(cluster: Cluster) -> None:
    urls = [cluster.api(), cluster.api()]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                client.post(f"{urls[i % 2]}/echo", json={"n": 7}, headers={"Idempotency-Key": "race"})
                for i in range(40)
            ]
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    assert {response.status_code for response in answers} <= {202, 409}
    made = [response for response in answers if response.status_code == 202]
    assert made
    assert len({response.json()["id"] for response in made}) == 1
    assert sum("idempotent-replayed" not in response.headers for response in made) == 1
    with cluster.client() as connection:
        assert connection.llen(QUEUE) == 1  # no worker runs: every job made would still be queued
    # once things settle, every process answers with that job
    for url in urls:
        again = httpx.post(f"{url}/echo", json={"n": 7}, headers={"Idempotency-Key": "race"})
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == made[0].json()["id"]


def test_a_key_is_replayed_after_an_api_restart(cluster: Cluster) -> None:
    first_api = cluster.api()
    first = httpx.post(f"{first_api}/echo", json={"n": 3}, headers={"Idempotency-Key": "restart"})
    assert first.status_code == 202
    for process in cluster.processes:
        process.kill()
        process.wait(10)
    second_api = cluster.api()
    again = httpx.post(f"{second_api}/echo", json={"n": 3}, headers={"Idempotency-Key": "restart"})
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = httpx.post(f"{second_api}/echo", json={"n": 4}, headers={"Idempotency-Key": "restart"})
    assert other.status_code == 422
    with cluster.client() as connection:
        assert connection.llen(QUEUE) == 1
        (name,) = connection.keys("fasttask:idem:*")
        assert connection.pttl(name) > DEFAULT_RESULT_TTL_S * 1000  # remembered at least as long as the job


def test_a_key_another_process_is_still_handling_is_409_there_too(cluster: Cluster) -> None:
    api = cluster.api()
    with cluster.client() as connection:
        # what HOLD_KEY leaves while a request with files is still uploading to another API process
        connection.set(idempotency_key("/echo", "elsewhere"), "~", px=60_000)
        response = httpx.post(f"{api}/echo", json={"n": 1}, headers={"Idempotency-Key": "elsewhere"})
        assert response.status_code == 409
        assert response.headers["retry-after"] == "1"
        assert connection.llen(QUEUE) == 0
        assert connection.get(idempotency_key("/echo", "elsewhere")) == b"~"  # the other request's mark stays

"""Webhooks on both queues, against a real receiver on loopback: the envelope, retries, 410, the address
guard, Standard Webhooks signatures (checked with the reference implementation), the events filter."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks.webhooks import Webhook

from fasttask import Client, FastTaskAPI, JobProgress, fetch
from fasttask.webhooks import Delivery, Watch, deliveries_for, send
from tests.support.metrics import scrape, value
from tests.support.receiver import Receiver
from tests.support.servers import LiveServer

SECRETS = (
    "whsec_" + base64.b64encode(b"old secret of 24 bytes!!").decode(),
    "whsec_" + base64.b64encode(b"new").decode(),
)
FAST_RETRIES = (0.05, 0.05)

Serve = Callable[..., LiveServer]


def make_app(**settings: Any) -> FastTaskAPI:
    app = FastTaskAPI(title="webhooks", **settings)

    @app.task_endpoint("/add")
    def add(a: int, b: int = 1) -> int:
        return a + b

    @app.task_endpoint("/parts")
    def parts(job_progress: JobProgress, n: int = 3, steps: int = 0) -> Iterator[str]:
        for step in range(steps):  # a tight stream of progress reports, for the once-a-second rule
            job_progress.set_status(step / steps, f"step {step}")
            time.sleep(0.05)
        for i in range(n):
            yield f"part {i}"

    return app


@pytest.fixture
def serve(
    live_server: Callable[[FastTaskAPI], LiveServer],
    queue_settings: dict[str, Any],
    with_workers: Callable[[FastTaskAPI], FastTaskAPI],
) -> Serve:
    def start(**settings: Any) -> LiveServer:
        options = {"allow_private_urls": True, "webhook_retry_s": FAST_RETRIES, **queue_settings, **settings}
        return live_server(with_workers(make_app(**options)))

    return start


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def submit(server: LiveServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def job_json(server: LiveServer, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{server.url}/jobs/{job_id}", params={"wait": 10}, timeout=30).json()
    return found


def settled(server: LiveServer, queue_settings: dict[str, Any]) -> None:
    """Wait until the service has nothing left to watch or send."""

    def backlog() -> int:
        if queue_settings["queue"] == "redis":
            with redis.Redis.from_url(queue_settings["redis_url"]) as connection:
                return int(connection.zcard("fasttask:webhook:watches")) + int(connection.zcard("fasttask:webhook:due"))
        store = server.app.fastapi.state.broker.webhooks.store
        return int(asyncio.run(store.backlog()))  # the memory store's dicts, read without its loop

    deadline = time.monotonic() + 60
    while backlog():
        assert time.monotonic() < deadline, "webhook deliveries still pending"
        time.sleep(0.05)


def test_a_receiver_failing_twice_gets_one_delivery_in_three_attempts(serve: Serve) -> None:
    receiver = Receiver([500, 503])
    try:
        server = serve(webhook_secret=SECRETS)
        job = submit(server, "/add", {"input": {"a": 2}, "webhook": receiver.url})
        assert job["webhook"] == {"attempts": 0, "last_status": None, "delivered": False}
        attempts = receiver.wait_for(3)
        assert len({item.headers["webhook-id"] for item in attempts}) == 1, "one webhook-id on every retry"
        event = attempts[-1].event
        assert event["type"] == "job.completed"
        assert event["data"]["id"] == job["id"] and event["data"]["result"] == 3
        datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        for secret in SECRETS:  # either secret verifies: the old one while receivers move to the new
            Webhook(secret).verify(attempts[-1].body, attempts[-1].headers)
        deadline = time.monotonic() + 30
        while not job_json(server, job["id"])["webhook"]["delivered"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job_json(server, job["id"])["webhook"] == {"attempts": 3, "last_status": 200, "delivered": True}
        samples = scrape(httpx.get(server.url + "/metrics").text)
        name = "fasttask_webhook_deliveries_total"
        assert value(samples, name, endpoint="/add", outcome="retried") == 2
        assert value(samples, name, endpoint="/add", outcome="delivered") == 1
    finally:
        receiver.close()


def test_a_410_stops_the_jobs_deliveries(serve: Serve, receiver: Receiver, queue_settings: dict[str, Any]) -> None:
    receiver.then = 410
    server = serve()
    body = {"input": {"a": 1}, "webhook": receiver.url, "webhook_events_filter": ["start", "completed"]}
    job = submit(server, "/add", body)
    assert job_json(server, job["id"])["status"] == "finished"
    settled(server, queue_settings)
    assert [event["type"] for event in receiver.events()] == ["job.start"], "nothing after the 410"
    samples = scrape(httpx.get(server.url + "/metrics").text)
    assert value(samples, "fasttask_webhook_deliveries_total", endpoint="/add", outcome="gave_up") == 1
    assert job_json(server, job["id"])["webhook"] == {"attempts": 0, "last_status": None, "delivered": False}


def test_completed_waits_for_start_and_the_filter_picks_events(
    serve: Serve, receiver: Receiver, queue_settings: dict[str, Any]
) -> None:
    receiver.by_type = {"job.start": [500]}  # the start is retried once; completed must still come after it
    server = serve()
    body = {"input": {"n": 4}, "webhook": receiver.url, "webhook_events_filter": ["start", "output", "completed"]}
    job = submit(server, "/parts", body)
    job_json(server, job["id"])
    settled(server, queue_settings)
    events = receiver.events()
    kinds = [event["type"] for event in events]
    assert kinds.count("job.start") == 2 and kinds.count("job.completed") == 1, kinds
    last_start = len(kinds) - 1 - kinds[::-1].index("job.start")
    assert kinds.index("job.completed") > last_start and "job.progress" not in kinds, kinds
    outputs = [part for event in events if event["type"] == "job.output" for part in event["data"]["outputs"]]
    assert sorted(outputs) == [f"part {i}" for i in range(4)]
    completed = next(event for event in events if event["type"] == "job.completed")
    assert completed["data"]["status"] == "finished" and "outputs" not in completed["data"]


def test_progress_is_delivered_at_most_once_a_second(
    serve: Serve, receiver: Receiver, queue_settings: dict[str, Any]
) -> None:
    server = serve()
    body = {"input": {"n": 0, "steps": 50}, "webhook": receiver.url, "webhook_events_filter": ["progress"]}
    job = submit(server, "/parts", body)
    job_json(server, job["id"])
    settled(server, queue_settings)
    moments = [datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")) for event in receiver.events()]
    assert moments and all(event["type"] == "job.progress" for event in receiver.events())
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(moments)]
    assert all(gap >= 0.99 for gap in gaps), gaps


def test_the_client_sends_the_envelope(serve: Serve, receiver: Receiver, queue_settings: dict[str, Any]) -> None:
    server = serve()
    with Client(server.url) as client:
        job = client.submit("/add", a=2, webhook=receiver.url, webhook_events=["start", "completed"])
        assert job.result() == 3
    settled(server, queue_settings)
    assert sorted(event["type"] for event in receiver.events()) == ["job.completed", "job.start"]


def test_a_keyed_submit_keeps_its_webhook_out_of_the_comparison(
    serve: Serve, receiver: Receiver, queue_settings: dict[str, Any]
) -> None:
    server = serve()
    headers = {"Idempotency-Key": "order-7"}
    first = httpx.post(
        server.url + "/add", json={"input": {"a": 4}, "webhook": receiver.url}, headers=headers, timeout=30
    )
    assert first.status_code == 202 and first.json()["webhook"] is not None, first.text
    again = httpx.post(server.url + "/add", json={"input": {"a": 4}}, headers=headers, timeout=30)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true", again.text
    assert again.json()["id"] == first.json()["id"]
    assert job_json(server, first.json()["id"])["result"] == 5
    settled(server, queue_settings)
    assert [event["type"] for event in receiver.events()] == ["job.completed"]


def test_without_the_envelope_nothing_changes(serve: Serve) -> None:
    server = serve()
    job = submit(server, "/add", {"a": 1})
    assert "webhook" not in job and job_json(server, job["id"])["result"] == 2
    plain = submit(server, "/add", {"input": {"a": 5}})  # an envelope without webhook: just the parameters
    assert job_json(server, plain["id"])["result"] == 6 and "webhook" not in plain


@pytest.mark.parametrize(
    "fields",
    [
        {"webhook": 5},
        {"webhook": "http://127.0.0.1/hook", "webhook_events_filter": ["finished"]},
        {"webhook": "ftp://127.0.0.1/hook"},
    ],
)
def test_bad_webhook_fields_are_422(serve: Serve, fields: dict[str, Any]) -> None:
    server = serve()
    response = httpx.post(server.url + "/add", json={"input": {"a": 1}, **fields})
    assert response.status_code == 422, response.text


def test_a_private_webhook_url_is_refused_and_nothing_is_sent(
    serve: Serve, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(allow_private_urls=False)
    response = httpx.post(server.url + "/add", json={"input": {"a": 1}, "webhook": receiver.url})
    assert response.status_code == 422 and "webhook" in response.text

    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # stands in for DNS: were the guard broken, the receiver here would get it

    monkeypatch.setattr(fetch, "resolve", loopback)
    port = receiver.url.split(":")[2].split("/")[0]
    named = httpx.post(server.url + "/add", json={"input": {"a": 1}, "webhook": f"http://hooks.example.com:{port}/"})
    assert named.status_code == 422 and "loopback" in named.text
    assert receiver.received == []


def test_the_sender_checks_the_address_again(receiver: Receiver) -> None:
    delivery = Delivery("msg_1", "job", "/add", receiver.url, "{}")

    async def attempt(allow_private: bool) -> Any:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await send(client, delivery, SECRETS, allow_private)

    refused = asyncio.run(attempt(False))
    assert refused.status is None and not refused.delivered and receiver.received == []
    assert asyncio.run(attempt(True)).delivered and len(receiver.received) == 1


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.answers = [302]
    delivery = Delivery("msg_2", "job", "/add", receiver.url, "{}")

    async def attempt() -> Any:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await send(client, delivery, (), True)

    outcome = asyncio.run(attempt())
    assert outcome.status == 302 and not outcome.delivered
    assert [item.path for item in receiver.received] == ["/hook"]


def job_state(status: str, started: bool = True, progress: float = 0.0) -> dict[str, Any]:
    return {
        "id": "j1",
        "endpoint": "/add",
        "status": status,
        "progress": progress,
        "message": None,
        "started_at": "2026-12-05T00:00:00.000000Z" if started else None,
    }


def test_a_job_cancelled_while_queued_gets_completed_only() -> None:
    watch = Watch("http://hooks.example.com/", ["start", "progress", "completed"], 0.0)
    after, made = deliveries_for(watch, job_state("cancelled", started=False), [], 10.0)
    assert after is None and [json.loads(d.body)["type"] for d in made] == ["job.completed"]
    assert made[0].after is None and made[0].completed


def test_completed_names_the_start_it_waits_for() -> None:
    watch = Watch("http://hooks.example.com/", ["start", "completed"], 0.0)
    after, made = deliveries_for(watch, job_state("finished"), [], 10.0)
    start, completed = made
    assert after is None and json.loads(start.body)["type"] == "job.start" and completed.after == start.id


def test_progress_waits_a_second_between_deliveries() -> None:
    watch = Watch("http://hooks.example.com/", ["progress"], 0.0)
    watch, first = deliveries_for(watch, job_state("running", progress=0.1), [], 100.0)
    assert watch is not None and len(first) == 1
    watch, second = deliveries_for(watch, job_state("running", progress=0.2), [], 100.5)
    assert watch is not None and second == [], "within the second: held back"
    watch, third = deliveries_for(watch, job_state("running", progress=0.2), [], 101.0)
    assert watch is not None and json.loads(third[0].body)["data"]["progress"] == 0.2
    assert deliveries_for(watch, job_state("running", progress=0.2), [], 105.0)[1] == [], "nothing new"

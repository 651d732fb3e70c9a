"""The client's submits are safe to send again (an Idempotency-Key on each), reads and waits survive lost
connections, and `call` waits in its submit (`Prefer: wait`): against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fasttask import FastTaskAPI
from fasttask.client import AsyncClient, Client, ConnectionFailed
from tests.support.apps import Probe, make_app
from tests.support.client_app import Recorder
from tests.support.servers import DroppingProxy, LiveServer, free_port

StartServer = Callable[[FastTaskAPI], LiveServer]


@pytest.fixture
def probe() -> Probe:
    probe = Probe()
    probe.release.set()
    return probe


def serve(probe: Probe, fail_submits: int = 0) -> tuple[LiveServer, Recorder]:
    recorder = Recorder(make_app(probe), fail_submits)
    return LiveServer(recorder).__enter__(), recorder  # type: ignore[arg-type]


@pytest.fixture
def recorded(probe: Probe) -> Iterator[tuple[LiveServer, Recorder]]:
    server, recorder = serve(probe)
    yield server, recorder
    server.__exit__()


def test_every_submit_carries_its_own_key_and_a_given_key_makes_one_job(
    recorded: tuple[LiveServer, Recorder],
) -> None:
    server, recorder = recorded
    with Client(server.url) as client:
        first = client.submit("/make_fries", fries_name="a")
        second = client.submit("/make_fries", fries_name="a")
        assert first.id != second.id
        keys = [headers["idempotency-key"] for headers in recorder.submits()]
        assert len(set(keys)) == 2
        mine = client.submit("/make_fries", idempotency_key="order-17", fries_name="b")
        again = client.submit_params("/make_fries", {"fries_name": "b"}, idempotency_key="order-17")
        assert again.id == mine.id
        assert recorder.submits()[-1]["idempotency-key"] == "order-17"


def test_a_submit_answered_with_a_5xx_is_sent_again_with_its_key_and_makes_one_job(probe: Probe) -> None:
    server, recorder = serve(probe, fail_submits=1)
    try:
        with Client(server.url) as client:
            job = client.submit("/make_fries", fries_name="retried")
            assert [job.id] == recorder.hidden_jobs  # the job the lost answer was about
            first, second = recorder.submits()
            assert first["idempotency-key"] == second["idempotency-key"]
            assert job.result(timeout=30) == "1 x retried"
    finally:
        server.__exit__()


def test_a_submit_whose_connection_broke_is_sent_again_and_makes_one_job(
    recorded: tuple[LiveServer, Recorder],
) -> None:
    server, recorder = recorded
    proxy = DroppingProxy(server.port)
    try:
        with Client(proxy.url) as client:
            proxy.drop_next()
            job = client.submit("/make_fries", fries_name="dropped")
            assert proxy.dropped == 1
            first, second = recorder.submits()
            assert first["idempotency-key"] == second["idempotency-key"]
            ids = {job.id}
            # the service made one job: the replay answered with it
            with Client(server.url) as direct:
                replay = direct.submit("/make_fries", idempotency_key=first["idempotency-key"], fries_name="dropped")
                ids.add(replay.id)
            assert len(ids) == 1
    finally:
        proxy.close()


def test_reads_and_waits_are_sent_again_after_a_lost_connection(recorded: tuple[LiveServer, Recorder]) -> None:
    server, _ = recorded
    proxy = DroppingProxy(server.port)
    try:
        with Client(proxy.url) as client:
            job = client.submit("/make_fries", fries_name="read")
            proxy.drop_next()
            assert job.result(timeout=30) == "1 x read"
            assert proxy.dropped == 1
    finally:
        proxy.close()


def test_a_lost_connection_is_given_up_on_after_retry_503_s() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with Client(nobody, retry_503_s=0.6) as client, pytest.raises(ConnectionFailed) as caught:
        client.job("0" * 32).status()
    assert "gave up" in str(caught.value)


def test_call_takes_one_request_for_a_short_job(recorded: tuple[LiveServer, Recorder]) -> None:
    server, recorder = recorded
    with Client(server.url) as client:
        assert client.call("/make_fries", fries_name="quick") == "1 x quick"
    ((method, path, headers),) = recorder.requests
    assert (method, path) == ("POST", "/make_fries")
    assert headers["prefer"] == "wait=60"
    assert "idempotency-key" in headers

    async def call() -> Any:
        async with AsyncClient(server.url) as client:
            return await client.call("/make_fries", fries_name="async")

    recorder.requests.clear()
    assert asyncio.run(call()) == "1 x async"
    assert [(method, path) for method, path, _ in recorder.requests] == [("POST", "/make_fries")]


def test_async_client_sends_a_lost_submit_again_with_its_key(probe: Probe) -> None:
    server, recorder = serve(probe, fail_submits=1)
    proxy = DroppingProxy(server.port)

    async def run() -> tuple[str, str]:
        async with AsyncClient(proxy.url) as client:
            first = await client.submit("/make_fries", fries_name="async")  # a 500 after the job was made
            proxy.drop_next()
            second = await client.submit("/make_fries", idempotency_key="async-key", fries_name="b")
            return first.id, second.id

    try:
        first_id, second_id = asyncio.run(run())
        assert recorder.hidden_jobs == [first_id]
        assert proxy.dropped == 1
        keys = [headers["idempotency-key"] for headers in recorder.submits()]
        assert keys[0] == keys[1] and keys[2:] == ["async-key", "async-key"]
        assert second_id
    finally:
        proxy.close()
        server.__exit__()

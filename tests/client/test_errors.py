"""The client's errors are what users catch: `except fasttask.JobNotFound` catches a client's 404, and so on,
with `status_code` kept; file results save into a folder that does not exist yet. Against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import fasttask
from fasttask import AsyncClient, Client, FastTaskAPI
from fasttask.client import APIError, ClientError, InvalidArgument
from tests.support.apps import Probe, make_app
from tests.support.client_app import PNG, Unavailable, client_app
from tests.support.servers import LiveServer

StartServer = Callable[[FastTaskAPI], LiveServer]


def assert_is(error: BaseException, kind: type[fasttask.FastTaskError], status: int) -> None:
    assert isinstance(error, kind) and isinstance(error, APIError) and isinstance(error, ClientError)
    assert isinstance(error, fasttask.FastTaskError)
    assert error.status_code == status == kind.status_code


def test_error_answers_are_the_error_classes_fasttask_exports(live_server: StartServer) -> None:
    server = live_server(make_app(max_file_mb=0.001))
    with Client(server.url) as client:
        with pytest.raises(fasttask.JobNotFound) as not_found:
            client.job("0" * 32).status()
        assert_is(not_found.value, fasttask.JobNotFound, 404)
        assert not_found.value.job_id == "0" * 32
        with pytest.raises(fasttask.InvalidInput) as invalid:
            client.submit("/make_fries", fries_name="x", amount="many")
        assert_is(invalid.value, fasttask.InvalidInput, 422)
        assert isinstance(invalid.value.detail, list)  # FastAPI's field errors, as before
        with pytest.raises(fasttask.PayloadTooLarge) as too_large:
            client.submit("/thumbnail", image=PNG * 4)
        assert_is(too_large.value, fasttask.PayloadTooLarge, 413)
    with Client(server.url) as client, pytest.raises(fasttask.JobNotFound):
        client.job("f" * 32).result(timeout=1)  # waiting on a job that is not there


def test_unauthorized_queue_full_and_unavailable(live_server: StartServer) -> None:
    with Client(live_server(make_app(api_key="k" * 20)).url) as client, pytest.raises(fasttask.Unauthorized) as denied:
        client.submit("/make_fries", fries_name="x")
    assert_is(denied.value, fasttask.Unauthorized, 401)

    probe = Probe()
    server = live_server(client_app(probe, concurrency=1))
    try:
        with Client(server.url, retry_429_s=0) as client:
            client.submit("/hold")
            assert probe.started.wait(5)
            client.submit("/hold")
            with pytest.raises(fasttask.QueueFull) as full:
                client.submit("/hold")
        assert_is(full.value, fasttask.QueueFull, 429)
        assert full.value.retry_after_s >= 1
    finally:
        probe.release.set()

    with (
        LiveServer(Unavailable(make_app(), failures=100)) as down,  # type: ignore[arg-type]
        Client(down.url, retry_503_s=0) as client,
        pytest.raises(fasttask.BackendUnavailable) as unavailable,
    ):
        client.submit("/make_fries", fries_name="x")
    assert_is(unavailable.value, fasttask.BackendUnavailable, 503)


def test_every_named_status_has_its_class_and_others_stay_plain_api_errors() -> None:
    from fasttask.client._errors import api_error

    named = {
        401: fasttask.Unauthorized,
        404: fasttask.JobNotFound,
        409: fasttask.JobAlreadyFinal,
        413: fasttask.PayloadTooLarge,
        422: fasttask.InvalidInput,
        429: fasttask.QueueFull,
        503: fasttask.BackendUnavailable,
    }
    for status, kind in named.items():
        error = api_error(status, "no", "POST", "http://127.0.0.1:1/jobs/abc/cancel")
        assert_is(error, kind, status)
        assert error.detail == "no" and str(error) == f"{status} from POST http://127.0.0.1:1/jobs/abc/cancel: no"
    for status in (400, 405, 500, 502):
        error = api_error(status, "no", "GET", "http://127.0.0.1:1/x")
        assert type(error) is APIError and error.status_code == status
        assert not isinstance(error, fasttask.FastTaskError)
    assert api_error(404, "gone", "POST", "http://h/status?job_id=a%2Fb").job_id == "a/b"  # type: ignore[attr-defined]


def test_bad_arguments_raise_client_errors_that_are_value_errors() -> None:
    for make in (lambda: Client("127.0.0.1:8000"), lambda: Client.for_runpod("e", "k", status_method="PUT")):
        with pytest.raises(InvalidArgument) as bad:
            make()
        assert isinstance(bad.value, ValueError) and isinstance(bad.value, ClientError)


def test_save_into_a_folder_that_does_not_exist(live_server: StartServer, tmp_path: Path) -> None:
    server = live_server(client_app(Probe()))
    with Client(server.url) as client:
        one = client.call("/pair", name="hello")["one"]
        saved = one.save(f"{tmp_path}/out/")
        assert saved == tmp_path / "out" / "hello.txt" and saved.read_bytes() == b"first"
        assert one.save(tmp_path / "out").read_bytes() == b"first"  # an existing folder: inside it too
        deep = one.save(tmp_path / "a" / "b" / "named.bin")  # a file path: its folders are created
        assert deep == tmp_path / "a" / "b" / "named.bin" and deep.read_bytes() == b"first"

    async def save_async() -> Path:
        async with AsyncClient(server.url) as client:
            result = await client.call("/pair", name="async")
            path: Path = await result["one"].save(f"{tmp_path}/async-out/nested/")
            return path

    saved = asyncio.run(save_async())
    assert saved == tmp_path / "async-out" / "nested" / "async.txt" and saved.read_bytes() == b"first"

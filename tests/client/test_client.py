"""fasttask's own client (Client, AsyncClient) against a real server: uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fasttask import FastTaskAPI, ImageFile, JobStatus, MediaFile
from fasttask.client import (
    APIError,
    AsyncClient,
    AsyncRemoteFile,
    Client,
    ConnectionFailed,
    JobFailed,
    RemoteFile,
    ResultTimeout,
)
from fasttask.client._core import ClientSettings, download_request
from tests.support.apps import Probe, make_app
from tests.support.client_app import PNG, Point, Unavailable, client_app
from tests.support.servers import LiveServer, free_port

StartServer = Callable[[FastTaskAPI], LiveServer]
WithWorkers = Callable[[FastTaskAPI], FastTaskAPI]


@pytest.fixture
def fries_url(live_server: StartServer) -> Iterator[str]:
    probe = Probe()
    probe.release.set()
    yield live_server(make_app(probe)).url


# -- the job handle -------------------------------------------------------------------------------------
def test_call_submits_and_returns_the_result(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    server = live_server(make_app(**queue_settings))
    with_workers(server.app)
    with Client(server.url) as client:
        assert client.call("/make_fries", fries_name="curly", amount=2) == "2 x curly"
        assert client.call("/shape", point=Point(x=2, y=3), tags=["a"], scale=2) == {"x": 4, "y": 6, "tags": ["a"]}
        thumb = client.call("/thumbnail", image=PNG)
        assert isinstance(thumb, RemoteFile)
        assert thumb.to_bytes() == PNG[::-1]


def test_submit_gives_a_handle_with_status_result_and_id(fries_url: str) -> None:
    with Client(fries_url) as client:
        job = client.submit("/make_fries", fries_name="waffle")
        assert len(job.id) == 32
        assert job.result(timeout=10) == "1 x waffle"
        state = job.status()
        assert state.status is JobStatus.FINISHED and state.is_final
        assert (state.id, state.endpoint, state.progress, state.message) == (job.id, "/make_fries", 1.0, "frying")
        assert state.created_at is not None and state.finished_at is not None
        assert state.created_at.tzinfo is not None
        again = client.job(job.id)
        assert again.status().result == "1 x waffle"
        assert again.result() == "1 x waffle"


def test_result_long_polls_in_steps_of_at_most_60_s(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(make_app(probe))
    with Client(server.url) as client:
        seen: list[httpx.Request] = []
        client._transport._http.event_hooks = {"request": [seen.append], "response": []}  # type: ignore[attr-defined]
        job = client.submit("/block", tag="p")
        threading.Timer(1.0, probe.release.set).start()
        assert job.result() == "released p"
    reads = [r for r in seen if r.url.path == f"/jobs/{job.id}"]
    # one held request that answered when the job ended: no polling loop
    assert len(reads) == 1
    assert reads[0].url.params["wait"] == "60.000"


def test_result_timeout_raises_and_leaves_the_job_running(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(make_app(probe))
    with Client(server.url) as client:
        job = client.submit("/block")
        for progress in (False, io.StringIO()):
            started = time.monotonic()
            with pytest.raises(ResultTimeout) as caught:
                job.result(timeout=0.5, progress=progress)
            assert 0.4 < time.monotonic() - started < 5
            assert isinstance(caught.value, TimeoutError)
            assert caught.value.job is not None and caught.value.job.status is JobStatus.RUNNING
        probe.release.set()
        assert job.result(timeout=10) == "released "


def test_cancel_stops_the_job_and_its_result_raises(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(make_app(probe))
    with Client(server.url) as client:
        job = client.submit("/block")
        assert probe.started.wait(5)
        assert job.cancel().status is JobStatus.CANCELLED
        assert probe.stopped.wait(5)
        with pytest.raises(JobFailed) as caught:
            job.result()
        assert caught.value.status is JobStatus.CANCELLED
        assert "cancelled" in str(caught.value)
        # cancelling a job that already ended leaves it as it is (the server's 409)
        assert client.job(job.id).cancel().status is JobStatus.CANCELLED


def test_a_failed_or_timed_out_job_raises_with_its_error(fries_url: str) -> None:
    with Client(fries_url) as client:
        with pytest.raises(JobFailed) as caught:
            client.call("/fail", message="no potatoes")
        assert (caught.value.error_type, caught.value.error_message) == ("ValueError", "no potatoes")
        assert caught.value.status is JobStatus.FAILED
        assert str(caught.value).endswith("failed: ValueError: no potatoes")
        with pytest.raises(JobFailed) as caught:
            client.call("/sleepy_async")
        assert caught.value.status is JobStatus.TIMEOUT
        assert caught.value.error_type == "TimeoutError"
        assert "timed out" in str(caught.value)


def test_stream_yields_progress_outputs_and_end(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    probe = Probe()
    server = live_server(make_app(probe, **queue_settings))
    with_workers(server.app)
    with Client(server.url) as client:
        job = client.submit("/stream_slowly", n=3)
        events = []
        for event in job.stream():
            events.append(event)
            probe.release.set()  # the task yields once someone watches
        assert [e.output for e in events if e.kind == "output"] == ["part 0", "part 1", "part 2"]
        assert events[0].kind == "progress" and events[0].job is not None
        end = events[-1]
        assert end.kind == "end" and end.job is not None
        assert end.job.result == ["part 0", "part 1", "part 2"]
        assert job.status() is end.job  # the handle remembers the final state


def test_errors_of_the_service_raise_api_errors(fries_url: str) -> None:
    with Client(fries_url) as client:
        with pytest.raises(APIError) as caught:
            client.submit("/make_fries", fries_name="x", amount="many")
        assert caught.value.status_code == 422
        assert isinstance(caught.value.detail, list)
        assert "amount: Input should be a valid integer" in str(caught.value)
        with pytest.raises(APIError) as caught:
            client.job("0" * 32).status()
        assert caught.value.status_code == 404
        with pytest.raises(APIError) as caught:
            client.submit("/no_such_task")
        assert caught.value.status_code in (404, 405)
    with pytest.raises(ConnectionFailed), Client(f"http://127.0.0.1:{free_port()}") as client:
        client.call("/make_fries", fries_name="x")
    with pytest.raises(ValueError, match="base_url"):
        Client("127.0.0.1:8000")


def test_the_api_key_goes_along_and_file_downloads_are_authenticated(live_server: StartServer) -> None:
    server = live_server(make_app(api_key="s3cret"))
    with Client(server.url) as client, pytest.raises(APIError) as caught:
        client.submit("/make_fries", fries_name="x")
    assert caught.value.status_code == 401
    with Client(server.url, api_key="s3cret") as client:
        thumb = client.call("/thumbnail", image=PNG)
        assert thumb.to_bytes() == PNG[::-1]


def test_the_api_key_never_goes_to_another_host() -> None:
    settings = ClientSettings("http://127.0.0.1:8000", api_key="s3cret")
    with httpx.Client(**settings.http_options()) as http:
        for url, sent in (
            ("/jobs/1/files/0", True),
            ("http://127.0.0.1:8000/jobs/1/files/0", True),
            ("https://bucket.example/object?X-Amz-Signature=1", False),
            ("http://127.0.0.1:9000/object", False),
        ):
            request = download_request(url, settings).build(http, contextlib.ExitStack())
            assert ("authorization" in request.headers) is sent, url


# -- files both ways ------------------------------------------------------------------------------------
def test_files_go_up_as_multipart_in_every_form(live_server: StartServer, tmp_path: Path) -> None:
    server = live_server(client_app(Probe()))
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    expected = {"point": {"x": 3, "y": 0}, "tags": ["a", "b"], "scale": 0.5, "flag": True}
    media = ImageFile.from_bytes(PNG, file_name="kitten.png")
    with Client(server.url) as client, path.open("rb") as handle, contextlib.closing(media):
        for image, name, content_type in (
            (path, "cat.png", "image/png"),
            (handle, "cat.png", "image/png"),
            (PNG, "image", "application/octet-stream"),
            (io.BytesIO(PNG), "image", "application/octet-stream"),
            (media, "kitten.png", "image/png"),
        ):
            result = client.call("/annotate", image=image, point=Point(x=3), tags=["a", "b"], scale=0.5, flag=True)
            assert result == {"file": [name, content_type, True], **expected}, image


def test_a_list_of_files_goes_up_as_repeated_parts(fries_url: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"aaa")
    media = MediaFile.from_bytes(b"bb", "b.bin")
    with Client(fries_url) as client, contextlib.closing(media):
        assert client.call("/sizes", files=[tmp_path / "a.txt", media]) == {"a.txt": 3, "b.bin": 2}


def test_file_results_download_lazily(live_server: StartServer, tmp_path: Path) -> None:
    server = live_server(client_app(Probe()))
    with Client(server.url) as client:
        seen: list[httpx.Request] = []
        client._transport._http.event_hooks = {"request": [seen.append], "response": []}  # type: ignore[attr-defined]
        result = client.call("/pair", name="hello")
        assert not [r for r in seen if "/files/" in r.url.path]  # nothing downloaded yet
        one, (escaped,) = result["one"], result["more"]
        assert isinstance(one, RemoteFile) and result["n"] == 2
        assert (one.file_name, one.content_type, one.size) == ("hello.txt", "text/plain", 5)
        assert one.url.startswith("/jobs/")
        assert one.to_bytes() == b"first"
        saved = one.save(tmp_path)
        assert saved == tmp_path / "hello.txt" and saved.read_bytes() == b"first"
        assert one.save(tmp_path / "renamed.bin").read_bytes() == b"first"
        # a file name never reaches outside the target directory
        assert escaped.save(tmp_path) == tmp_path / "escape.txt"
        assert [r.url.path for r in seen if "/files/" in r.url.path] == [one.url] * 3 + [escaped.url]
        assert one.to_dict() == {"file_name": "hello.txt", "content_type": "text/plain", "size": 5, "url": one.url}


# -- retries --------------------------------------------------------------------------------------------
def test_a_full_queue_is_retried_after_retry_after_until_it_frees(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(client_app(probe, concurrency=1))
    with Client(server.url, retry_429_s=20) as client:
        client.submit("/hold")  # runs
        assert probe.started.wait(5)
        client.submit("/hold")  # waits: the queue (queue_size=1) is full now
        threading.Timer(1.5, probe.release.set).start()
        started = time.monotonic()
        job = client.submit("/hold")  # refused with 429 until the queue frees
        assert time.monotonic() - started > 1.0
        assert job.result(timeout=10) == -1


def test_a_full_queue_is_given_up_on_after_the_client_limit(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(client_app(probe, concurrency=1))
    try:
        with Client(server.url, retry_429_s=1.5) as client:
            client.submit("/hold")
            client.submit("/hold")
            started = time.monotonic()
            with pytest.raises(APIError) as caught:
                client.submit("/hold")
            assert 0.9 < time.monotonic() - started < 5  # one retry after Retry-After: 1, then the limit
            assert caught.value.status_code == 429
            assert "full" in str(caught.value) and "gave up after retrying" in str(caught.value)
        with Client(server.url, retry_429_s=0) as client, pytest.raises(APIError):
            client.submit("/hold")
    finally:
        probe.release.set()


def test_503_is_retried_with_backoff_within_the_limit() -> None:
    flaky = Unavailable(make_app(), failures=3)
    with LiveServer(flaky) as server, Client(server.url, retry_503_s=10) as client:  # type: ignore[arg-type]
        # an upload is sent whole on every attempt
        assert client.call("/thumbnail", image=io.BytesIO(PNG)).to_bytes() == PNG[::-1]
        first, second, third = flaky.refused_at
        # backoff doubles: 0.5 s, then 1 s (then 2 s before the attempt that succeeds)
        assert second - first > 0.45
        assert third - second > 0.95 and third - second > (second - first) * 1.5
    always = Unavailable(make_app(), failures=1000)
    with LiveServer(always) as server, Client(server.url, retry_503_s=1) as client:  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(APIError) as caught:
            client.submit("/make_fries", fries_name="x")
        assert caught.value.status_code == 503 and "gave up" in str(caught.value)
        assert time.monotonic() - started < 3


# -- progress bars and batches ------------------------------------------------------------------------------
def test_progress_bar_shows_the_job_progress_and_message(live_server: StartServer) -> None:
    server = live_server(client_app(Probe()))
    with Client(server.url) as client:
        out = io.StringIO()
        assert client.call("/steps", progress=out, n=3) == "stepped"
        drawn = out.getvalue()
        assert drawn.startswith("\r/steps:")
        assert "step 1" in drawn and "step 2" in drawn and "step 3" in drawn
        assert " 33%|" in drawn and " 67%|" in drawn and "100%|" in drawn
        assert drawn.endswith("\n")  # the bar was closed
        failed = io.StringIO()
        with pytest.raises(JobFailed):
            client.call("/square", progress=failed, value=-2)
        assert "failed: ValueError: negative: -2" in failed.getvalue()


def test_map_runs_a_batch_with_one_bar_and_results_in_order(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(client_app(probe, concurrency=8))
    with Client(server.url) as client:
        out = io.StringIO()
        values = [7, 1, 5, 3, 2, 8, 4, 6]
        assert client.map("/square", [{"value": v} for v in values], concurrency=3, progress=out) == [
            v * v for v in values
        ]
        assert max(int(call.split()[1]) for call in probe.calls) <= 3
        drawn = out.getvalue()
        assert "/square" in drawn and "8/8" in drawn and drawn.count("\n") == 1
        assert client.map("/square", [], progress=False) == []


def test_map_raises_the_first_failure_and_cancels_the_jobs_in_flight(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(client_app(probe, concurrency=4))
    with Client(server.url) as client:
        mixed = client.map("/square", [{"value": 2}, {"value": -1}], progress=False, return_exceptions=True)
        assert mixed[0] == 4 and isinstance(mixed[1], JobFailed) and mixed[1].error_message == "negative: -1"
        started = time.monotonic()
        with pytest.raises(JobFailed, match="negative: -1"):
            # the first job holds until it is cancelled: the failure of the second one must do that
            client.map("/square", [{"value": 0}, {"value": -1, "pause": 0.3}], progress=False)
        assert probe.stopped.wait(5), "the job still running was not cancelled"
        assert time.monotonic() - started < 10


# -- the async twin -------------------------------------------------------------------------------------
def test_async_client_does_what_the_client_does(live_server: StartServer, tmp_path: Path) -> None:
    probe = Probe()
    server = live_server(make_app(probe))
    steps = live_server(client_app(Probe(), concurrency=8))

    async def scenario() -> None:
        async with AsyncClient(server.url) as client:
            assert await client.call("/make_fries", fries_name="async") == "1 x async"
            job = await client.submit("/block", tag="a")
            assert (await job.status()).status in (JobStatus.QUEUED, JobStatus.RUNNING)
            with pytest.raises(ResultTimeout):
                await job.result(timeout=0.3)
            with pytest.raises(ResultTimeout):
                await job.result(timeout=0.3, progress=io.StringIO())
            assert (await job.cancel()).status is JobStatus.CANCELLED
            with pytest.raises(JobFailed):
                await client.job(job.id).result()
            with pytest.raises(JobFailed) as caught:
                await client.call("/fail")
            assert caught.value.error_type == "ValueError"
            with pytest.raises(APIError) as api_error:
                await client.job("nope").status()
            assert api_error.value.status_code == 404

            probe.release.clear()
            streaming = await client.submit("/stream_slowly", n=2)
            outputs = []
            async for event in streaming.stream():
                probe.release.set()
                if event.kind == "output":
                    outputs.append(event.output)
            assert outputs == ["part 0", "part 1"]

            thumb = await client.call("/thumbnail", image=tmp_path.joinpath("a.png"))
            assert isinstance(thumb, AsyncRemoteFile)
            assert await thumb.to_bytes() == PNG[::-1]
            assert (await thumb.save(tmp_path)).name == "reversed-a.png"
        async with AsyncClient(steps.url) as client:
            out = io.StringIO()
            assert await client.call("/steps", progress=out, n=2) == "stepped"
            assert "step 2" in out.getvalue() and "100%|" in out.getvalue()
            batch = io.StringIO()
            values = list(range(1, 11))
            assert await client.map("/square", [{"value": v} for v in values], concurrency=4, progress=batch) == [
                v * v for v in values
            ]
            assert "10/10" in batch.getvalue()
            with pytest.raises(JobFailed):
                await client.map("/square", [{"value": 1}, {"value": -1}], progress=False)
            mixed = await client.map("/square", [{"value": -1}, {"value": 3}], progress=False, return_exceptions=True)
            assert isinstance(mixed[0], JobFailed) and mixed[1] == 9

    tmp_path.joinpath("a.png").write_bytes(PNG)
    asyncio.run(scenario())


def test_async_map_cancels_the_jobs_in_flight_when_one_fails(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(client_app(probe, concurrency=4))

    async def failing_batch() -> None:
        async with AsyncClient(server.url) as client:
            with pytest.raises(JobFailed, match="negative: -1"):
                await client.map("/square", [{"value": 0}, {"value": -1, "pause": 0.3}], progress=False)

    started = time.monotonic()
    asyncio.run(failing_batch())
    assert probe.stopped.wait(5), "the job still running was not cancelled"
    assert time.monotonic() - started < 10

"""`Client.for_runpod` / `AsyncClient.for_runpod` against runpod's local test API (`--rp_serve_api`) serving a
fasttask app (tests/support/runpod_app.py) in a subprocess on loopback, guarded so that nothing leaves loopback.

What the local API can show, and so what these tests cover: /run with the task's path and parameters, the
status, result and error of a job through /status (on POST, which is what `status_method="POST"` is for),
file parameters inline as base64 and file results coming back inline or (with moto's S3 server as the
worker's bucket) by URL, downloaded without the runpod key; streaming a generator task through /stream with
FTAPI_RUNPOD_STREAM=1; `map`, `call`, `client.job(id)`, the progress bar and the AsyncClient twin.

What it cannot show: it has no /cancel (a cancel reaches POST /cancel/{id} and gets its 404), answers
/status and /stream only on POST (the hosted API's GET is checked as the request the client builds), runs a
/run job only when first read and forgets it then, never reports IN_QUEUE, CANCELLED or TIMED_OUT, nor
progress while a job runs, and never answers 429 or 503. Those hosted-API shapes are checked by reading
runpod's documented answers with the client's parsers; the retries are the fasttask client's own
(`HTTPSession._send`), tested against a real server in tests/client/test_client.py.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from fasttask import JobStatus, MediaFile
from fasttask.client import APIError, AsyncClient, AsyncRemoteFile, Client, JobFailed, RemoteFile
from fasttask.client._core import outcome
from fasttask.client._runpod_protocol import (
    RUNPOD_API_URL,
    Backoff,
    RunpodOptions,
    StreamReader,
    endpoint_url,
    parse_record,
    status_request,
    stream_request,
)
from tests.support.runpod_app import Point
from tests.support.runpod_local_api import LocalRunpodApi
from tests.support.servers import S3_CREDENTIALS

CONTENT = bytes(range(256)) * 40  # every byte value
KEY = "rp-test-key"
LocalApis = Callable[..., LocalRunpodApi]


@pytest.fixture(scope="module")
def local_api() -> Iterator[LocalApis]:
    """`local_api()` serves the app without streaming, `local_api(stream=True)` with FTAPI_RUNPOD_STREAM=1."""
    servers: dict[bool, LocalRunpodApi] = {}

    def get(stream: bool = False) -> LocalRunpodApi:
        if stream not in servers:
            servers[stream] = LocalRunpodApi({"FTAPI_RUNPOD_STREAM": "1"} if stream else {})
        return servers[stream]

    yield get
    for server in servers.values():
        server.close()


def runpod_client(api: LocalRunpodApi, **options: Any) -> Client:
    return Client.for_runpod(None, KEY, base_url=api.url, status_method="POST", **options)


def async_runpod_client(api: LocalRunpodApi) -> AsyncClient:
    return AsyncClient.for_runpod(None, KEY, base_url=api.url, status_method="POST")


def record_requests(client: Client) -> list[httpx.Request]:
    """The requests the client sends from now on (an httpx event hook on its connection pool)."""
    sent: list[httpx.Request] = []
    http: httpx.Client = client._transport._http  # type: ignore[attr-defined]
    http.event_hooks = {"request": [sent.append], "response": []}
    return sent


# -- jobs through /run and /status ----------------------------------------------------------------------
def test_submit_then_status_and_result_of_a_plain_task(local_api: LocalApis) -> None:
    api = local_api()
    with runpod_client(api) as client:
        sent = record_requests(client)
        job = client.submit("/make_fries", fries_name="cheesy", amount=2)
        assert job.id.startswith("test-"), "the job id is runpod's"
        state = job.status()  # the local API runs a /run job when it is first read
        assert state.status is JobStatus.FINISHED and state.progress == 1.0
        assert state.result == "2 x cheesy" and state.raw["status"] == "COMPLETED"
        assert job.result() == "2 x cheesy"
        assert job.result(timeout=5) == "2 x cheesy", "a final job is not read again"

        run, status = sent[0], sent[1]
        assert (run.method, run.url.path) == ("POST", "/run")
        assert httpx.Response(200, content=run.content).json() == {
            "input": {"path": "/make_fries", "fries_name": "cheesy", "amount": 2}
        }
        assert (status.method, status.url.path) == ("POST", f"/status/{job.id}")
        assert all(request.headers["Authorization"] == f"Bearer {KEY}" for request in sent)
        assert len(sent) == 2

        assert client.call("make_fries", fries_name="plain") == "1 x plain", "the leading / may be left out"
        shape = client.call("/shape", point=Point(x=2), tags=["a", "b"], scale=1.5)
        assert shape == {"x": 3.0, "y": 0.0, "tags": ["a", "b"]}, "pydantic models go up as JSON"
        later = client.submit("/make_fries", fries_name="later")
        assert client.job(later.id).result(timeout=30) == "1 x later", "a handle from the id alone"
        with pytest.raises(ValueError, match="parameter named 'path'"):
            client.submit("/make_fries", path="/shape")
    api.assert_loopback_only()


def test_a_failing_task_raises_job_failed_with_runpods_error(local_api: LocalApis) -> None:
    api = local_api()
    with runpod_client(api) as client:
        with pytest.raises(JobFailed) as failed:
            client.call("/fail", message="bang")
        assert failed.value.status is JobStatus.FAILED
        assert failed.value.error_message == "task /fail raised ValueError: bang", "runpod's error string"
        assert failed.value.error_type is None
        assert str(failed.value) == f"job {failed.value.job.id} failed: task /fail raised ValueError: bang"

        job = client.submit("/make_fries")
        state = job.wait(timeout=30)
        assert state.status is JobStatus.FAILED
        assert state.error_message == "invalid input for /make_fries: input.fries_name: Field required"
        with pytest.raises(JobFailed, match=r"input\.fries_name: Field required"):
            job.result()
        with pytest.raises(JobFailed, match="unknown path '/nope': this worker serves /make_fries"):
            client.call("/nope")
    api.assert_loopback_only()


def test_status_needs_post_on_the_local_api_and_the_error_says_so(local_api: LocalApis) -> None:
    api = local_api()
    with Client.for_runpod(None, KEY, base_url=api.url) as client:  # GET, as on runpod's hosted API
        job = client.submit("/make_fries", fries_name="x")
        with pytest.raises(APIError) as refused:
            job.status()
        assert refused.value.status_code == 405 and refused.value.method == "GET"
        assert "use status_method='POST' with it" in str(refused.value)


def test_cancel_reaches_runpods_cancel_route_which_the_local_api_lacks(local_api: LocalApis) -> None:
    api = local_api()
    with runpod_client(api) as client:
        job = client.submit("/make_fries", fries_name="x")
        with pytest.raises(APIError) as refused:
            job.cancel()
        assert (refused.value.status_code, refused.value.method) == (404, "POST")
        assert refused.value.url == f"{api.url}/cancel/{job.id}"
        assert "has no /cancel" in str(refused.value)
        assert job.result(timeout=30) == "1 x x", "the job is still there"


# -- files ------------------------------------------------------------------------------------------------
def test_files_go_up_inline_and_come_back_as_remote_files(local_api: LocalApis, tmp_path: Path) -> None:
    api = local_api()
    photo = tmp_path / "photo.png"
    photo.write_bytes(CONTENT)
    with runpod_client(api) as client:
        echoed = client.call("/echo_file", file=photo)
        assert isinstance(echoed, RemoteFile)
        assert (echoed.file_name, echoed.content_type, echoed.size) == ("photo.png", "image/png", len(CONTENT))
        assert echoed.url is None and echoed.to_dict()["content"], "inline base64, decoded when read"
        assert echoed.to_bytes() == CONTENT
        out = tmp_path / "out"
        out.mkdir()
        assert echoed.save(out).read_bytes() == CONTENT and (out / "photo.png").exists()

        assert client.call("/echo_file", file=b"raw bytes").to_bytes() == b"raw bytes"
        assert client.call("/echo_file", file=io.BytesIO(b"a stream")).to_bytes() == b"a stream"
        with MediaFile.from_bytes(b"media", "notes.txt") as upload:
            media = client.call("/echo_file", file=upload)
        assert (media.file_name, media.to_bytes()) == ("notes.txt", b"media")

        nested = client.call("/make_images", count=2)
        assert nested["count"] == 2
        assert [(image.file_name, image.to_bytes()) for image in nested["images"]] == [
            ("image-0.png", bytes([0]) * 10),
            ("image-1.png", bytes([1]) * 10),
        ]
    api.assert_loopback_only()


@pytest.fixture(scope="module")
def bucket_api(s3_endpoint: str) -> Iterator[LocalRunpodApi]:
    """The local API with moto's S3 server as the worker's bucket: file results come back as URLs."""
    bucket = f"runpod-client-{os.urandom(4).hex()}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=bucket)
    api = LocalRunpodApi({"FTAPI_S3_BUCKET": bucket, "FTAPI_S3_ENDPOINT_URL": s3_endpoint, **S3_CREDENTIALS})
    yield api
    api.close()


def test_file_results_by_url_download_without_the_runpod_key(bucket_api: LocalRunpodApi) -> None:
    with runpod_client(bucket_api) as client:
        sent = record_requests(client)
        echoed = client.call("/echo_file", file=CONTENT)
        assert isinstance(echoed, RemoteFile) and echoed.url is not None
        assert echoed.size == len(CONTENT) and not echoed.url.startswith(bucket_api.url)
        assert echoed.to_bytes() == CONTENT
        to_bucket = [request for request in sent if str(request.url) == echoed.url]
        to_api = [request for request in sent if str(request.url).startswith(bucket_api.url)]
        assert len(to_bucket) == 1 and "Authorization" not in to_bucket[0].headers
        assert to_api and all(request.headers["Authorization"] == f"Bearer {KEY}" for request in to_api)
    bucket_api.assert_loopback_only()


# -- streaming ------------------------------------------------------------------------------------------
def test_stream_a_generator_task(local_api: LocalApis) -> None:
    api = local_api(stream=True)
    with runpod_client(api) as client:
        job = client.submit("/count", n=3)
        events = list(job.stream())
        assert [event.output for event in events if event.kind == "output"] == [0, 1, 2]
        end = events[-1]
        assert end.kind == "end" and end.job is not None
        assert end.job.status is JobStatus.FINISHED and end.job.result == [0, 1, 2]
        assert job.result() == [0, 1, 2], "the handle keeps the final state the stream ended with"

        files = [event.output for event in client.submit("/file_stream", count=2).stream() if event.kind == "output"]
        assert all(isinstance(file, RemoteFile) for file in files)
        assert [(file.file_name, file.to_bytes()) for file in files] == [
            ("part-0.txt", b"part 0"),
            ("part-1.txt", b"part 1"),
        ]
        assert client.call("/acount", n=2) == [{"i": 0}, {"i": 1}]
        assert client.call("/make_fries", fries_name="x") == ["1 x x"], "with streaming every output is a list"
    api.assert_loopback_only()


# -- the rest of the handle API ---------------------------------------------------------------------------
def test_map_returns_results_in_order(local_api: LocalApis) -> None:
    api = local_api()
    with runpod_client(api) as client:
        many = [{"fries_name": f"f{i}", "amount": i} for i in range(1, 7)]
        assert client.map("/make_fries", many, concurrency=3, progress=False) == [f"{i} x f{i}" for i in range(1, 7)]
        mixed = client.map(
            "/make_fries", [{"fries_name": "a"}, {"fries_name": "b", "amount": "lots"}], return_exceptions=True
        )
        assert mixed[0] == "1 x a"
        assert isinstance(mixed[1], JobFailed) and "input.amount" in str(mixed[1])


def test_the_progress_bar_shows_the_job_to_its_end(local_api: LocalApis) -> None:
    api = local_api()
    with runpod_client(api) as client:
        bar = io.StringIO()
        assert client.call("/make_fries", progress=bar, fries_name="x") == "1 x x"
        assert "100%" in bar.getvalue()
        failed_bar = io.StringIO()
        with pytest.raises(JobFailed):
            client.submit("/fail").result(progress=failed_bar)
        assert "failed: task /fail raised ValueError: boom" in failed_bar.getvalue()


def test_the_async_client(local_api: LocalApis, tmp_path: Path) -> None:
    api, streaming = local_api(), local_api(stream=True)

    async def main() -> None:
        async with async_runpod_client(api) as client:
            job = await client.submit("/make_fries", fries_name="async", amount=3)
            assert job.id.startswith("test-")
            assert (await job.status()).status is JobStatus.FINISHED
            assert await job.result() == "3 x async"
            with pytest.raises(JobFailed, match="task /fail raised ValueError: boom"):
                await client.call("/fail")
            echoed = await client.call("/echo_file", file=CONTENT)
            assert isinstance(echoed, AsyncRemoteFile) and await echoed.to_bytes() == CONTENT
            saved = await echoed.save(tmp_path / "copy.bin")
            assert saved.read_bytes() == CONTENT
            many = [{"fries_name": str(i)} for i in range(4)]
            assert await client.map("/make_fries", many, concurrency=2, progress=False) == [
                f"1 x {i}" for i in range(4)
            ]
        async with async_runpod_client(streaming) as client:
            job = await client.submit("/count", n=2)
            events = [event async for event in job.stream()]
            assert [event.output for event in events if event.kind == "output"] == [0, 1]
            assert events[-1].kind == "end" and events[-1].job is not None
            assert events[-1].job.result == [0, 1]

    asyncio.run(main())
    api.assert_loopback_only()
    streaming.assert_loopback_only()


# -- what only the hosted API does: the client's requests, and runpod's documented answers read ------------
def test_the_hosted_api_is_read_with_get_under_the_endpoint_id() -> None:
    assert endpoint_url("abc123", RUNPOD_API_URL) == "https://api.runpod.ai/v2/abc123"
    assert endpoint_url(None, "http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    options = RunpodOptions()
    assert (status_request("j-1", options).method, status_request("j-1", options).url) == ("GET", "/status/j-1")
    assert (stream_request("j-1", options).method, stream_request("j-1", options).url) == ("GET", "/stream/j-1")
    assert RunpodOptions("post").status_method == "POST"
    with pytest.raises(ValueError, match="status_method"):
        RunpodOptions("PUT")
    with Client.for_runpod("abc123", KEY) as client:  # builds only: nothing is sent
        http: httpx.Client = client._transport._http  # type: ignore[attr-defined]
        assert str(http.base_url) == "https://api.runpod.ai/v2/abc123/"
        assert http.headers["Authorization"] == f"Bearer {KEY}"


def no_files(info: dict[str, Any]) -> Any:
    raise AssertionError(f"no file expected: {info}")


def test_runpods_statuses_map_to_fasttasks() -> None:
    """runpod's answers as its docs show them (operation-reference, job-states), read by the client."""
    queued = parse_record({"id": "j", "status": "IN_QUEUE"}, no_files, "/make_fries")
    assert (queued.status, queued.endpoint) == (JobStatus.QUEUED, "/make_fries")
    running = parse_record(
        {
            "delayTime": 2,
            "id": "j",
            "input": {"path": "/report"},
            "status": "IN_PROGRESS",
            "output": {"progress": 0.4, "message": "step 2"},  # fasttask's progress_update, as runpod shows it
        },
        no_files,
    )
    assert (running.status, running.endpoint, running.progress, running.message) == (
        JobStatus.RUNNING,
        "/report",
        0.4,
        "step 2",
    )
    done = parse_record(
        {"delayTime": 824, "executionTime": 3391, "id": "j", "output": [1], "status": "COMPLETED"}, no_files
    )
    assert (done.status, done.result, done.progress) == (JobStatus.FINISHED, [1], 1.0)
    failed = parse_record({"id": "j", "status": "FAILED", "error": "task /fail raised ValueError: boom"}, no_files)
    assert (failed.status, failed.error) == (JobStatus.FAILED, {"message": "task /fail raised ValueError: boom"})
    raised = '{"error_type": "<class \'RuntimeError\'>", "error_message": "out of memory", "error_traceback": "..."}'
    sdk_error = parse_record({"id": "j", "status": "FAILED", "error": raised}, no_files)
    assert sdk_error.error == {"type": "RuntimeError", "message": "out of memory"}, "runpod SDK's error JSON"
    assert parse_record({"id": "j", "status": "CANCELLED"}, no_files).status is JobStatus.CANCELLED
    assert parse_record({"id": "j", "status": "TIMED_OUT"}, no_files).status is JobStatus.TIMEOUT
    with pytest.raises(JobFailed, match="timed out"):
        outcome(parse_record({"id": "j", "status": "TIMED_OUT"}, no_files))


def test_streamed_answers_as_runpods_sdk_reads_them() -> None:
    """runpod's /stream gives the outputs since the last call; the SDK reads on until the status is final
    and the stream empty."""
    reader = StreamReader("j", no_files, RunpodOptions())
    kinds = [(event.kind, event.output) for event in reader.feed({"status": "IN_QUEUE", "stream": []})]
    assert kinds == [("progress", None)]
    assert [(e.kind, e.output) for e in reader.feed({"status": "IN_PROGRESS", "stream": [{"output": 0}]})] == [
        ("progress", None),
        ("output", 0),
    ]
    assert [(e.kind, e.output) for e in reader.feed({"status": "COMPLETED", "stream": [{"output": 1}]})] == [
        ("output", 1)
    ]
    assert not reader.done, "a final answer that still brought outputs is read on"
    assert reader.feed({"status": "COMPLETED", "stream": []}) == [] and reader.done
    assert not reader.needs_record
    end = reader.end(None)
    assert end.kind == "end" and end.job is not None and end.job.result == [0, 1]


def test_polls_back_off_to_a_bound() -> None:
    backoff = Backoff(2.0)
    pauses = [backoff.next() for _ in range(8)]
    assert pauses[0] == 0.25 and pauses == sorted(pauses) and max(pauses) == 2.0
    backoff.reset()
    assert backoff.next() == 0.25

"""Runpod serverless mode: the handler called directly, runpod's own job loop (its JobScaler, with the two
calls that would reach runpod's servers replaced), and runpod's local test API in a subprocess on loopback.
Nothing here leaves loopback: URL inputs point at a local http.server, the bucket is moto's S3 server, and
the local test API runs with a guard that refuses and reports any connection or name lookup beyond it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import inspect
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fasttask import ConfigError, FastTaskAPI, MissingExtra
from fasttask.runpod import files as runpod_files
from fasttask.runpod import progress as runpod_progress
from fasttask.runpod.handler import RunpodWorker
from tests.support import ROOT
from tests.support.runpod_app import NET_GUARD_MARK, Probe, make_app
from tests.support.servers import FILE_CONTENT, FileServer, free_port

APP_SCRIPT = ROOT / "tests" / "support" / "runpod_app.py"
CONTENT = bytes(range(256)) * 40  # 10,240 bytes, every byte value
MakeWorker = Callable[..., RunpodWorker]


# -- helpers -----------------------------------------------------------------------------------------
def job(job_id: str = "job-1", **job_input: Any) -> dict[str, Any]:
    return {"id": job_id, "input": job_input}


def run(worker: RunpodWorker, job_dict: dict[str, Any]) -> Any:
    return asyncio.run(worker.handle(job_dict))


async def collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


def run_stream(worker: RunpodWorker, job_dict: dict[str, Any]) -> list[Any]:
    return asyncio.run(collect(worker.handle_stream(job_dict)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No runpod platform variables, no bucket settings from the outside."""
    for name in list(os.environ):
        if name.startswith(("RUNPOD_", "BUCKET_", "FTAPI_")):
            monkeypatch.delenv(name)


@pytest.fixture
def make_worker() -> Iterator[MakeWorker]:
    workers: list[RunpodWorker] = []

    def make(probe: Probe | None = None, app: FastTaskAPI | None = None, **settings: Any) -> RunpodWorker:
        worker = RunpodWorker(app or make_app(probe, **settings))
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.close()


def import_runpod(module: str = "runpod") -> Any:
    """Import (a module of) the runpod SDK, or skip. Importing it sets the levels of the uvicorn, urllib3 and
    paramiko loggers and may configure the root logger (rp_upload calls logging.basicConfig): undo that, so
    the rest of the test session logs as before."""
    names = ("", "uvicorn", "urllib3", "paramiko")
    levels = {name: logging.getLogger(name).level for name in names}
    root_handlers = list(logging.getLogger().handlers)
    try:
        return importlib.import_module(module)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger().handlers[:] = root_handlers


@pytest.fixture
def runpod_sdk() -> Any:
    return import_runpod()


@pytest.fixture
def progress_updates(runpod_sdk: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What reaches runpod.serverless.progress_update, as if on runpod (its output URL set)."""
    sent: list[tuple[str, Any]] = []
    monkeypatch.setenv("RUNPOD_WEBHOOK_POST_OUTPUT", "https://runpod.invalid/job-done/$ID")
    monkeypatch.setattr(runpod_sdk.serverless, "progress_update", lambda job, update: sent.append((job["id"], update)))
    return sent


# -- routing and validation --------------------------------------------------------------------------
def test_routes_on_path_and_validates_like_the_http_route(make_worker: MakeWorker) -> None:
    worker = make_worker()
    assert run(worker, job(path="/make_fries", fries_name="cheesy", amount=2)) == "2 x cheesy"
    assert run(worker, job(path="/make_fries", fries_name="cheesy")) == "1 x cheesy", "a default is honoured"
    assert run(worker, job(path="/make_fries", fries_name="cheesy", amount="3")) == "3 x cheesy", "lax like JSON"
    assert run(worker, job(path="make_fries", fries_name="plain")) == "1 x plain", "the leading / may be left out"
    shape = run(worker, job(path="/shape", point={"x": 2}, scale=1.5))
    assert shape == {"x": 3.0, "y": 0.0, "tags": []}, "pydantic models and their defaults"


def test_the_only_task_endpoint_is_the_default_path(make_worker: MakeWorker) -> None:
    app = FastTaskAPI(title="one task")

    @app.task_endpoint("/upper")
    def upper(text: str, times: int = 1) -> str:
        return text.upper() * times

    worker = make_worker(app=app)
    assert run(worker, job(text="ab")) == "AB"
    assert run(worker, job(path="/upper", text="ab", times=2)) == "ABAB"
    many = make_worker()
    error = run(many, job(fries_name="x"))["error"]
    assert error.startswith("the job input has no path: say which task to run, one of /make_fries, /shape")


def test_validation_errors_fail_the_job_saying_what_is_wrong(make_worker: MakeWorker) -> None:
    worker = make_worker()
    missing = run(worker, job(path="/make_fries"))
    assert missing == {"error": "invalid input for /make_fries: input.fries_name: Field required"}
    wrong = run(worker, job(path="/make_fries", fries_name="x", amount="lots"))["error"]
    assert wrong.startswith("invalid input for /make_fries: input.amount: Input should be a valid integer")
    extra = run(worker, job(path="/make_fries", fries_name="x", colour="red"))["error"]
    assert extra == "invalid input for /make_fries: input.colour: Extra inputs are not permitted"
    nested = run(worker, job(path="/shape", point={"y": 1}))["error"]
    assert nested == "invalid input for /shape: input.point.x: Field required"
    assert run(worker, {"id": "j", "input": "just text"})["error"].startswith("the job input must be a JSON object")


def test_an_unknown_path_fails_the_job(make_worker: MakeWorker) -> None:
    error = run(make_worker(), job(path="/nope"))["error"]
    assert error.startswith("unknown path '/nope': this worker serves /make_fries, /shape, /fail, /count")
    assert run(make_worker(), job(path=7))["error"].startswith("unknown path 7")


def test_a_task_exception_fails_the_job_with_its_type_and_message(
    make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    assert run(make_worker(), job(path="/fail")) == {"error": "task /fail raised ValueError: boom"}
    assert "job job-1 /fail failed: ValueError: boom" in caplog.text, "the reason goes to the worker's log"
    (failure,) = [r for r in caplog.records if getattr(r, "job_id", None) == "job-1"]
    assert failure.levelno == logging.ERROR and failure.exc_info is not None  # with the traceback
    debug = run(make_worker(debug=True), job(path="/fail", message="bang"))["error"]
    assert debug.startswith("task /fail raised ValueError: bang\nTraceback (most recent call last):")


def test_an_app_without_task_endpoints_is_refused() -> None:
    with pytest.raises(ConfigError, match="no task endpoints"):
        RunpodWorker(FastTaskAPI(title="empty"))


def test_a_missing_sdk_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "runpod", None)
    with pytest.raises(MissingExtra, match=r"pip install 'fasttask\[runpod\]'"):
        make_app(backend="runpod").start()


# -- progress ----------------------------------------------------------------------------------------
def test_progress_reaches_runpod_as_structured_data(
    make_worker: MakeWorker, progress_updates: list[tuple[str, Any]]
) -> None:
    assert run(make_worker(), job("fries-1", path="/make_fries", fries_name="x")) == "1 x x"
    assert progress_updates == [("fries-1", {"progress": 0.5, "message": "frying"})]


def test_progress_is_throttled_and_the_latest_report_lands(
    make_worker: MakeWorker, progress_updates: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runpod_progress, "PROGRESS_INTERVAL_S", 0.2)
    worker = make_worker()
    # five reports at once, then the task works on: the first goes out, the last when the window ends
    assert run(worker, job("p-1", path="/report", steps=5, pause=0.6)) == "reported"
    assert progress_updates == [
        ("p-1", {"progress": 0.2, "message": "step 1"}),
        ("p-1", {"progress": 1.0, "message": "step 5"}),
    ]
    # reports still pending when the job ends are dropped: the job's result replaces them
    progress_updates.clear()
    assert run(worker, job("p-2", path="/report", steps=5, pause=0.0)) == "reported"
    time.sleep(0.4)
    assert progress_updates == [("p-2", {"progress": 0.2, "message": "step 1"})]


def test_progress_stays_local_off_the_platform(
    make_worker: MakeWorker, runpod_sdk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(runpod_sdk.serverless, "progress_update", lambda *args: sent.append(args))
    assert run(make_worker(), job(path="/make_fries", fries_name="x")) == "1 x x"
    assert sent == [], "without RUNPOD_WEBHOOK_POST_OUTPUT the SDK would post to an unset URL"


# -- generators and streaming ------------------------------------------------------------------------
def test_without_streaming_a_generator_task_returns_the_list_of_its_yields(make_worker: MakeWorker) -> None:
    worker = make_worker()
    handler = worker.config()["handler"]
    assert inspect.iscoroutinefunction(handler) and not inspect.isasyncgenfunction(handler)
    assert "return_aggregate_stream" not in worker.config()
    assert run(worker, job(path="/count", n=3)) == [0, 1, 2]
    assert run(worker, job(path="/acount", n=2)) == [{"i": 0}, {"i": 1}]
    assert run(worker, job(path="/count", n=0)) == []
    assert run(worker, job(path="/count", n=5, fail_at=2)) == {"error": "task /count raised RuntimeError: failed at 2"}


def test_with_streaming_the_handler_is_a_generator_and_every_output_a_list(make_worker: MakeWorker) -> None:
    worker = make_worker(runpod_stream=True)
    config = worker.config()
    assert inspect.isasyncgenfunction(config["handler"])
    assert config["return_aggregate_stream"] is True
    assert run_stream(worker, job(path="/count", n=3)) == [0, 1, 2]
    assert run_stream(worker, job(path="/count", n=0)) == []
    assert run_stream(worker, job(path="/acount", n=2)) == [{"i": 0}, {"i": 1}]
    assert run_stream(worker, job(path="/make_fries", fries_name="x")) == ["1 x x"], "a plain task: one item"
    assert run_stream(worker, job(path="/fail")) == [{"error": "task /fail raised ValueError: boom"}]
    failed_midway = run_stream(worker, job(path="/count", n=5, fail_at=2))
    assert failed_midway == [0, 1, {"error": "task /count raised RuntimeError: failed at 2"}]
    assert run_stream(worker, job(path="/nope"))[0]["error"].startswith("unknown path '/nope'")


def test_streamed_items_leave_as_they_are_yielded(make_worker: MakeWorker) -> None:
    worker = make_worker(runpod_stream=True)

    async def timed() -> list[tuple[float, Any]]:
        start = time.monotonic()
        return [(time.monotonic() - start, item) async for item in worker.handle_stream(job(path="/acount", delay=0.3))]

    received = asyncio.run(timed())
    assert [item for _, item in received] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert received[2][0] - received[0][0] >= 0.5, f"the items came together, not as yielded: {received}"


# -- concurrency, setup, timeouts --------------------------------------------------------------------
def test_async_tasks_run_concurrently_up_to_the_setting(make_worker: MakeWorker) -> None:
    assert make_worker().concurrency_modifier(1) == 1, "one job at a time by default"
    probe = Probe()
    worker = make_worker(probe, concurrency=3)
    assert worker.concurrency_modifier(1) == 3

    async def three() -> list[Any]:
        return list(await asyncio.gather(*(worker.handle(job(f"n{i}", path="/nap", seconds=0.5)) for i in range(3))))

    start = time.monotonic()
    assert asyncio.run(three()) == [0.5, 0.5, 0.5]
    assert time.monotonic() - start < 1.2
    assert probe.most_running == 3


def test_the_setup_hook_runs_once_before_the_first_job(make_worker: MakeWorker) -> None:
    probe = Probe()
    worker = make_worker(probe)
    for _ in range(3):
        run(worker, job(path="/make_fries", fries_name="x"))
    assert probe.setups == 1


def test_start_runs_the_setup_hook_then_hands_the_handler_to_runpod(
    runpod_sdk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe()
    started: list[tuple[int, dict[str, Any]]] = []
    monkeypatch.setattr(runpod_sdk.serverless, "start", lambda config: started.append((probe.setups, config)))
    make_app(probe, backend="runpod", concurrency=2).start()
    [(setups_at_start, config)] = started
    assert setups_at_start == 1, "model loading happens before runpod takes the first job"
    assert inspect.iscoroutinefunction(config["handler"])
    assert config["concurrency_modifier"](1) == 2
    monkeypatch.setenv("FTAPI_DEPLOYMENT", "serverless")  # FastTaskAPI's spelling picks runpod too
    monkeypatch.setenv("FTAPI_RUNPOD_STREAM", "1")
    make_app(probe).start()
    assert inspect.isasyncgenfunction(started[1][1]["handler"])
    assert started[1][1]["return_aggregate_stream"] is True
    assert probe.setups == 2, "once per app"
    started[0][1]["handler"].__self__.close()
    started[1][1]["handler"].__self__.close()


def test_a_task_past_its_timeout_fails_the_job(make_worker: MakeWorker) -> None:
    probe = Probe()
    worker = make_worker(probe)
    start = time.monotonic()
    assert run(worker, job(path="/slow_async")) == {"error": "task /slow_async timed out after 0.3 s"}
    assert run(worker, job(path="/slow_sync")) == {"error": "task /slow_sync timed out after 0.3 s"}
    assert time.monotonic() - start < 3
    assert probe.stopped == ["slow_async", "slow_sync"], "async code is cancelled, sync code stops at set_status"


def test_a_job_runpod_stops_stops_its_task(make_worker: MakeWorker) -> None:
    probe = Probe()
    worker = make_worker(probe, concurrency=2)

    async def stop_after(seconds: float, path: str) -> None:
        handling = asyncio.ensure_future(
            worker.handle(job(path=path, seconds=30) if path == "/nap" else job(path=path))
        )
        await asyncio.sleep(seconds)
        handling.cancel()  # what runpod's worker does when the platform stops a job
        with pytest.raises(asyncio.CancelledError):
            await handling

    asyncio.run(stop_after(0.2, "/spin"))
    deadline = time.monotonic() + 5
    while "spin" not in probe.stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert probe.stopped == ["spin"], "a thread stops at its next set_status"
    asyncio.run(stop_after(0.2, "/nap"))
    assert probe.running == 0, "async code is cancelled outright"


# -- files -------------------------------------------------------------------------------------------
def test_files_come_in_every_json_form_and_go_out_as_base64(make_worker: MakeWorker) -> None:
    worker = make_worker()
    expected = {"file_name": "photo.png", "content_type": "image/png", "content": b64(CONTENT)}
    as_dict = run(worker, job(path="/echo_file", file=expected))
    assert as_dict == expected
    data_uri = run(worker, job(path="/echo_file", file=f"data:image/png;base64,{b64(CONTENT)}"))
    assert data_uri["content_type"] == "image/png" and base64.b64decode(data_uri["content"]) == CONTENT
    plain = run(worker, job(path="/echo_file", file=b64(CONTENT)))
    assert base64.b64decode(plain["content"]) == CONTENT
    images = run(worker, job(path="/make_images", count=2))
    assert images["count"] == 2
    assert images["images"] == [
        {"file_name": f"image-{i}.png", "content_type": "image/png", "content": b64(bytes([i]) * 10)} for i in range(2)
    ]
    streamed = run_stream(make_worker(runpod_stream=True), job(path="/file_stream", count=2))
    assert [base64.b64decode(item["content"]) for item in streamed] == [b"part 0", b"part 1"]


def test_bad_and_oversized_files_fail_the_job(make_worker: MakeWorker) -> None:
    worker = make_worker(max_file_mb=0.005)  # 5,242 bytes
    bad = run(worker, job(path="/echo_file", file="not base64 !"))["error"]
    assert bad == "invalid input for /echo_file: input.file: not a base64 string or data URI"
    too_big = run(worker, job(path="/echo_file", file=b64(CONTENT)))["error"]
    assert too_big.startswith("invalid input for /echo_file: file is larger than")


def test_url_inputs_pass_the_address_guard(make_worker: MakeWorker, file_server: FileServer) -> None:
    refused = run(make_worker(), job(path="/echo_file", file=f"{file_server.url}/file.bin"))["error"]
    assert refused.startswith("invalid input for /echo_file: input.file:")
    assert "loopback" in refused
    assert file_server.requests == [], "a refused URL was fetched"


def test_url_inputs_download_when_private_addresses_are_allowed(
    make_worker: MakeWorker, file_server: FileServer
) -> None:
    worker = make_worker(allow_private_urls=True, max_file_mb=0.05)  # 52,428 bytes
    echoed = run(worker, job(path="/echo_file", file=f"{file_server.url}/file.bin"))
    assert echoed == {"file_name": "file.bin", "content_type": "application/x-test", "content": b64(FILE_CONTENT)}
    assert file_server.requests == ["/file.bin"]
    too_big = run(worker, job(path="/echo_file", file=f"{file_server.url}/big.bin"))["error"]
    assert too_big.startswith("invalid input for /echo_file: input.file: the file at") and "larger than" in too_big
    missing = run(worker, job(path="/echo_file", file=f"{file_server.url}/nothing"))["error"]
    assert "HTTP 404" in missing


# -- file results in a bucket (moto's S3 server on loopback) --------------------------------------------
def check_uploaded(result: dict[str, Any], file_name: str, content: bytes) -> None:
    assert set(result) == {"file_name", "content_type", "size", "url"}
    assert result["file_name"] == file_name
    assert result["size"] == len(content)
    download = httpx.get(result["url"])
    assert download.status_code == 200, download.text
    assert download.content == content


def test_file_results_go_to_our_bucket(make_worker: MakeWorker, s3_endpoint: str, bucket: str) -> None:
    worker = make_worker(s3_bucket=bucket, s3_endpoint_url=s3_endpoint)
    upload = {"file_name": "photo.png", "content_type": "image/png", "content": b64(CONTENT)}
    check_uploaded(run(worker, job("up-1", path="/echo_file", file=upload)), "photo.png", CONTENT)
    images = run(worker, job("up-2", path="/make_images", count=2))["images"]
    for i, image in enumerate(images):
        check_uploaded(image, f"image-{i}.png", bytes([i]) * 10)
    assert "/fasttask/expires/" in images[0]["url"], "keys carry their expiry, for the sweep"


def test_file_results_go_to_runpods_bucket_variables(
    make_worker: MakeWorker, s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # the credentials come from runpod's variables alone
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("BUCKET_NAME", bucket)
    worker = make_worker(runpod_stream=True)
    streamed = run_stream(worker, job("up-3", path="/file_stream", count=2))
    for i, item in enumerate(streamed):
        check_uploaded(item, f"part-{i}.txt", f"part {i}".encode())


def test_without_a_bucket_name_runpods_variables_leave_files_inline(
    make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "test")
    with caplog.at_level(logging.WARNING, "fasttask.runpod"):
        worker = make_worker()
    assert "BUCKET_NAME is not" in caplog.text
    assert run(worker, job(path="/echo_file", file=b64(b"abc")))["content"] == b64(b"abc")


def test_the_region_comes_from_runpods_bucket_endpoint() -> None:
    region_of = runpod_files._region_of
    assert region_of("https://s3.eu-west-3.amazonaws.com") == "eu-west-3"
    assert region_of("https://s3-us-west-2.amazonaws.com") == "us-west-2"
    assert region_of("https://my-bucket.s3.us-east-2.amazonaws.com") == "us-east-2"
    assert region_of("https://nyc3.digitaloceanspaces.com") == "nyc3"
    assert region_of("https://s3.amazonaws.com") is None
    assert region_of("http://127.0.0.1:9000") is None


# -- runpod's own job loop ---------------------------------------------------------------------------
def run_job_loop(
    worker: RunpodWorker, jobs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Feed `jobs` to runpod's JobScaler as the platform would; returns what it would send back: the final
    result of each job, and the streamed items. Only the fetch and the two POSTs to runpod are replaced."""
    rp_job = import_runpod("runpod.serverless.modules.rp_job")
    rp_scale = import_runpod("runpod.serverless.modules.rp_scale")
    results: dict[str, Any] = {}
    streamed: dict[str, list[Any]] = {item["id"]: [] for item in jobs}

    all_done = asyncio.Event()

    async def send_result(session: Any, job_data: Any, job_dict: dict[str, Any], is_stream: bool = False) -> None:
        results[job_dict["id"]] = job_data
        if len(results) == len(jobs):
            all_done.set()

    async def stream_result(session: Any, job_data: Any, job_dict: dict[str, Any]) -> None:
        streamed[job_dict["id"]].append(job_data)

    monkeypatch.setattr(rp_job, "send_result", send_result)
    monkeypatch.setattr(rp_job, "stream_result", stream_result)
    waiting = list(jobs)

    async def fetch(session: Any, wanted: int) -> list[dict[str, Any]] | None:
        taken, waiting[:] = waiting[:wanted], waiting[wanted:]
        if not taken:
            await asyncio.sleep(0.02)
        return taken or None

    async def main() -> None:
        scaler = rp_scale.JobScaler({**worker.config(), "jobs_fetcher": fetch, "jobs_fetcher_timeout": 5})
        loop_task = asyncio.create_task(scaler.run())
        await all_done.wait()
        scaler.kill_worker()
        await loop_task

    asyncio.run(main())
    return results, streamed


def test_runpods_job_loop_fails_jobs_and_runs_async_ones_concurrently(
    make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe()
    worker = make_worker(probe, concurrency=3)
    jobs = [job(f"nap-{i}", path="/nap", seconds=0.5) for i in range(3)]
    jobs += [job("fries", path="/make_fries", fries_name="x"), job("fail", path="/fail"), job("bad", path="/x")]
    start = time.monotonic()
    results, streamed = run_job_loop(worker, jobs, monkeypatch)
    assert time.monotonic() - start < 2.5
    assert probe.most_running == 3
    assert results["nap-0"] == {"output": 0.5}
    assert results["fries"] == {"output": "1 x x"}
    assert results["fail"] == {"error": "task /fail raised ValueError: boom"}, "runpod reports FAILED"
    assert results["bad"]["error"].startswith("unknown path '/x'")
    assert all(items == [] for items in streamed.values())


def test_runpods_job_loop_streams_a_generator_handler(make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = make_worker(runpod_stream=True)
    jobs = [
        job("count", path="/count", n=3),
        job("fries", path="/make_fries", fries_name="x"),
        job("midway", path="/count", n=5, fail_at=2),
    ]
    results, streamed = run_job_loop(worker, jobs, monkeypatch)
    assert streamed["count"] == [{"output": 0}, {"output": 1}, {"output": 2}]
    assert results["count"] == {"output": [0, 1, 2]}, "return_aggregate_stream: /runsync gets the list"
    assert results["fries"] == {"output": ["1 x x"]}
    assert streamed["midway"] == [{"output": 0}, {"output": 1}]
    assert results["midway"] == {"error": "task /count raised RuntimeError: failed at 2"}, "FAILED"


# -- runpod's local test API, in a subprocess on loopback ----------------------------------------------
class LocalApi:
    """`python tests/support/runpod_app.py --rp_serve_api ...` with FTAPI_BACKEND=runpod, guarded to loopback."""

    def __init__(self, stream: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="runpod-local-api-", suffix=".log", delete=False)  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "FTAPI_"))}
        env.update(
            FTAPI_BACKEND="runpod",
            FASTTASK_TEST_NET_GUARD="1",
            RUNPOD_LOG_LEVEL="INFO",
            UVICORN_LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        if stream:
            env["FTAPI_RUNPOD_STREAM"] = "1"
        command = [sys.executable, str(APP_SCRIPT), "--rp_serve_api", "--rp_api_port", str(self.port)]
        command += ["--rp_api_host", "127.0.0.1"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 40
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            assert self.process.poll() is None, f"the local API exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"the local API did not start:\n{self.output()}"
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def assert_loopback_only(self) -> None:
        assert NET_GUARD_MARK not in self.output(), self.output()

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def local_api() -> Iterator[Callable[[bool], LocalApi]]:
    servers: dict[bool, LocalApi] = {}

    def get(stream: bool) -> LocalApi:
        if stream not in servers:
            servers[stream] = LocalApi(stream)
        return servers[stream]

    yield get
    for server in servers.values():
        server.close()


def test_local_api_runsync_returns_the_output_and_failures_end_failed(local_api: Callable[[bool], LocalApi]) -> None:
    api = local_api(False)
    done = api.post("/runsync", {"input": {"path": "/make_fries", "fries_name": "cheesy", "amount": 2}})
    assert done["status"] == "COMPLETED" and done["output"] == "2 x cheesy"
    assert api.post("/runsync", {"input": {"path": "/shape", "point": {"x": 1}}})["output"] == {
        "x": 1.0,
        "y": 0.0,
        "tags": [],
    }
    assert api.post("/runsync", {"input": {"path": "/count", "n": 3}})["output"] == [0, 1, 2]
    failed = api.post("/runsync", {"input": {"path": "/fail"}})
    assert failed["status"] == "FAILED" and failed["error"] == "task /fail raised ValueError: boom"
    invalid = api.post("/runsync", {"input": {"path": "/make_fries"}})
    assert invalid["status"] == "FAILED" and "input.fries_name: Field required" in invalid["error"]
    unknown = api.post("/runsync", {"input": {"path": "/nope"}})
    assert unknown["status"] == "FAILED" and unknown["error"].startswith("unknown path '/nope'")
    upload = {"file_name": "a.bin", "content_type": "application/x-test", "content": b64(CONTENT)}
    assert api.post("/runsync", {"input": {"path": "/echo_file", "file": upload}})["output"] == upload
    queued = api.post("/run", {"input": {"path": "/make_fries", "fries_name": "later"}})
    status = api.post(f"/status/{queued['id']}")  # the local API runs a /run job when it is first read
    assert status["status"] == "COMPLETED" and status["output"] == "1 x later"
    not_streamed = api.post("/run", {"input": {"path": "/count"}})
    refused = api.post(f"/stream/{not_streamed['id']}")
    assert refused["status"] == "FAILED", "without FTAPI_RUNPOD_STREAM the handler does not stream"
    api.assert_loopback_only()


def test_local_api_streams_a_generator_task(local_api: Callable[[bool], LocalApi]) -> None:
    api = local_api(True)
    queued = api.post("/run", {"input": {"path": "/count", "n": 3}})
    streamed = api.post(f"/stream/{queued['id']}")
    assert streamed["status"] == "COMPLETED"
    assert streamed["stream"] == [{"output": 0}, {"output": 1}, {"output": 2}]
    assert api.post("/runsync", {"input": {"path": "/acount", "n": 2}})["output"] == [{"i": 0}, {"i": 1}]
    assert api.post("/runsync", {"input": {"path": "/make_fries", "fries_name": "x"}})["output"] == ["1 x x"]
    # On runpod a yielded {"error": ...} makes the job FAILED (test_runpods_job_loop_streams_a_generator_handler);
    # the local API's /runsync just collects the yields of a generator handler, so the error shows in the output.
    failed = api.post("/runsync", {"input": {"path": "/fail"}})
    assert failed.get("error") == "task /fail raised ValueError: boom" or failed["output"] == [
        {"error": "task /fail raised ValueError: boom"}
    ]
    api.assert_loopback_only()

"""Batching across jobs (contract section 6) on the embedded queue, on a real server: batch sizes, isolation
of bad inputs, cancelled jobs, wrong-length returns, progress, timeouts, metrics and the decorator's checks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from pydantic import Field

from fasttask import Batch, ConfigError, FastTaskAPI, JobProgress
from fasttask.batching import BatchRun, wait_left_s
from fasttask.runner import CallJob
from fasttask.runpod.handler import RunpodWorker
from fasttask.tasks import TaskDef
from tests.support.servers import LiveServer

StartServer = Callable[[FastTaskAPI], LiveServer]


class Model:
    """A stand-in model: records each call's inputs; some inputs are bad in known ways."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()  # lets /block return
        self.blocked = threading.Event()  # /block is running: the only slot is taken
        self.lock = threading.Lock()

    def __call__(self, text: list[str], scale: list[float]) -> list[Any]:
        with self.lock:
            self.calls.append(list(text))
        if any(t.startswith("boom") for t in text):
            raise ValueError(f"cannot embed {next(t for t in text if t.startswith('boom'))}")
        if "short" in text:
            return [{"text": t} for t in text[1:]]
        return [
            ValueError(f"bad input {t}") if t.startswith("bad") else {"text": t, "n": len(t) * s}
            for t, s in zip(text, scale, strict=True)
        ]

    @property
    def sizes(self) -> list[int]:
        return [len(call) for call in self.calls]


def batching_app(model: Model, max_size: int = 4, max_wait_ms: float = 0, **options: Any) -> FastTaskAPI:
    """One slot (concurrency 1): /block holds it while the test queues jobs, so what a batch takes is known."""
    app = FastTaskAPI(title="batching", queue="local", concurrency=1)

    @app.task_endpoint("/block")
    def block() -> str:
        model.blocked.set()
        model.release.wait(30)
        return "released"

    @app.task_endpoint("/embed", queue_size=100, batch=Batch(max_size, max_wait_ms), **options)
    def embed(job_progress: JobProgress, text: list[str], scale: list[float] = 1.0) -> list[Any]:
        job_progress.set_status(0.5, f"embedding {len(text)}")
        return model(text, scale)

    return app


def hold_slot(client: httpx.Client, model: Model) -> str:
    job_id: str = client.post("/block").json()["id"]
    assert model.blocked.wait(10)
    return job_id


def final(client: httpx.Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/jobs/{job_id}", params={"wait": 20}).json()
    assert job["status"] not in ("queued", "running"), job
    return job


def submit_all(client: httpx.Client, texts: list[str]) -> list[str]:
    ids = []
    for text in texts:
        answer = client.post("/embed", json={"text": text})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def one_batch(
    live_server: StartServer, texts: list[str], cancel: tuple[int, ...] = ()
) -> tuple[Model, list[dict[str, Any]]]:
    """Queue `texts` while the only slot is held (cancelling the jobs at `cancel`), let them run as one batch,
    and return the model and each job once final."""
    model = Model()
    server = live_server(batching_app(model))
    with server.client() as client:
        hold_slot(client, model)
        ids = submit_all(client, texts)
        for index in cancel:
            assert client.post(f"/jobs/{ids[index]}/cancel").json()["status"] == "cancelled"
        model.release.set()
        return model, [final(client, job_id) for job_id in ids]


def test_a_free_slot_takes_every_waiting_job_up_to_max_size(live_server: StartServer) -> None:
    model = Model()
    server = live_server(batching_app(model, max_size=4))
    with server.client() as client:
        blocker = hold_slot(client, model)
        texts = [f"t{i}" for i in range(10)]
        ids = submit_all(client, texts)
        model.release.set()
        jobs = [final(client, job_id) for job_id in ids]
        assert final(client, blocker)["result"] == "released"
    assert model.calls == [texts[0:4], texts[4:8], texts[8:10]]
    for text, job in zip(texts, jobs, strict=True):
        assert job["status"] == "finished"
        assert job["result"] == {"text": text, "n": 2.0}  # each job its own entry; the default per job
    assert len({job["id"] for job in jobs}) == 10


def test_a_batch_that_waits_is_joined_by_later_jobs_and_goes_when_full(live_server: StartServer) -> None:
    model = Model()
    # a lone job would wait a minute: these four go the moment the fourth arrives
    server = live_server(batching_app(model, max_size=4, max_wait_ms=60_000))
    with server.client() as client:
        ids = submit_all(client, ["a", "b", "c", "d"])
        assert [final(client, job_id)["status"] for job_id in ids] == ["finished"] * 4
    assert model.calls == [["a", "b", "c", "d"]]


def test_a_lone_job_runs_alone_once_its_wait_is_over(live_server: StartServer) -> None:
    model = Model()
    server = live_server(batching_app(model, max_size=32, max_wait_ms=50))
    with server.client() as client:
        (job_id,) = submit_all(client, ["alone"])
        assert final(client, job_id)["result"] == {"text": "alone", "n": 5.0}
    assert model.sizes == [1]


def test_an_exception_entry_fails_only_its_own_job(live_server: StartServer) -> None:
    model, (a, bad, b) = one_batch(live_server, ["a", "bad1", "b"])
    assert model.calls == [["a", "bad1", "b"]]
    assert (a["status"], b["status"]) == ("finished", "finished")
    assert bad["status"] == "failed"
    assert bad["error"]["type"] == "ValueError"
    assert bad["error"]["message"] == "bad input bad1"


def test_a_raising_call_is_isolated_down_to_the_jobs_that_make_it_raise(live_server: StartServer) -> None:
    model, jobs = one_batch(live_server, ["a", "boom1", "b", "c"])
    # the whole batch raised; its halves: [a, boom1] raised again, [a] and [boom1] alone, then [b, c]
    assert model.calls == [["a", "boom1", "b", "c"], ["a", "boom1"], ["a"], ["boom1"], ["b", "c"]]
    assert [job["status"] for job in jobs] == ["finished", "failed", "finished", "finished"]
    assert jobs[1]["error"] == {"type": "ValueError", "message": "cannot embed boom1"}
    assert [job["result"] for job in jobs if job["status"] == "finished"] == [
        {"text": t, "n": 1.0} for t in ("a", "b", "c")
    ]


def test_a_job_cancelled_while_it_waits_never_reaches_the_function(live_server: StartServer) -> None:
    model, jobs = one_batch(live_server, ["a", "gone", "b"], cancel=(1,))
    assert model.calls == [["a", "b"]]
    assert [job["status"] for job in jobs] == ["finished", "cancelled", "finished"]


def test_a_return_of_the_wrong_length_fails_every_job_of_the_call(live_server: StartServer) -> None:
    model, jobs = one_batch(live_server, ["a", "short", "b"])
    assert model.sizes == [3]  # no re-runs: the call did not raise
    for job in jobs:
        assert job["status"] == "failed"
        assert job["error"]["type"] == "TypeError"
        assert "ran 3 jobs in one call and returned 2 entries" in job["error"]["message"]


def test_progress_reaches_every_job_and_a_timeout_ends_each_job(live_server: StartServer) -> None:
    stop_seen = threading.Event()
    app = FastTaskAPI(title="batching", queue="local", concurrency=1)

    @app.task_endpoint("/slow", batch=Batch(4, 60_000), timeout=1)
    def slow(job_progress: JobProgress, n: list[int]) -> list[int]:
        while True:  # until the timeout stops every job of the batch: set_status raises then
            try:
                job_progress.set_status(0.25, f"working on {len(n)}")
            except Exception:
                stop_seen.set()
                raise
            time.sleep(0.01)

    server = live_server(app)
    with server.client() as client:
        ids = [client.post("/slow", json={"n": i}).json()["id"] for i in range(4)]
        jobs = [final(client, job_id) for job_id in ids]
    for job in jobs:
        assert job["status"] == "timeout"
        assert job["progress"] == 0.25
        assert job["message"] == "working on 4"
    assert stop_seen.wait(10)


def test_an_async_batched_task_gets_lists_and_the_batch_size_is_in_metrics(live_server: StartServer) -> None:
    app = FastTaskAPI(title="batching", queue="local", concurrency=1)
    seen: list[list[int]] = []

    @app.task_endpoint("/double", batch=Batch(3, 60_000))
    async def double(x: list[int]) -> list[int]:
        seen.append(x)
        return [2 * v for v in x]

    server = live_server(app)
    with server.client() as client:
        ids = [client.post("/double", json={"x": i}).json()["id"] for i in range(3)]
        assert [final(client, job_id)["result"] for job_id in ids] == [0, 2, 4]
        metrics = client.get("/metrics").text
    assert seen == [[0, 1, 2]]
    assert 'fasttask_batch_size_bucket{endpoint="/double",le="2.0"} 0.0' in metrics
    assert 'fasttask_batch_size_bucket{endpoint="/double",le="4.0"} 1.0' in metrics
    assert 'fasttask_batch_size_sum{endpoint="/double"} 3.0' in metrics


def test_a_request_carries_one_value_per_job_and_openapi_shows_it(live_server: StartServer) -> None:
    model = Model()
    server = live_server(batching_app(model))
    with server.client() as client:
        assert client.post("/embed", json={"text": ["a", "b"]}).status_code == 422
        schema = client.get("/openapi.json").json()
    params = next(body for name, body in schema["components"]["schemas"].items() if name.startswith("Params_embed"))
    assert params["properties"]["text"]["type"] == "string"
    assert params["properties"]["scale"]["type"] == "number"
    assert params["required"] == ["text"]


def test_the_decorator_refuses_what_cannot_be_batched() -> None:
    app = FastTaskAPI(title="batching", queue="local")

    def gen(x: list[int]) -> Any:
        yield x

    with pytest.raises(ConfigError, match="generator task cannot be batched"):
        app.task_endpoint("/gen", batch=Batch(4, 10))(gen)

    def plain(x: int, y: list[int]) -> list[int]:
        return y

    with pytest.raises(ConfigError, match=r"parameter 'x' must be annotated list\[T\].*not int"):
        app.task_endpoint("/plain", batch=Batch(4, 10))(plain)
    with pytest.raises(ConfigError, match=r"takes a fasttask\.Batch"):
        app.task_endpoint("/typo", batch=32)(plain)  # type: ignore[arg-type]
    for size, wait in [(0, 10), (5000, 10), (4, -1), (4, 10**6), (4, float("nan")), (True, 10), (2.5, 10)]:
        with pytest.raises(ConfigError, match="Batch max_"):
            Batch(size, wait)  # type: ignore[arg-type]
    assert app.tasks == {}


def test_the_waiting_rule() -> None:
    batch = Batch(4, 10)
    assert wait_left_s(batch, 4, 0.0) == 0.0  # full: at once
    assert wait_left_s(batch, 1, 0.004) == pytest.approx(0.006)
    assert wait_left_s(batch, 3, 0.5) == 0.0  # the oldest waited long enough
    assert wait_left_s(Batch(1, 1000), 1, 0.0) == 0.0  # max_size=1: one job at a time


def test_a_batch_run_in_one_thread_isolates_two_bad_inputs_among_eight() -> None:
    """`BatchRun.run_here` (the host whose thread is the job's) with the same isolation as the embedded queue."""
    calls: list[list[int]] = []

    def square(x: list[int]) -> list[int]:
        calls.append(x)
        if 3 in x or 6 in x:
            raise ArithmeticError(f"cannot square {[v for v in x if v in (3, 6)]}")
        return [v * v for v in x]

    task = TaskDef("/square", square, batch=Batch(8, 0))
    jobs = [CallJob(str(i), {"x": i}, None, lambda _: None, lambda _: {}) for i in range(8)]
    decided: list[str] = []
    sizes: list[int] = []
    BatchRun(task, jobs, observe=sizes.append).run_here(lambda done: decided.extend(job.job_id for job in done))
    assert sorted(decided, key=int) == [str(i) for i in range(8)]
    assert [job.result for job in jobs] == [0, 1, 4, None, 16, 25, None, 49]
    assert str(jobs[3].error) == "cannot square [3]"
    assert str(jobs[6].error) == "cannot square [6]"
    assert all(job.error is None for i, job in enumerate(jobs) if i not in (3, 6))
    assert sizes == [len(call) for call in calls]
    assert calls[0] == list(range(8))
    assert sum(1 for call in calls if 3 not in call and 6 not in call) == 4  # [0,1] [2] [4,5] [7]


def test_in_runpod_mode_each_request_is_a_batch_of_one() -> None:
    model = Model()
    worker = RunpodWorker(batching_app(model, max_size=8, max_wait_ms=10))
    try:
        ok = asyncio.run(worker.handle({"id": "r1", "input": {"path": "/embed", "text": "hi", "scale": 3}}))
        bad = asyncio.run(worker.handle({"id": "r2", "input": {"path": "/embed", "text": "bad2"}}))
    finally:
        worker.close()
    assert ok == {"text": "hi", "n": 6.0}
    assert "ValueError: bad input bad2" in bad["error"]
    assert model.calls == [["hi"], ["bad2"]]


def test_constraints_around_the_list_hold_for_each_job(live_server: StartServer) -> None:
    app = FastTaskAPI(title="batching", queue="local")

    @app.task_endpoint("/positive", batch=Batch(4, 0))
    def positive(x: Annotated[list[int], Field(ge=0)]) -> list[int]:
        return x

    server = live_server(app)
    with server.client() as client:
        assert client.post("/positive", json={"x": -1}).status_code == 422
        job_id = client.post("/positive", json={"x": 5}).json()["id"]
        assert final(client, job_id)["result"] == 5


def test_a_job_cancelled_during_the_call_ends_cancelled_and_the_others_finish(live_server: StartServer) -> None:
    inside = threading.Event()
    release = threading.Event()
    app = FastTaskAPI(title="batching", queue="local", concurrency=1)

    @app.task_endpoint("/wait", batch=Batch(3, 60_000))
    def wait(x: list[int]) -> list[int]:
        inside.set()
        release.wait(30)
        return [v + 1 for v in x]

    server = live_server(app)
    with server.client() as client:
        ids = [client.post("/wait", json={"x": i}).json()["id"] for i in range(3)]
        assert inside.wait(10)
        assert client.post(f"/jobs/{ids[1]}/cancel").json()["status"] == "cancelled"
        release.set()
        jobs = [final(client, job_id) for job_id in ids]
        (queue,) = client.get("/queues").json()["queues"]
    assert (queue["queued"], queue["running"], queue["stopping"]) == (0, 0, 0)  # every count given back
    assert [job["status"] for job in jobs] == ["finished", "cancelled", "finished"]
    assert [jobs[0]["result"], jobs[1]["result"], jobs[2]["result"]] == [1, None, 3]

"""Batching across jobs on the Redis queue: real API servers, real workers, a real redis-server.

Jobs are queued before a worker starts wherever the test needs to know what one batch takes; the worker runs
in a thread of the test process, so the stand-in model sees each call.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import httpx
import redis

from fasttask import Batch, FastTaskAPI, JobProgress
from fasttask.redis import keys
from tests.support.cluster import Cluster, final, running, submit, wait_until
from tests.support.servers import LiveServer
from tests.support.worker import WorkerThread

StartServer = Callable[[FastTaskAPI], LiveServer]
StartWorker = Callable[..., WorkerThread]


class Model:
    """Records each call's inputs; `bad…` inputs are an exception entry, `boom…` make the call raise, and a
    batch holding `short` returns one entry too few."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.seconds = seconds

    def __call__(self, job_progress: JobProgress, text: list[str]) -> list[Any]:
        with self.lock:
            self.calls.append(list(text))
        self.started.set()
        steps = int(self.seconds / 0.05)
        for step in range(steps):
            threading.Event().wait(0.05)
            job_progress.set_status((step + 1) / steps, f"{len(text)} jobs")
        if any(t.startswith("boom") for t in text):
            raise ValueError(f"cannot embed {next(t for t in text if t.startswith('boom'))}")
        if "short" in text:
            return [t.upper() for t in text[1:]]
        return [ValueError(f"bad input {t}") if t.startswith("bad") else t.upper() for t in text]

    @property
    def seen(self) -> list[str]:
        return [text for call in self.calls for text in call]


def batching_app(
    redis_url: str, model: Model, max_size: int = 4, max_wait_ms: float = 0, **options: Any
) -> FastTaskAPI:
    app = FastTaskAPI(title="batching on Redis", queue="redis", redis_url=redis_url)

    @app.task_endpoint("/embed", queue_size=1000, batch=Batch(max_size, max_wait_ms), **options)
    def embed(job_progress: JobProgress, text: list[str]) -> list[Any]:
        return model(job_progress, text)

    return app


def submit_all(client: httpx.Client, texts: list[str]) -> list[str]:
    ids = []
    for text in texts:
        answer = client.post("/embed", json={"text": text})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def ended(client: httpx.Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/jobs/{job_id}", params={"wait": 30}).json()
    assert job["status"] not in ("queued", "running"), job
    return job


def run_queued(
    live_server: StartServer, start_worker: StartWorker, redis_url: str, texts: list[str], **options: Any
) -> tuple[Model, list[dict[str, Any]]]:
    """Queue `texts` with no worker running, then start one: returns the model and each job once ended."""
    model = Model()
    app = batching_app(redis_url, model, **options)
    with live_server(app).client() as client:
        ids = submit_all(client, texts)
        start_worker(app, redis_url)
        return model, [ended(client, job_id) for job_id in ids]


def test_a_worker_claims_up_to_max_size_queued_jobs_as_one_call(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    texts = [f"t{i}" for i in range(10)]
    model, jobs = run_queued(live_server, start_worker, redis_url, texts, max_size=4)
    assert model.calls == [texts[0:4], texts[4:8], texts[8:10]]
    assert [job["status"] for job in jobs] == ["finished"] * 10
    assert [job["result"] for job in jobs] == [text.upper() for text in texts]
    assert [job["progress"] for job in jobs] == [1.0] * 10
    with redis.Redis.from_url(redis_url) as connection:
        queue = keys.queue_name("/embed")
        assert connection.zcard(keys.finished_registry_key(queue)) == 10, "each job is RQ's finished job"
        assert connection.zcard(keys.started_registry_key(queue)) == 0


def test_a_forming_batch_waits_in_the_queue_and_goes_when_full(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    model = Model()
    app = batching_app(redis_url, model, max_size=4, max_wait_ms=60_000)  # a lone job would wait a minute
    start_worker(app, redis_url)
    with live_server(app).client() as client:
        first = submit_all(client, ["a", "b", "c"])
        assert client.get(f"/jobs/{first[0]}", params={"wait": 0.5}).json()["status"] == "queued"
        ids = first + submit_all(client, ["d"])
        assert [ended(client, job_id)["status"] for job_id in ids] == ["finished"] * 4
    assert model.calls == [["a", "b", "c", "d"]]


def test_a_lone_job_runs_once_its_wait_is_over(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    model = Model()
    app = batching_app(redis_url, model, max_size=32, max_wait_ms=300)
    start_worker(app, redis_url)
    with live_server(app).client() as client:
        (job_id,) = submit_all(client, ["alone"])
        assert ended(client, job_id)["result"] == "ALONE"
    assert model.calls == [["alone"]]


def test_bad_inputs_fail_only_their_own_jobs_both_ways(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    texts = ["a", "bad1", "b", "boom2", "c", "d"]
    model, jobs = run_queued(live_server, start_worker, redis_url, texts, max_size=8)
    outcome = {
        text: (job["status"], job["result"] or job["error"]["message"]) for text, job in zip(texts, jobs, strict=True)
    }
    assert outcome == {
        "a": ("finished", "A"),
        "bad1": ("failed", "bad input bad1"),  # an Exception entry
        "b": ("finished", "B"),
        "boom2": ("failed", "cannot embed boom2"),  # the call raised with it, and only with it
        "c": ("finished", "C"),
        "d": ("finished", "D"),
    }
    assert model.calls[0] == texts, "one call first"
    assert ["boom2"] in model.calls, "narrowed down to the job that makes the call raise"
    assert model.seen.count("a") >= 2 and all(call != texts for call in model.calls[1:])


def test_a_wrong_length_return_fails_every_job_of_the_call(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    _, jobs = run_queued(live_server, start_worker, redis_url, ["short", "x", "y"], max_size=4)
    assert [job["status"] for job in jobs] == ["failed"] * 3
    assert all("returned 2 entries" in job["error"]["message"] for job in jobs), jobs[0]["error"]


def test_a_job_cancelled_while_queued_never_reaches_the_function(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    model = Model()
    app = batching_app(redis_url, model, max_size=4)
    with live_server(app).client() as client:
        ids = submit_all(client, ["a", "gone", "b"])
        assert client.post(f"/jobs/{ids[1]}/cancel").json()["status"] == "cancelled"
        start_worker(app, redis_url)
        jobs = [ended(client, job_id) for job_id in ids]
    assert [job["status"] for job in jobs] == ["finished", "cancelled", "finished"]
    assert model.calls == [["a", "b"]]


def test_a_job_cancelled_during_its_batch_ends_cancelled_and_the_others_finish(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    model = Model(seconds=1.0)
    app = batching_app(redis_url, model, max_size=4)
    with live_server(app).client() as client:
        ids = submit_all(client, ["a", "b", "c"])
        start_worker(app, redis_url)
        assert model.started.wait(20)
        assert client.post(f"/jobs/{ids[1]}/cancel").json()["status"] == "cancelled"
        jobs = [ended(client, job_id) for job_id in ids]
    assert [job["status"] for job in jobs] == ["finished", "cancelled", "finished"]
    assert jobs[1]["result"] is None


def test_a_batch_over_its_timeout_ends_each_job_timed_out(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    model = Model(seconds=30.0)
    app = batching_app(redis_url, model, max_size=4, timeout=1)
    with live_server(app).client() as client:
        ids = submit_all(client, ["a", "b"])
        start_worker(app, redis_url)
        jobs = [ended(client, job_id) for job_id in ids]
        assert [job["status"] for job in jobs] == ["timeout", "timeout"]
        after = submit_all(client, ["fast"])  # the worker goes on with the next batch
        model.seconds = 0
        assert ended(client, after[0])["status"] == "finished"


def test_two_workers_never_take_the_same_job(
    live_server: StartServer, start_worker: StartWorker, redis_url: str
) -> None:
    model = Model()
    app = batching_app(redis_url, model, max_size=8, max_wait_ms=5)
    texts = [f"j{i}" for i in range(300)]
    with live_server(app).client() as client:
        start_worker(app, redis_url)
        start_worker(app, redis_url)
        ids = submit_all(client, texts)
        jobs = [ended(client, job_id) for job_id in ids]
    assert [job["result"] for job in jobs] == [text.upper() for text in texts]
    assert sorted(model.seen) == sorted(texts), "each job ran exactly once"
    assert max(len(call) for call in model.calls) <= 8


def test_kill_9_of_a_worker_mid_batch_runs_each_job_again_elsewhere(cluster: Cluster) -> None:
    url = cluster.api()
    jobs = [submit(url, "/sleep_batch", key=f"k{i}", seconds=3) for i in range(3)]
    first = cluster.worker()  # takes the three queued jobs as one batch
    wait_until(lambda: all(running(url, job["id"]) for job in jobs), 20, "the batch to start")
    second = cluster.worker()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    done = [final(url, job["id"], timeout_s=90) for job in jobs]
    assert [job["status"] for job in done] == ["finished"] * 3, done
    assert [job["result"] for job in done] == ["slept k0", "slept k1", "slept k2"]
    with cluster.client() as connection:
        for index in range(3):
            assert int(connection.hget("test:runs", f"sleep_batch:k{index}") or 0) == 2
            assert int(connection.hget("test:ran_on", f"sleep_batch:k{index}") or 0) == second.pid

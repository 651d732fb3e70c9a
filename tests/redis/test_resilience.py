"""Background loops outlive whatever they talk to: Redis restarted, object storage unreachable, records
that do not parse. Each test breaks one thing for real and checks that the loop that touches it goes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from fasttask import FastTaskAPI, JobProgress
from fasttask.errors import JobNotFound, StorageUnavailable
from fasttask.files import MediaFile
from fasttask.loops import LoopHealth, run_forever
from fasttask.redis import keys as layout
from fasttask.redis.broker import RedisBroker
from fasttask.redis.cleanup import clean_up_abandoned
from fasttask.settings import Settings
from fasttask.storage import ObjectStore
from tests.support.cluster import Cluster, final, submit, wait_until
from tests.support.servers import S3_CREDENTIALS, free_port
from tests.support.worker import WorkerThread

pytestmark = pytest.mark.timeout(180)


# -- the loop machinery ------------------------------------------------------------------------------
def test_a_loop_survives_any_error_of_a_round_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    health = LoopHealth()
    rounds: list[int] = []
    snapshots: list[dict[str, Any]] = []

    six_rounds = asyncio.Event()

    async def step() -> None:
        rounds.append(len(rounds))
        if len(rounds) in (2, 3):
            raise KeyError("a record without its field")
        if len(rounds) == 4:
            snapshots.append(health.snapshot()["demo"])
        if len(rounds) == 6:
            six_rounds.set()

    async def main() -> None:
        task = asyncio.create_task(run_forever(health, "demo", step, every_s=0.01, first_backoff_s=0.01))
        await asyncio.wait_for(six_rounds.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING, logger="fasttask.loops"):
        asyncio.run(main())
    assert len(rounds) >= 6  # rounds went on after the failures
    failing = snapshots[0]  # seen during the 4th round, right after two failed ones
    assert failing["ok"] is False and failing["consecutive_failures"] == 2
    assert failing["last_error"].startswith("KeyError")
    assert health.snapshot()["demo"]["ok"] is True and health.snapshot()["demo"]["failures"] == 2
    messages = [record.getMessage() for record in caplog.records]
    assert any("demo failed (KeyError" in message for message in messages)
    assert any("demo works again after 2 failed round(s)" in message for message in messages)
    metrics = {m.name: m for m in health.collect()}
    assert metrics["fasttask_loop_up"].samples[0].value == 1.0
    assert metrics["fasttask_loop_failures"].samples[0].value == 2


# -- object storage away -----------------------------------------------------------------------------
def _closed_port_store(monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(s3_bucket="gone", s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    return ObjectStore(settings)


def test_unreachable_storage_raises_storage_unavailable_not_botocore_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = _closed_port_store(monkeypatch)
    media = MediaFile.from_bytes(b"x" * 10, "a.bin", "application/octet-stream")
    try:
        with pytest.raises(StorageUnavailable, match="unreachable"):
            store.put_file("fasttask/expires/1/job/a.bin", media)
    finally:
        media.close()
    with pytest.raises(StorageUnavailable):
        store.sweep()
    with pytest.raises(StorageUnavailable):
        store.read_range("fasttask/expires/1/job/a.bin", 0, 10)  # at the call, before any byte is sent
    assert StorageUnavailable.status_code == 503


def test_a_missing_object_is_not_found(bucket: str, s3_endpoint: str) -> None:
    store = ObjectStore(Settings(s3_bucket=bucket, s3_endpoint_url=s3_endpoint))
    with pytest.raises(JobNotFound):
        store.read_range("fasttask/expires/1/nosuch/a.bin", 0, 10)


# -- records that do not parse ------------------------------------------------------------------------
def _abandoned_job(connection: redis.Redis, queue: str, job_id: str) -> None:
    """A job RQ would find abandoned: `started`, with a StartedJobRegistry entry whose lease ran out."""
    job = Job.create(
        "fasttask.worker.execute", args=["/x"], id=job_id, connection=connection, serializer=JSONSerializer
    )
    job.origin = queue
    job.save()
    connection.hset(layout.job_key(job_id), "status", "started")
    connection.zadd(layout.started_registry_key(queue), {f"{job_id}:exec": 1})


def test_the_cleanup_drops_unreadable_records_and_still_ends_abandoned_jobs(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    connection = redis.Redis.from_url(redis_url)
    queue = layout.queue_name("/x")
    connection.set(layout.job_key("broken"), "not a hash")  # a key of another type
    connection.zadd(layout.started_registry_key(queue), {"broken:exec": 1})
    _abandoned_job(connection, queue, "lost")
    failed: list[str] = []
    with caplog.at_level(logging.ERROR, logger="fasttask.redis"):
        clean_up_abandoned(connection, [queue], "test", lambda _queue, job_id: failed.append(job_id))
    assert connection.zcard(layout.started_registry_key(queue)) == 0
    assert connection.hget(layout.job_key("lost"), "status") == b"failed"  # no retries left: failed
    assert failed == ["lost"]
    assert any("dropped the unreadable job broken" in record.getMessage() for record in caplog.records)


def test_the_api_event_subscription_survives_a_message_that_is_not_a_job_id(redis_url: str) -> None:
    app = FastTaskAPI(queue="redis", redis_url=redis_url)

    @app.task_endpoint("/x")
    def x() -> None: ...

    async def main() -> None:
        broker = RedisBroker(app.tasks, app.settings)
        await broker.start()
        try:
            publisher = redis.asyncio.Redis.from_url(redis_url)
            await asyncio.sleep(0.3)  # subscribed
            await publisher.publish(layout.EVENTS_CHANNEL, b"\xff\xfe not utf-8")
            with broker._changes.watching("job-1") as woken:
                await asyncio.sleep(0.2)
                woken.clear()
                await publisher.publish(layout.EVENTS_CHANNEL, "job-1")
                await asyncio.wait_for(woken.wait(), 3)  # still listening
            assert not any(task.done() for task in broker._background)
            assert broker.loops.snapshot()["job events subscription"]["ok"] is True
            await publisher.aclose()
        finally:
            await broker.close()

    asyncio.run(main())


def _sleeper_app(redis_url: str) -> FastTaskAPI:
    app = FastTaskAPI(queue="redis", redis_url=redis_url)

    @app.task_endpoint("/sleep", queue_size=10)
    def sleep(job_progress: JobProgress, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            job_progress.set_status(0.5)  # raises once the job is stopped
        return "slept"

    return app


def test_the_worker_listener_survives_commands_that_are_not_objects(
    redis_url: str, start_worker: Callable[..., WorkerThread], client_for: Callable[[FastTaskAPI], Any]
) -> None:
    app = _sleeper_app(redis_url)
    client = client_for(app)
    worker = start_worker(app, redis_url)
    connection = redis.Redis.from_url(redis_url)
    long = client.post("/sleep", json={"seconds": 60}).json()
    wait_until(lambda: client.get(f"/jobs/{long['id']}").json()["status"] == "running", 10, "the job to start")
    channel = layout.worker_command_channel(worker.worker.name)
    for junk in (b"[1, 2]", b"\xff", b'"stop-job"', b"null"):
        connection.publish(channel, junk)
    assert client.post(f"/jobs/{long['id']}/cancel").status_code == 200  # sends RQ's stop-job command
    short = client.post("/sleep", json={"seconds": 0.1}).json()
    # the worker heard the stop and is free again: without it, it would sleep for another minute
    assert client.get(f"/jobs/{short['id']}", params={"wait": 20}).json()["status"] == "finished"


def test_the_heartbeat_makes_a_corrupted_worker_record_again(
    redis_url: str, start_worker: Callable[..., WorkerThread]
) -> None:
    app = _sleeper_app(redis_url)
    worker = start_worker(app, redis_url)
    connection = redis.Redis.from_url(redis_url)
    key = layout.worker_key(worker.worker.name)
    wait_until(lambda: connection.type(key) == b"hash", 10, "the worker to register")
    connection.set(key, "garbage")
    wait_until(lambda: connection.type(key) == b"hash", 20, "the worker record to be made again")
    assert connection.sismember(layout.workers_set_key(), key)
    wait_until(lambda: worker.worker.loops.snapshot()["heartbeat"]["ok"], 10, "the heartbeat to work again")
    assert worker.worker.loops.snapshot()["heartbeat"]["failures"] >= 1


# -- whole processes --------------------------------------------------------------------------------
def _runs(cluster: Cluster, key: str) -> int:
    with cluster.client() as connection:
        return int(connection.hget("test:runs", key) or 0)


def test_a_worker_stays_registered_and_keeps_its_leases_after_a_redis_restart(cluster: Cluster) -> None:
    url = cluster.api()
    worker = cluster.worker("--endpoints", "/sleep")
    cluster.redis.stop()
    time.sleep(6)  # longer than a heartbeat interval: a beat fails, so the worker registers itself again
    cluster.redis.start()  # AOF on: the worker's own record comes back with Redis
    wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200, 30, "the API to see Redis again")

    def listed() -> bool:
        queues = httpx.get(f"{url}/queues").json()
        return any(queue["endpoint"] == "/sleep" and queue["workers"] for queue in queues["queues"])

    wait_until(listed, 15, "the worker to be listed again")

    def api_loops_ok() -> bool:
        loops = httpx.get(f"{url}/ready").json()["loops"]
        return all(loop["ok"] for loop in loops.values()) and "job events subscription" in loops

    wait_until(api_loops_ok, 15, "the API's loops to work again")
    # longer than the 20 s lease: only a live heartbeat keeps the job from being taken for abandoned
    job = submit(url, "/sleep", key="long", seconds=40)
    done = final(url, job["id"], timeout_s=120)
    assert done["status"] == "finished", done
    assert _runs(cluster, "sleep:long") == 1
    assert worker.poll() is None
    log = cluster.log("worker-1")
    assert "There exists an active worker" not in log
    assert "works again after" in log  # Redis coming back is logged, not only its going away


def test_storage_down_stops_neither_heartbeats_nor_the_recovery_of_lost_jobs(cluster: Cluster) -> None:
    cluster.env.update(S3_CREDENTIALS)
    cluster.env.update(
        {
            "FTAPI_S3_BUCKET": "gone",
            "FTAPI_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "FTAPI_S3_INLINE_KB": "1",
        }
    )
    url = cluster.api()
    first = cluster.worker("--endpoints", "/sleep")
    second = cluster.worker("--endpoints", "/sleep")

    upload = httpx.post(f"{url}/echo_file", files={"file": ("a.bin", b"x" * 4096)})
    assert upload.status_code == 503, upload.text
    assert "object storage" in upload.json()["detail"]

    job = submit(url, "/sleep", key="lost", seconds=30)
    wait_until(lambda: _runs(cluster, "sleep:lost") == 1, 30, "the job to start")
    with cluster.client() as connection:
        pid = int(connection.hget("test:ran_on", "sleep:lost") or 0)
    victim, survivor = (first, second) if pid == first.pid else (second, first)
    assert pid == victim.pid
    time.sleep(12)  # a cleanup and a storage sweep round pass with storage away, before the worker dies
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: _runs(cluster, "sleep:lost") == 2, 60, "the lost job to run again")
    print(f"the killed worker's job ran again after {time.monotonic() - killed_at:.1f} s with storage down")
    done = final(url, job["id"], timeout_s=90)
    assert done["status"] == "finished", done
    assert _runs(cluster, "sleep:lost") == 2  # its 30 s on the survivor outlived the lease: heartbeat alive
    assert survivor.poll() is None

    def sweep_failing() -> bool:  # the processes take turns: the API's comes within a few rounds
        return httpx.get(f"{url}/ready").json()["loops"]["storage sweep"]["ok"] is False

    wait_until(sweep_failing, 60, "the API to report its storage sweep failing")
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 200  # storage being away is reported, not a reason to take the API out
    loops = ready.json()["loops"]
    assert "StorageUnavailable" in loops["storage sweep"]["last_error"]
    assert loops["abandoned-job cleanup"]["ok"] is True
    metrics = httpx.get(f"{url}/metrics").text
    assert 'fasttask_loop_up{loop="storage sweep"} 0.0' in metrics


# -- RQ's view of a worker ---------------------------------------------------------------------------
def test_a_worker_keeps_rqs_job_counters(
    redis_url: str, start_worker: Callable[..., WorkerThread], client_for: Callable[[FastTaskAPI], Any]
) -> None:
    app = FastTaskAPI(queue="redis", redis_url=redis_url)

    @app.task_endpoint("/div", queue_size=10)
    def div(n: int) -> float:
        return 1 / n

    client = client_for(app)
    worker = start_worker(app, redis_url)
    ids = [client.post("/div", json={"n": n}).json()["id"] for n in (1, 2, 0)]
    statuses = [client.get(f"/jobs/{job_id}", params={"wait": 20}).json()["status"] for job_id in ids]
    assert statuses == ["finished", "finished", "failed"]
    key = layout.worker_key(worker.worker.name)
    worker.stop()  # its last counts are written as it leaves
    connection = redis.Redis.from_url(redis_url)
    fields = connection.hgetall(key)
    assert fields[b"successful_job_count"] == b"2"
    assert fields[b"failed_job_count"] == b"1"
    assert float(fields[b"total_working_time"]) > 0


def test_the_job_guard_goes_on_when_interrupting_a_task_fails(caplog: pytest.LogCaptureFixture) -> None:
    from fasttask.redis.guard import Guard, Watch

    replaced = threading.Event()

    def broken_interrupt() -> None:
        raise RuntimeError("the thread to interrupt is gone")

    guard = Guard(lambda _id: None, lambda _id: None, lambda _id: replaced.set(), stuck_after_s=0.2)
    guard.start()
    try:
        with caplog.at_level(logging.ERROR, logger="fasttask.worker"):
            guard.watch(Watch("job-1", time.monotonic(), threading.Event(), broken_interrupt))
            # timeout at once, asked, interrupt raises; the guard still escalates to replacing the process
            assert replaced.wait(10)
        assert guard.is_alive()
        assert any("the guard goes on" in record.getMessage() for record in caplog.records)
    finally:
        guard.close()
        guard.join(5)


def test_stop_tasks_ends_a_task_that_swallows_a_cancellation() -> None:
    from fasttask.loops import stop_tasks

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # one swallowed, as some client libraries do
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(stop_tasks([task], timeout_s=5), 10)
        assert task.done()

    asyncio.run(main())


def test_an_api_process_that_cannot_bind_its_port_exits(redis_url: str, tmp_path: Path) -> None:
    """It used to hang in its shutdown, ignoring SIGTERM, with the Redis queue's background tasks."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "FTAPI_REDIS_URL": redis_url, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        process = subprocess.Popen(
            [sys.executable, "-m", "fasttask", "serve", "tests.support.cluster_app:app", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert process.wait(60) != 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_redis_pys_maintenance_notice_is_a_debug_line(capsys: pytest.CaptureFixture[str]) -> None:
    from fasttask.logs import configure_worker_logging, job_log
    from fasttask.settings import Settings

    root = logging.getLogger()
    saved_handlers, saved_level, saved_job_level = root.handlers[:], root.level, job_log.level
    try:
        for level in ("info", "debug"):
            configure_worker_logging(Settings(), level)
            # what redis-py 7 says on each connection to a server without the feature
            logging.getLogger("redis.connection").warning("Failed to enable maintenance notifications: unknown command")
            err = capsys.readouterr().err
            if level == "info":
                assert "maintenance notifications" not in err
            else:
                assert "DEBUG" in err and "maintenance notifications" in err
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        job_log.setLevel(saved_job_level)

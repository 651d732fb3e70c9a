"""The API side's reads of a job: what `GET /jobs/{id}` and `GET /jobs` cost in Redis commands, and that every
way a result can be stored reads back the same."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fasttask import FastTaskAPI
from fasttask.jobs import JobRecord, JobStatus
from fasttask.redis import codec, keys
from fasttask.redis.broker import RedisBroker

from .test_codec import claimed, ended, submitted

SMALL = {"text": "é", "n": [1, 2.5, None]}
LARGE = {"text": "x" * codec.RESULT_KEPT_LIMIT_BYTES}


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def finished_job(connection: redis.Redis, redis_url: str, value: Any) -> FastTaskAPI:
    """An app on the Redis queue and its job `job-1`, ended by the worker's scripts with `value` as result."""
    app = FastTaskAPI(queue="redis", redis_url=redis_url)

    @app.task_endpoint("/plain")
    def plain(text: str) -> Any:
        return text

    submitted(connection, app.tasks["/plain"], {"text": "x"})
    job = claimed(connection, app.tasks)
    assert job is not None
    assert ended(connection, job, codec.finished(value)) is not None
    # `ended` ends it at a fixed moment long past: its registry entry gets a deadline ahead, as a job ended now
    connection.zadd(keys.finished_registry_key(job.queue), {"job-1": time.time() + 60})
    return app


def read(app: FastTaskAPI, connection: redis.Redis) -> tuple[JobRecord, list[JobRecord], dict[str, int]]:
    """The job as `GET /jobs/job-1` and `GET /jobs` read it, and the commands the single read sent."""

    async def main() -> tuple[JobRecord, list[JobRecord], dict[str, int]]:
        broker = RedisBroker(app.tasks, app.settings)
        try:
            await broker.ready()  # connected: a new connection's own commands are not the read's
            connection.config_resetstat()
            record = await broker.get("job-1")
            stats = connection.info("commandstats")
            page = await broker.views.list_jobs("/plain", None, 10, None)
        finally:
            await broker.close()
        calls = {name.removeprefix("cmdstat_"): entry["calls"] for name, entry in stats.items()}
        return record, page.jobs, calls

    return asyncio.run(main())


def test_a_finished_job_with_a_small_result_is_read_with_one_command(connection: redis.Redis, redis_url: str) -> None:
    app = finished_job(connection, redis_url, SMALL)
    record, listed, calls = read(app, connection)
    assert (record.status, record.result) == (JobStatus.FINISHED, SMALL)
    assert [(job.id, job.result) for job in listed] == [("job-1", SMALL)]
    assert calls.get("hmget") == 1
    assert "xrevrange" not in calls, "the result came with the job hash"


def test_a_large_result_is_stored_once_and_read_from_rqs_result_stream(connection: redis.Redis, redis_url: str) -> None:
    app = finished_job(connection, redis_url, LARGE)
    assert connection.hget(keys.job_key("job-1"), keys.F_RESULT) == b"", "not kept twice"
    record, listed, calls = read(app, connection)
    assert (record.status, record.result) == (JobStatus.FINISHED, LARGE)
    assert [(job.id, job.result) for job in listed] == [("job-1", LARGE)]
    assert (calls.get("hmget"), calls.get("xrevrange")) == (1, 1)


def test_a_job_finished_without_a_kept_result_reads_it_from_the_stream(connection: redis.Redis, redis_url: str) -> None:
    """As RQ's own code, or a worker of an earlier version, ends a job: the result is in the stream only."""
    app = finished_job(connection, redis_url, SMALL)
    connection.hdel(keys.job_key("job-1"), keys.F_RESULT)
    record, listed, _ = read(app, connection)
    assert (record.status, record.result) == (JobStatus.FINISHED, SMALL)
    assert [(job.id, job.result) for job in listed] == [("job-1", SMALL)]

"""RQ's formats as the codec writes and reads them, round trips through the real scripts on a real redis-server;
RQ's own classes read what fasttask writes."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from fasttask import FastTaskAPI
from fasttask.jobs import JobRecord, JobStatus
from fasttask.redis import codec, keys, scripts
from fasttask.tasks import TaskDef

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def make_tasks() -> dict[str, TaskDef]:
    app = FastTaskAPI(queue="local")

    @app.task_endpoint("/render", timeout=2.5, retries=3, result_ttl=90)
    def render(text: str, size: int = 1, tags: list[str] | None = None) -> str:
        return text

    @app.task_endpoint("/plain")
    def plain(text: str) -> str:
        return text

    return app.tasks


def submitted(connection: redis.Redis, task: TaskDef, params: dict[str, Any]) -> JobRecord:
    """A job written as `RedisBroker.submit` writes it."""
    record = JobRecord("job-1", task.path, created_at=NOW)
    queue = keys.queue_name(task.path)
    fields = codec.job_record_fields(task, queue, record, task.validate(params), connection)
    flat = [part for pair in fields.items() for part in pair]
    accepted = connection.register_script(scripts.SUBMIT)(
        keys=[keys.queue_key(queue), keys.job_key(record.id)], args=[10, record.id, keys.queued_channel(queue), *flat]
    )
    assert accepted == 1
    return record


def claimed(connection: redis.Redis, tasks: dict[str, TaskDef], execution: str = "e1") -> codec.ClaimedRecord | None:
    queues = {keys.queue_name(path): path for path in tasks}
    reply = connection.register_script(scripts.CLAIM)(
        keys=[keys.queue_key(queue) for queue in queues],
        args=[codec.rq_timestamp(NOW), 2_000_000_000, execution, "worker-1", *queues],
    )
    return codec.decode_claim(reply, tasks, queues)


def ended(connection: redis.Redis, job: codec.ClaimedRecord, ending: codec.Ending) -> JobRecord | None:
    """Ends a claimed job as the worker does, then reads it back as `GET /jobs/{id}` does."""
    registry = keys.finished_registry_key if ending.rq_status == "finished" else keys.failed_registry_key
    flat = [part for pair in ending.fields.items() for part in pair]
    done = connection.register_script(scripts.FINISH)(
        keys=[
            keys.job_key(job.job_id),
            keys.started_registry_key(job.queue),
            keys.results_key(job.job_id),
            registry(job.queue),
            keys.outputs_key(job.job_id),
        ],
        args=[
            f"{job.job_id}:{job.execution_id}",
            ending.rq_status,
            codec.rq_timestamp(NOW),
            60,
            NOW.timestamp() + 60,
            job.job_id,
            ending.result_type,
            ending.payload_field,
            ending.payload,
            "worker-1",
            job.execution_id,
            job.started_at.timestamp(),
            NOW.timestamp(),
            "0",
            *flat,
        ],
    )
    assert done == 1
    values = connection.hmget(keys.job_key(job.job_id), codec.RECORD_FIELDS)
    entries = connection.xrevrange(keys.results_key(job.job_id), count=1)
    return codec.record_from_redis(job.job_id, values, entries[0][1] if entries else None)


def test_a_job_record_goes_from_submit_to_claim_unchanged(connection: redis.Redis) -> None:
    tasks = make_tasks()
    task = tasks["/render"]
    record = submitted(connection, task, {"text": "héllo", "size": 3, "tags": ["a", "b"]})
    job = claimed(connection, tasks)
    assert job == codec.ClaimedRecord(
        queue=keys.queue_name("/render"),
        job_id=record.id,
        path="/render",
        params={"text": "héllo", "size": 3, "tags": ["a", "b"]},
        unreadable=None,
        execution_id="e1",
        started_at=NOW,
        queued_at=NOW,
        result_ttl=90,
        timeout_s=2.5,
        retries=3,
        failures=0,
    )
    assert claimed(connection, tasks) is None, "claimed once"


def test_rq_reads_the_job_record_fasttask_writes(connection: redis.Redis) -> None:
    tasks = make_tasks()
    submitted(connection, tasks["/plain"], {"text": "x"})
    job = Job.fetch("job-1", connection=connection, serializer=JSONSerializer)
    assert job.func_name == keys.TASK_FUNCTION == "fasttask.worker.execute"
    assert (job.args, job.kwargs) == (["/plain"], {"text": "x"})
    assert job.origin == keys.queue_name("/plain")
    assert job.get_status() == "queued"
    assert job.timeout == -1, "no timeout"
    assert job.retries_left == 1, "a job whose worker dies runs again at least once"
    assert job.enqueued_at == NOW
    record = codec.record_from_redis("job-1", connection.hmget(keys.job_key("job-1"), codec.RECORD_FIELDS), None)
    assert record is not None
    assert (record.status, record.endpoint, record.created_at) == (JobStatus.QUEUED, "/plain", NOW)


def test_a_record_the_worker_cannot_read_is_claimed_as_unreadable(connection: redis.Redis) -> None:
    tasks = make_tasks()
    submitted(connection, tasks["/plain"], {"text": "x"})
    connection.hset(keys.job_key("job-1"), "data", zlib.compress(json.dumps(["f", None, ["/elsewhere"], {}]).encode()))
    job = claimed(connection, tasks)
    assert job is not None
    assert (job.path, job.params) == ("/plain", {})
    assert job.unreadable is not None and "'/elsewhere', which this worker does not serve" in job.unreadable


def test_a_result_goes_from_the_worker_to_the_job_json_and_to_rq(connection: redis.Redis) -> None:
    tasks = make_tasks()
    submitted(connection, tasks["/plain"], {"text": "x"})
    job = claimed(connection, tasks)
    assert job is not None
    value = {"text": "é", "n": [1, 2.5, None]}
    record = ended(connection, job, codec.finished(value))
    assert record is not None
    assert (record.status, record.result, record.error) == (JobStatus.FINISHED, value, None)
    assert (record.started_at, record.finished_at, record.progress) == (NOW, NOW, 1.0)
    result = Result.fetch_latest(Job.fetch("job-1", connection=connection, serializer=JSONSerializer), JSONSerializer)
    assert result is not None
    assert (result.type, result.return_value) == (Result.Type.SUCCESSFUL, value)


@pytest.mark.parametrize("timed_out", [False, True])
def test_an_error_goes_from_the_worker_to_the_job_json_and_to_rq(connection: redis.Redis, timed_out: bool) -> None:
    tasks = make_tasks()
    submitted(connection, tasks["/plain"], {"text": "x"})
    job = claimed(connection, tasks)
    assert job is not None
    error = {"type": "ValueError", "message": "bad input"}
    record = ended(connection, job, codec.failed(error, timed_out=timed_out))
    assert record is not None
    assert record.status is (JobStatus.TIMEOUT if timed_out else JobStatus.FAILED)
    assert record.error == error
    result = Result.fetch_latest(Job.fetch("job-1", connection=connection, serializer=JSONSerializer), JSONSerializer)
    assert result is not None
    assert (result.type, result.exc_string) == (Result.Type.FAILED, "ValueError: bad input")


def test_a_failure_fasttask_did_not_record_is_read_from_rqs_entry(connection: redis.Redis) -> None:
    entry = {b"type": b"2", b"exc_string": codec.encode_exception_text("Traceback ...\nKeyError: 'k'\n")}
    values: list[bytes | None] = [
        b"failed",
        b"2026-01-01T00:00:00.000000Z",
        None,
        None,
        b"/plain",
        None,
        None,
        None,
        None,
        None,
    ]
    record = codec.record_from_redis("j", values, entry)
    assert record is not None and record.error == {"type": "KeyError", "message": "'k'"}
    abandoned = codec.record_from_redis(
        "j",
        values,
        {b"type": b"2", b"exc_string": codec.encode_exception_text("rq.exceptions.AbandonedJobError: gone")},
    )
    assert abandoned is not None and abandoned.error == codec.ABANDONED
    unreadable = codec.record_from_redis("j", values, {b"exc_string": base64.b64encode(b"not zlib")})
    assert unreadable is not None and unreadable.error == codec.ABANDONED
    assert codec.record_from_redis("j", [None] * len(codec.RECORD_FIELDS), None) is None, "no such job"

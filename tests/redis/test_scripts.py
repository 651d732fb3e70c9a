"""The Lua scripts one by one, each run by a real redis-server, with the keys and arguments the code passes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fasttask.redis import keys, scripts

QUEUE = keys.queue_name("/echo")
OTHER = keys.queue_name("/other")


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def subscribed(connection: redis.Redis, *channels: str) -> Any:
    pubsub = connection.pubsub()
    pubsub.subscribe(*channels)
    for _ in channels:  # the subscribe confirmations: the subscription is in place before the script runs
        confirmation = pubsub.get_message(timeout=5)
        assert confirmation is not None and confirmation["type"] == "subscribe"
    return pubsub


def published(pubsub: Any) -> list[tuple[str, bytes]]:
    messages = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        messages.append((message["channel"].decode(), message["data"]))
    pubsub.close()
    return messages


def submit(connection: redis.Redis, job_id: str, limit: int, queue: str = QUEUE) -> Any:
    fields = ["status", "queued", "origin", queue, "result_ttl", "60"]
    return connection.register_script(scripts.SUBMIT)(
        keys=[keys.queue_key(queue), keys.job_key(job_id)], args=[limit, job_id, keys.queued_channel(queue), *fields]
    )


def claim(connection: redis.Redis, queues: list[str], execution: str = "exec", lease: int = 1_000) -> Any:
    return connection.register_script(scripts.CLAIM)(
        keys=[keys.queue_key(queue) for queue in queues],
        args=["2026-01-01T00:00:00.000000Z", lease, execution, "worker-1", *queues],
    )


def finish(connection: redis.Redis, job_id: str, member: str, outputs: bool = False) -> Any:
    return connection.register_script(scripts.FINISH)(
        keys=[
            keys.job_key(job_id),
            keys.started_registry_key(QUEUE),
            keys.results_key(job_id),
            keys.finished_registry_key(QUEUE),
            keys.outputs_key(job_id),
        ],
        args=[
            member,
            "finished",
            "2026-01-01T00:00:01.000000Z",
            60,
            1234.5,
            job_id,
            1,
            "return_value",
            b"eyJvayI6dHJ1ZX0=",
            "worker-1",
            "exec",
            1.0,
            2.0,
            "1" if outputs else "0",
            keys.F_PROGRESS,
            "1.0",
        ],
    )


def requeue(connection: redis.Redis, job_id: str, member: str, count_failure: bool) -> Any:
    return connection.register_script(scripts.REQUEUE)(
        keys=[keys.job_key(job_id), keys.started_registry_key(QUEUE), keys.queue_key(QUEUE)],
        args=[member, job_id, keys.queued_channel(QUEUE), "2026-01-01T00:00:02.000000Z", "1" if count_failure else "0"],
    )


def cancel(connection: redis.Redis, job_id: str) -> list[bytes]:
    reply: list[bytes] = connection.register_script(scripts.CANCEL)(
        keys=[keys.job_key(job_id)], args=[job_id, "2026-01-01T00:00:03.000000Z", 4321.25]
    )
    return reply


def started(connection: redis.Redis, job_id: str) -> str:
    """A job claimed by worker-1: returns its registry member."""
    assert submit(connection, job_id, 10) == 1
    reply = claim(connection, [QUEUE])
    assert reply[1] == job_id.encode()
    return f"{job_id}:exec"


def test_submit_writes_the_job_and_refuses_past_the_queue_limit(connection: redis.Redis) -> None:
    pubsub = subscribed(connection, keys.queued_channel(QUEUE))
    assert submit(connection, "a", 2) == 1
    assert submit(connection, "b", 2) == 1
    assert submit(connection, "c", 2) == 0, "the queue holds 2 already"
    assert connection.lrange(keys.queue_key(QUEUE), 0, -1) == [b"a", b"b"]
    assert connection.hgetall(keys.job_key("a")) == {
        b"status": b"queued",
        b"origin": QUEUE.encode(),
        b"result_ttl": b"60",
    }
    assert not connection.exists(keys.job_key("c")), "a refused job leaves nothing behind"
    assert published(pubsub) == [(keys.queued_channel(QUEUE), b"a"), (keys.queued_channel(QUEUE), b"b")]
    assert submit(connection, "c", 3) == 1, "the limit is the one given with each submit"


def test_claim_takes_the_first_queued_job_and_registers_its_execution(connection: redis.Redis) -> None:
    assert claim(connection, [QUEUE, OTHER]) is None, "nothing queued"
    submit(connection, "x", 10, queue=OTHER)
    lease = int(time.time()) + 20
    queue, job_id, flat = claim(connection, [QUEUE, OTHER], execution="e1", lease=lease)
    assert (queue, job_id) == (OTHER.encode(), b"x"), "the next queue is looked at when the first is empty"
    fields = dict(zip(flat[0::2], flat[1::2], strict=True))
    assert fields[b"status"] == b"started"
    assert fields[b"worker_name"] == b"worker-1"
    assert fields[keys.F_EXECUTION.encode()] == b"e1"
    assert fields[b"started_at"] == fields[b"last_heartbeat"] == b"2026-01-01T00:00:00.000000Z"
    assert connection.zrange(keys.started_registry_key(OTHER), 0, -1, withscores=True) == [(b"x:e1", lease)]
    assert connection.ttl(keys.job_key("x")) == -1, "a started job does not expire"


def test_claim_skips_cancelled_and_expired_ids(connection: redis.Redis) -> None:
    for job_id in ("cancelled", "gone", "next"):
        submit(connection, job_id, 10)
    connection.hset(keys.job_key("cancelled"), "status", "canceled")
    connection.delete(keys.job_key("gone"))
    _, job_id, _ = claim(connection, [QUEUE])
    assert job_id == b"next"
    assert connection.llen(keys.queue_key(QUEUE)) == 0, "the skipped ids were dropped"
    assert connection.hget(keys.job_key("cancelled"), "status") == b"canceled", "left as it was"
    assert connection.zrange(keys.started_registry_key(QUEUE), 0, -1) == [b"next:exec"]


def test_finish_records_the_end_while_the_registry_entry_is_held(connection: redis.Redis) -> None:
    member = started(connection, "j")
    connection.rpush(keys.outputs_key("j"), "1")
    pubsub = subscribed(connection, keys.EVENTS_CHANNEL)
    assert finish(connection, "j", member, outputs=True) == 1
    job = connection.hgetall(keys.job_key("j"))
    assert job[b"status"] == b"finished"
    assert job[b"ended_at"] == job[b"last_heartbeat"] == b"2026-01-01T00:00:01.000000Z"
    assert job[keys.F_PROGRESS.encode()] == b"1.0"
    ((_, entry),) = connection.xrange(keys.results_key("j"))
    assert entry == {
        b"type": b"1",
        b"worker_name": b"worker-1",
        b"execution_id": b"exec",
        b"execution_started_at": b"1.0",
        b"execution_ended_at": b"2.0",
        b"return_value": b"eyJvayI6dHJ1ZX0=",
    }
    assert connection.zcard(keys.started_registry_key(QUEUE)) == 0
    assert connection.zrange(keys.finished_registry_key(QUEUE), 0, -1, withscores=True) == [(b"j", 1234.5)]
    for key in (keys.job_key("j"), keys.results_key("j"), keys.outputs_key("j")):
        assert 0 < connection.ttl(key) <= 60, key
    assert published(pubsub) == [(keys.EVENTS_CHANNEL, b"j")]


def test_finish_is_dropped_when_the_registry_entry_is_gone(connection: redis.Redis) -> None:
    member = started(connection, "j")
    connection.zrem(keys.started_registry_key(QUEUE), member)  # a cancel, or RQ's cleanup, took the job
    connection.hset(keys.job_key("j"), "status", "canceled")
    pubsub = subscribed(connection, keys.EVENTS_CHANNEL)
    assert finish(connection, "j", member) == 0
    assert connection.hget(keys.job_key("j"), "status") == b"canceled"
    assert not connection.exists(keys.results_key("j"))
    assert connection.zcard(keys.finished_registry_key(QUEUE)) == 0
    assert published(pubsub) == []
    assert finish(connection, "j", "j:another-execution") == 0, "only the entry of this execution counts"


@pytest.mark.parametrize("count_failure", [True, False])
def test_requeue_puts_a_started_job_back(connection: redis.Redis, count_failure: bool) -> None:
    member = started(connection, "j")
    connection.rpush(keys.outputs_key("j"), "1")
    pubsub = subscribed(connection, keys.queued_channel(QUEUE), keys.EVENTS_CHANNEL)
    assert requeue(connection, "j", member, count_failure) == 1
    job = connection.hgetall(keys.job_key("j"))
    assert (job[b"status"], job[b"started_at"], job[b"worker_name"]) == (b"queued", b"", b"")
    assert job[b"enqueued_at"] == b"2026-01-01T00:00:02.000000Z"
    assert job.get(keys.F_FAILURES.encode()) == (b"1" if count_failure else None)
    assert connection.lrange(keys.queue_key(QUEUE), 0, -1) == [b"j"]
    assert connection.zcard(keys.started_registry_key(QUEUE)) == 0
    assert not connection.exists(keys.outputs_key("j")), "the next attempt starts its outputs again"
    assert published(pubsub) == [(keys.queued_channel(QUEUE), b"j"), (keys.EVENTS_CHANNEL, b"j")]
    assert requeue(connection, "j", member, count_failure) == 0, "the entry is gone now: nothing happens"
    assert connection.llen(keys.queue_key(QUEUE)) == 1


def test_cancel_of_a_queued_job_takes_it_out_of_its_queue(connection: redis.Redis) -> None:
    submit(connection, "a", 10)
    submit(connection, "b", 10)
    connection.rpush(keys.outputs_key("a"), "1")
    pubsub = subscribed(connection, keys.EVENTS_CHANNEL, keys.worker_command_channel("worker-1"))
    assert cancel(connection, "a") == [b"cancelled", b"queued"]
    assert connection.lrange(keys.queue_key(QUEUE), 0, -1) == [b"b"]
    job = connection.hgetall(keys.job_key("a"))
    assert (job[b"status"], job[keys.F_OUTCOME.encode()]) == (b"canceled", b"cancelled")
    assert job[b"ended_at"] == b"2026-01-01T00:00:03.000000Z"
    assert connection.zrange(keys.canceled_registry_key(QUEUE), 0, -1, withscores=True) == [(b"a", 4321.25)]
    assert 0 < connection.ttl(keys.job_key("a")) <= 60, "kept for the job's result_ttl"
    assert 0 < connection.ttl(keys.outputs_key("a")) <= 60
    assert published(pubsub) == [(keys.EVENTS_CHANNEL, b"a")], "no worker is told"
    assert cancel(connection, "a") == [b"final", b"canceled"]


def test_cancel_of_a_started_job_takes_its_registry_entry_and_tells_its_worker(connection: redis.Redis) -> None:
    member = started(connection, "j")
    pubsub = subscribed(connection, keys.EVENTS_CHANNEL, keys.worker_command_channel("worker-1"))
    assert cancel(connection, "j") == [b"cancelled", b"started"]
    assert connection.zcard(keys.started_registry_key(QUEUE)) == 0
    assert connection.hget(keys.job_key("j"), "status") == b"canceled"
    command, event = published(pubsub)
    assert command[0] == keys.worker_command_channel("worker-1")
    assert json.loads(command[1]) == {"command": "stop-job", "job_id": "j"}
    assert event == (keys.EVENTS_CHANNEL, b"j")
    assert finish(connection, "j", member) == 0, "the worker's late result is dropped"


def test_cancel_answers_missing_and_final_jobs(connection: redis.Redis) -> None:
    assert cancel(connection, "nobody") == [b"missing"]
    member = started(connection, "j")
    assert finish(connection, "j", member) == 1
    assert cancel(connection, "j") == [b"final", b"finished"]
    assert connection.hget(keys.job_key("j"), "status") == b"finished"
    assert connection.zcard(keys.canceled_registry_key(QUEUE)) == 0


def finish_and_claim(connection: redis.Redis, job_id: str, member: str) -> Any:
    """FINISH's arguments as `finish` passes them, then CLAIM's: one call."""
    finish_keys = [
        keys.job_key(job_id),
        keys.started_registry_key(QUEUE),
        keys.results_key(job_id),
        keys.finished_registry_key(QUEUE),
        keys.outputs_key(job_id),
    ]
    finish_args = [member, "finished", "2026-01-01T00:00:01.000000Z", 60, 1234.5, job_id, 1, "", "", "worker-1"]
    finish_args += ["exec", 1.0, 2.0, "0"]
    claim_args = ["2026-01-01T00:00:02.000000Z", 1_000, "exec2", "worker-1", QUEUE]
    return connection.register_script(scripts.FINISH_AND_CLAIM)(
        keys=[*finish_keys, keys.queue_key(QUEUE)], args=[len(finish_args), *finish_args, *claim_args]
    )


def test_finish_and_claim_ends_a_job_and_takes_the_next_in_one_call(connection: redis.Redis) -> None:
    member = started(connection, "a")
    submit(connection, "b", 10)
    ended, (queue, job_id, flat) = finish_and_claim(connection, "a", member)
    assert (ended, queue, job_id) == (1, QUEUE.encode(), b"b")
    assert connection.hget(keys.job_key("a"), "status") == b"finished"
    assert dict(zip(flat[0::2], flat[1::2], strict=True))[keys.F_EXECUTION.encode()] == b"exec2"
    assert connection.zrange(keys.started_registry_key(QUEUE), 0, -1) == [b"b:exec2"]
    assert finish_and_claim(connection, "b", "b:exec") == [0, None], "not its execution; nothing queued"
    assert connection.hget(keys.job_key("b"), "status") == b"started"

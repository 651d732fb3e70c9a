"""CLAIM_BATCH and FINISH_MANY, each run by a real redis-server: a batch forms in the queue, is taken in one
step (each job registered as a single job is), and ends in one step."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fasttask.redis import codec, keys, scripts

QUEUE = keys.queue_name("/embed")
EARLY = "2026-01-01T00:00:00.000000Z"
LATE = "2026-01-01T00:00:05.000000Z"


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def queued(connection: redis.Redis, job_id: str, enqueued_at: str = EARLY) -> None:
    fields = {"status": "queued", "origin": QUEUE, "enqueued_at": enqueued_at}
    connection.hset(keys.job_key(job_id), mapping=fields)
    connection.rpush(keys.queue_key(QUEUE), job_id)


def claim_batch(connection: redis.Redis, most: int, cutoff: str, execution: str = "x", worker: str = "worker-1") -> Any:
    return connection.register_script(scripts.CLAIM_BATCH)(
        keys=[keys.queue_key(QUEUE)], args=[LATE, 1_000, execution, worker, QUEUE, most, cutoff]
    )


def taken_ids(reply: Any) -> list[bytes]:
    return [job[1] for job in reply[2:]]


def test_a_batch_waits_in_the_queue_until_full_or_its_oldest_job_is_due(connection: redis.Redis) -> None:
    assert claim_batch(connection, 3, EARLY) == [0, None], "an empty queue: nothing forms"
    queued(connection, "a", "2026-01-01T00:00:01.000000Z")
    queued(connection, "b", "2026-01-01T00:00:02.000000Z")
    depth, oldest, *taken = claim_batch(connection, 3, "2026-01-01T00:00:00.500000Z")
    assert (depth, oldest, taken) == (2, b"2026-01-01T00:00:01.000000Z", []), "2 of 3, the oldest not due"
    assert connection.hget(keys.job_key("a"), "status") == b"queued", "jobs waiting for their batch stay queued"
    assert connection.llen(keys.queue_key(QUEUE)) == 2
    reply = claim_batch(connection, 3, "2026-01-01T00:00:01.000000Z")
    assert taken_ids(reply) == [b"a", b"b"], "the oldest job is due: the batch goes as it is"


def test_a_full_batch_goes_at_once_and_takes_at_most_max_size(connection: redis.Redis) -> None:
    for job_id in "abcde":
        queued(connection, job_id)
    reply = claim_batch(connection, 3, "2000-01-01T00:00:00.000000Z")
    assert reply[0] == 5
    assert taken_ids(reply) == [b"a", b"b", b"c"]
    assert connection.lrange(keys.queue_key(QUEUE), 0, -1) == [b"d", b"e"]


def test_each_job_of_a_batch_is_claimed_as_a_single_job_is(connection: redis.Redis) -> None:
    for job_id in "ab":
        queued(connection, job_id)
    reply = claim_batch(connection, 5, "", execution="run")
    records = codec.decode_batch_claim(reply, {"/embed"}, {QUEUE: "/embed"}).jobs
    assert [(job.job_id, job.execution_id, job.queue) for job in records] == [
        ("a", "run.1", QUEUE),
        ("b", "run.2", QUEUE),
    ]
    registry = connection.zrange(keys.started_registry_key(QUEUE), 0, -1, withscores=True)
    assert registry == [(b"a:run.1", 1_000), (b"b:run.2", 1_000)], "each job has its own lease entry"
    for job_id in "ab":
        record = connection.hgetall(keys.job_key(job_id))
        assert (record[b"status"], record[b"worker_name"]) == (b"started", b"worker-1")


def test_cancelled_jobs_are_skipped_and_two_claims_never_share_a_job(connection: redis.Redis) -> None:
    for job_id in "abcd":
        queued(connection, job_id)
    connection.hset(keys.job_key("b"), "status", "canceled")
    first = taken_ids(claim_batch(connection, 2, "", worker="w1"))
    second = taken_ids(claim_batch(connection, 2, "", worker="w2"))
    assert first == [b"a", b"c"], "the cancelled job is dropped, and the batch still fills"
    assert second == [b"d"]
    assert claim_batch(connection, 2, "") == [0, None]


def finish_args(job: codec.ClaimedRecord, value: Any) -> tuple[list[str], list[Any]]:
    ending = codec.finished(value)
    now = job.started_at
    return codec.finish_arguments(job, 60, ending, (1.0, None), "worker-1", now, has_outputs=False)


def test_finish_many_ends_each_job_it_still_holds(connection: redis.Redis) -> None:
    for job_id in "abc":
        queued(connection, job_id)
    jobs = codec.decode_batch_claim(claim_batch(connection, 3, ""), {"/embed"}, {QUEUE: "/embed"}).jobs
    connection.zrem(keys.started_registry_key(QUEUE), jobs[1].member)  # b was cancelled while it ran
    keys_: list[str] = []
    args: list[Any] = []
    for index, job in enumerate(jobs):
        job_keys, job_args = finish_args(job, {"n": index})
        keys_ += job_keys
        args += [len(job_args), *job_args]
    ended = connection.register_script(scripts.FINISH_MANY)(keys=keys_, args=args)
    assert ended == [1, 0, 1], "b's end belongs to whoever took it"
    assert connection.zcard(keys.started_registry_key(QUEUE)) == 0
    assert connection.zrange(keys.finished_registry_key(QUEUE), 0, -1) == [b"a", b"c"]
    for job_id, status in (("a", b"finished"), ("b", b"started"), ("c", b"finished")):
        assert connection.hget(keys.job_key(job_id), "status") == status
    entries = connection.xrange(keys.results_key("c"))
    assert json.loads(base64.b64decode(entries[-1][1][b"return_value"])) == {"n": 2}

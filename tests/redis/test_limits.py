"""The Redis queue's size limit per job holds on what a worker unpacks, and a worker fails a job record it
cannot read instead of running out of memory or stopping."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from fasttask.redis import keys as layout
from fasttask.redis.codec import InvalidJobRecord, decode_job_data
from tests.support.apps import make_app
from tests.support.worker import WorkerThread

ClientFor = Callable[[FastTaskAPI], TestClient]
MB = 1024 * 1024


@pytest.mark.parametrize("megabytes", [17, 12], ids=["refused-before-encoding", "refused-once-encoded"])
def test_compressible_parameters_are_measured_uncompressed(
    client_for: ClientFor, redis_url: str, megabytes: int
) -> None:
    """Zeros compress to almost nothing: the limit must see the 16 MB (and more) a worker would unpack."""
    client = client_for(make_app(queue="redis", redis_url=redis_url))
    refused = client.post("/echo_file", files={"file": ("zeros.bin", bytes(megabytes * MB))})
    assert refused.status_code == 413, refused.text
    detail = refused.json()["detail"]
    assert "at most 16 MB per job (uncompressed)" in detail and "FTAPI_S3_BUCKET" in detail
    with redis.Redis.from_url(redis_url) as connection:
        assert connection.llen(layout.queue_key(layout.queue_name("/echo_file"))) == 0
    assert client.post("/echo_file", files={"file": ("zeros.bin", bytes(MB))}).status_code == 202


HOSTILE: dict[str, bytes] = {
    "bomb": zlib.compress(b" " * (17 * MB), 9),  # 17 KB that unpack to 17 MB
    "not-zlib": b"not compressed at all",
    "truncated": zlib.compress(json.dumps(["f", None, ["/make_fries"], {}]).encode())[:-4],
    "deep": zlib.compress(b"[" * 200_000 + b"]" * 200_000),
    "not-a-job": zlib.compress(b'{"a": 1}'),
    "other-endpoint": zlib.compress(json.dumps(["f", None, ["/nowhere"], {}]).encode()),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("data", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_worker_fails_a_record_it_cannot_read_and_goes_on(
    client_for: ClientFor, redis_url: str, start_worker: Callable[..., WorkerThread], data: bytes
) -> None:
    app = make_app(queue="redis", redis_url=redis_url)
    client = client_for(app)
    hostile = client.post("/make_fries", json={"fries_name": "a"}).json()["id"]
    with redis.Redis.from_url(redis_url) as connection:
        connection.hset(layout.job_key(hostile), "data", data)
    start_worker(app, redis_url)
    failed: dict[str, Any] = client.get(f"/jobs/{hostile}", params={"wait": 20}).json()
    assert failed["status"] == "failed", failed
    assert failed["error"]["type"] == "InvalidJobRecord"
    assert "parameters" in failed["error"]["message"] or "does not serve" in failed["error"]["message"]
    after = client.post("/make_fries", json={"fries_name": "b"}).json()["id"]
    assert client.get(f"/jobs/{after}", params={"wait": 20}).json()["result"] == "1 x b"


def test_decoding_stops_at_the_limit() -> None:
    record = zlib.compress(json.dumps(["f", None, ["/a"], {"text": "x" * 5000}]).encode())
    assert decode_job_data(record, {"/a"})[1] == {"text": "x" * 5000}
    with pytest.raises(InvalidJobRecord, match="more than 1000 bytes"):
        decode_job_data(record, {"/a"}, limit=1000)

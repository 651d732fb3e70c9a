"""Object storage on the Redis queue, and the store's own methods, against a real S3 HTTP API (moto's
server, in a subprocess)."""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI, MediaFile, Settings
from fasttask.errors import StorageUnavailable
from fasttask.redis.codec import records as redis_records
from fasttask.storage import AccessKeys, ObjectStore
from tests.support.apps import make_app

CONTENT = os.urandom(300_000)


def keys_in(endpoint: str, bucket: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.fixture
def serve(
    client_for: Callable[[FastTaskAPI], TestClient],
    redis_url: str,
    start_worker: Callable[..., Any],
    s3_endpoint: str,
    bucket: str,
) -> Callable[..., TestClient]:
    def make(**settings: Any) -> TestClient:
        options = {"s3_bucket": bucket, "s3_endpoint_url": s3_endpoint, "s3_inline_kb": 1, **settings}
        app = make_app(queue="redis", redis_url=redis_url, **options)
        client = client_for(app)
        start_worker(app, redis_url)
        return client

    return make


def finished(client: TestClient, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    job: dict[str, Any] = client.get(f"/jobs/{response.json()['id']}", params={"wait": 20}).json()
    assert job["status"] == "finished", job
    return job


def test_large_files_travel_through_the_bucket_not_redis(
    serve: Callable[..., TestClient], redis_url: str, s3_endpoint: str, bucket: str
) -> None:
    client = serve()
    response = client.post("/echo_file", files={"file": ("big.bin", CONTENT, "application/x-test")})
    job_id = response.json()["id"]
    with redis.Redis.from_url(redis_url) as connection:
        record = connection.hget(f"rq:job:{job_id}", "data")
        assert record is not None
        _, _, _, kwargs = json.loads(zlib.decompress(record))
        assert set(kwargs["file"]) == {"file_name", "content_type", "size", "object"}
        assert kwargs["file"]["size"] == len(CONTENT)
        assert int(connection.memory_usage(f"rq:job:{job_id}") or 0) < 10_000
    result = finished(client, response)["result"]
    assert result["url"] == f"/jobs/{job_id}/files/0"
    assert client.get(result["url"]).content == CONTENT
    part = client.get(result["url"], headers={"Range": "bytes=1000-1999"})
    assert (part.status_code, part.content) == (206, CONTENT[1000:2000])
    with redis.Redis.from_url(redis_url) as connection:
        assert int(connection.memory_usage(f"fasttask:file:{job_id}:0") or 0) < 10_000
    stored = keys_in(s3_endpoint, bucket)
    assert len(stored) == 1 and "out-0-big.bin" in stored[0], stored  # the input was deleted after the job


def test_small_files_stay_inline(serve: Callable[..., TestClient], s3_endpoint: str, bucket: str) -> None:
    client = serve(s3_inline_kb=1024)
    result = finished(client, client.post("/echo_file", files={"file": ("s.bin", CONTENT)}))["result"]
    assert client.get(result["url"]).content == CONTENT
    assert [key for key in keys_in(s3_endpoint, bucket) if "in-" in key] == []


def test_results_as_presigned_urls_when_storage_is_public(serve: Callable[..., TestClient], s3_endpoint: str) -> None:
    client = serve(s3_public_url=s3_endpoint)
    result = finished(client, client.post("/echo_file", files={"file": ("p.bin", CONTENT)}))["result"]
    assert result["url"].startswith(s3_endpoint + "/")
    assert "Signature" in result["url"] or "X-Amz-Signature" in result["url"]
    assert httpx.get(result["url"]).content == CONTENT


def test_clients_cannot_name_objects_in_the_bucket(serve: Callable[..., TestClient]) -> None:
    client = serve()
    forged = {"file": {"file_name": "x", "object": "fasttask/expires/1/other-job/in-0-secret", "size": 5}}
    response = client.post("/echo_file", json=forged)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_the_sweep_deletes_objects_once_their_job_expired(s3_endpoint: str, bucket: str) -> None:
    store = ObjectStore(Settings(s3_bucket=bucket, s3_endpoint_url=s3_endpoint))
    now = time.time()
    soon = store.key_for("job1", "a.bin", ttl_s=60, now=now)
    later = store.key_for("job2", "b.bin", ttl_s=3600, now=now)
    for key in (soon, later):
        store.client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert store.sweep(now=now) == 0
    assert store.sweep(now=now + 180) == 1
    assert keys_in(s3_endpoint, bucket) == [later]
    assert store.sweep(now=now + 4000) == 1
    assert keys_in(s3_endpoint, bucket) == []


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing in boto3's credential chain: no variables, no files, no instance metadata (never asked), and
    a fresh default session, so credentials an earlier test left in it do not count."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "BOTO_")):
            monkeypatch.delenv(name)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "BOTO_CONFIG"):
        monkeypatch.setenv(name, str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def test_a_store_with_given_keys_needs_no_credential_chain(
    s3_endpoint: str, bucket: str, no_aws_credentials: None
) -> None:
    settings = Settings(s3_bucket=bucket, s3_endpoint_url=s3_endpoint)
    keyed = ObjectStore(settings, AccessKeys("test", "test"))
    key = keyed.key_for("job1", "a b.bin", ttl_s=60)
    with MediaFile.from_bytes(CONTENT, "a b.bin") as media:
        url = keyed.put_file_with_url(key, media, ttl_s=60)
    assert url.startswith(f"{s3_endpoint}/{bucket}/fasttask/expires/")
    assert httpx.get(url).content == CONTENT
    public = ObjectStore(replace(settings, s3_public_url=s3_endpoint), AccessKeys("test", "test"))
    assert httpx.get(public.download_url(key, ttl_s=60)).content == CONTENT, "the public endpoint signs with the keys"
    chained = ObjectStore(settings)  # the AWS credential chain, empty here
    with pytest.raises(StorageUnavailable, match="store a file"), MediaFile.from_bytes(b"x", "x.bin") as media:
        chained.put_file_with_url(key, media, ttl_s=60)
    with pytest.raises(StorageUnavailable, match=r"sign a download URL.*credentials"):
        chained.download_url(key, ttl_s=60)


def test_without_storage_redis_refuses_parameters_past_its_inline_limit(
    client_for: Callable[[FastTaskAPI], TestClient], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_records, "INLINE_PARAMS_LIMIT_BYTES", 100_000)
    client = client_for(make_app(queue="redis", redis_url=redis_url))
    refused = client.post("/echo_file", files={"file": ("big.bin", os.urandom(200_000))})
    assert refused.status_code == 413
    assert "FTAPI_S3_BUCKET" in refused.json()["detail"]
    assert client.post("/echo_file", files={"file": ("small.bin", os.urandom(50_000))}).status_code == 202

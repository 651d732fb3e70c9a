"""Object storage for files (the `s3` extra): S3, MinIO or anything that speaks the S3 API.

The only module that imports boto3. Large file parameters go API process → bucket → worker, and file
results worker → bucket → client, so nothing large passes through Redis. Every object's key starts
with the minute it expires in (`fasttask/expires/<unix minute>/<job id>/...`), and a sweep run by the
live processes deletes whole expired minutes, so objects go away with their jobs without a database
of keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import JobNotFound, MissingExtra, StorageUnavailable
from .files import iter_files
from .settings import Settings

if TYPE_CHECKING:
    from .files import MediaFile

PREFIX = "fasttask/expires/"
CHUNK_BYTES = 1024 * 1024
PART_BYTES = 8 * 1024 * 1024
"""Multipart upload part size: memory held per upload stays near one part."""
MAX_PRESIGN_S = 7 * 24 * 3600
"""The longest a SigV4 presigned URL can live."""
CONNECT_TIMEOUT_S = 5
"""botocore waits 60 s by default: with storage unreachable, a request (and the loop that made it) would hang."""
READ_TIMEOUT_S = 60


def _boto3() -> Any:
    try:
        return importlib.import_module("boto3")
    except ImportError as exc:
        raise MissingExtra("FTAPI_S3_BUCKET needs boto3: pip install 'fasttask[s3]'") from exc


@dataclass(frozen=True)
class AccessKeys:
    """Credentials given outright (runpod's BUCKET_* variables, say) instead of the AWS credential chain."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str | None = None
    """None: boto3's default region applies."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str


class ObjectStore:
    """One bucket, reached with the standard AWS credential chain (AWS_ACCESS_KEY_ID, ...), or with `keys`."""

    def __init__(self, settings: Settings, keys: AccessKeys | None = None) -> None:
        assert settings.s3_bucket is not None
        boto3 = _boto3()
        config = importlib.import_module("botocore.config").Config(
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
        )
        self.bucket = settings.s3_bucket
        given: dict[str, Any] = {}
        if keys is not None:
            given = {
                "aws_access_key_id": keys.access_key_id,
                "aws_secret_access_key": keys.secret_access_key,
                "region_name": keys.region,
            }
        self.client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, config=config, **given)
        self._public = (
            boto3.client("s3", endpoint_url=settings.s3_public_url, config=config, **given)
            if settings.s3_public_url
            else None
        )
        self._transfer = importlib.import_module("boto3.s3.transfer").TransferConfig(
            multipart_threshold=PART_BYTES,
            multipart_chunksize=PART_BYTES,
            max_concurrency=2,
        )

    @staticmethod
    def key_for(job_id: str, name: str, ttl_s: float, now: float | None = None) -> str:
        expires_minute = int(((now or time.time()) + ttl_s) // 60) + 1
        return f"{PREFIX}{expires_minute}/{job_id}/{quote(name, safe='')}"

    def put_file(self, key: str, media: MediaFile) -> None:
        """Upload a file; past PART_BYTES as a multipart upload that reads its parts from disk as it sends them."""
        extra = {"ContentType": media.content_type, "ContentDisposition": _attachment(media.file_name)}
        path = media.disk_path
        with _storage_errors("store a file"):
            if path is not None:  # boto3 streams each part from the file instead of buffering parts in memory
                self.client.upload_file(path, self.bucket, key, ExtraArgs=extra, Config=self._transfer)
                return
            with media.open() as stream:
                self.client.upload_fileobj(stream, self.bucket, key, ExtraArgs=extra, Config=self._transfer)

    def head(self, key: str) -> StoredObject:
        with _storage_errors("read a file's size", key):
            answer = self.client.head_object(Bucket=self.bucket, Key=key)
        return StoredObject(key, int(answer["ContentLength"]), answer.get("ContentType", "application/octet-stream"))

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """The bytes [start, end) of an object, streamed. The request is made now, so that storage being
        away is an error here (503 before a response starts), not halfway through a download."""
        if end <= start:
            return iter(())
        with _storage_errors("read a file", key):
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
        return _chunks(body)

    def open(self, key: str) -> IO[bytes]:
        with _storage_errors("read a file", key):
            stream: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return stream

    def put_file_with_url(self, key: str, media: MediaFile, ttl_s: float) -> str:
        """Upload a file (see `put_file`) and return `download_url` for it."""
        self.put_file(key, media)
        return self.download_url(key, ttl_s)

    def download_url(self, key: str, ttl_s: float) -> str:
        """A presigned URL that downloads the object for `ttl_s` (at most MAX_PRESIGN_S): against
        FTAPI_S3_PUBLIC_URL when set, else against the endpoint this store reaches."""
        with _storage_errors("sign a download URL"):
            return _presign(self._public or self.client, self.bucket, key, ttl_s)

    def presigned_url(self, key: str, ttl_s: float) -> str | None:
        """A URL clients can download from directly, when FTAPI_S3_PUBLIC_URL says where they reach storage."""
        if self._public is None:
            return None
        return _presign(self._public, self.bucket, key, ttl_s)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            with _storage_errors("delete files"):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def sweep(self, now: float | None = None) -> int:
        """Delete every object whose expiry minute has passed; returns how many were deleted."""
        current = int((now or time.time()) // 60)
        paginator = self.client.get_paginator("list_objects_v2")
        deleted = 0
        with _storage_errors("list expired files"):
            expired = [
                prefix["Prefix"]
                for page in paginator.paginate(Bucket=self.bucket, Prefix=PREFIX, Delimiter="/")
                for prefix in page.get("CommonPrefixes", [])
                if _minute(prefix["Prefix"]) <= current
            ]
        for prefix in expired:
            with _storage_errors("list expired files"):
                keys = [
                    item["Key"]
                    for listing in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                    for item in listing.get("Contents", [])
                ]
            self.delete(keys)
            deleted += len(keys)
        return deleted


async def upload_large_files(
    store: ObjectStore, job_id: str, params: dict[str, Any], inline_bytes: float, ttl_s: float
) -> None:
    """A job's input files past `inline_bytes` go to the bucket (kept `ttl_s`); the job carries their keys."""
    for index, media in enumerate(f for value in params.values() for f in iter_files(value)):
        if media.size <= inline_bytes or media.object_key is not None:
            continue
        key = store.key_for(job_id, f"in-{index}-{media.file_name}", ttl_s)
        await asyncio.to_thread(store.put_file, key, media)
        media.object_key = key


def _presign(client: Any, bucket: str, key: str, ttl_s: float) -> str:
    expires = max(1, min(int(ttl_s), MAX_PRESIGN_S))
    url: str = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
    return url


def _minute(prefix: str) -> float:
    """The expiry minute a key prefix names; infinity (never expired) for anything else in the folder."""
    minute = prefix[len(PREFIX) :].rstrip("/")
    return int(minute) if minute.isdigit() else float("inf")


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        with _storage_errors("read a file"):
            yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


@contextlib.contextmanager
def _storage_errors(action: str, key: str | None = None) -> Iterator[None]:
    """botocore's errors as fasttask's: a missing object is 404, anything else storage does is 503."""
    exceptions = importlib.import_module("botocore.exceptions")
    upload_errors = importlib.import_module("boto3.exceptions").Boto3Error  # S3UploadFailedError wraps the cause
    try:
        yield
    except exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if key is not None and code in ("NoSuchKey", "404", "NotFound"):
            raise JobNotFound(key) from None
        raise StorageUnavailable(
            f"object storage refused to {action}: {code} {error.get('Message', '')}".strip()
        ) from exc
    except (exceptions.BotoCoreError, upload_errors, OSError) as exc:
        raise StorageUnavailable(f"object storage is unreachable ({action}): {exc}") from exc


def _attachment(file_name: str) -> str:
    return f"attachment; filename*=UTF-8''{quote(file_name, safe='')}"

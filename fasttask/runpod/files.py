"""Where runpod mode's file results go: inline as base64, or into a bucket (ours or runpod's) as URLs.

No runpod import here: only the bucket settings runpod documents (BUCKET_* variables) are read, and the
bucket is reached through `fasttask.storage`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ..files import MediaFile, close_files
from ..settings import Settings
from ..storage import AccessKeys, ObjectStore

logger = logging.getLogger("fasttask.runpod")

RUNPOD_BUCKET_VARIABLES = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")


class ResultFiles:
    """The files a job's result holds. The result is built with an empty dict per file; `resolve` (blocking)
    fills each in: `{file_name, content_type, content}` inline, or `{file_name, content_type, size, url}`
    once uploaded to the bucket."""

    def __init__(self, store: ObjectStore | None, job_id: str, ttl_s: float) -> None:
        self.objects = store
        self.job_id = job_id
        self.ttl_s = ttl_s
        self.pending: list[tuple[MediaFile, dict[str, Any]]] = []
        self.uploaded = 0
        self._files: list[MediaFile] = []
        self._lock = threading.Lock()

    def keep(self, media: MediaFile) -> dict[str, Any]:
        placeholder: dict[str, Any] = {}
        with self._lock:
            self.pending.append((media, placeholder))
            self._files.append(media)
        return placeholder

    def resolve(self) -> None:
        with self._lock:
            batch, self.pending = self.pending, []
        for media, placeholder in batch:
            placeholder.update(self._describe(media))

    def _describe(self, media: MediaFile) -> dict[str, Any]:
        store = self.objects
        if store is None:
            return media.to_dict()
        key = store.key_for(self.job_id or "job", f"out-{self.uploaded}-{media.file_name}", self.ttl_s)
        self.uploaded += 1
        url = store.put_file_with_url(key, media, self.ttl_s)
        return {"file_name": media.file_name, "content_type": media.content_type, "size": media.size, "url": url}

    def close(self) -> None:
        close_files(self._files)


def result_store(settings: Settings, environ: Mapping[str, str] | None = None) -> ObjectStore | None:
    """Where file results go: FTAPI_S3_BUCKET (with FTAPI_S3_ENDPOINT_URL and the standard AWS credentials),
    else runpod's BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY with BUCKET_NAME, else
    nowhere (files travel inline as base64)."""
    env = os.environ if environ is None else environ
    if settings.s3_bucket:
        return ObjectStore(settings)
    endpoint, access_key_id, secret = (env.get(name) for name in RUNPOD_BUCKET_VARIABLES)
    if not (endpoint and access_key_id and secret):
        return None
    bucket = env.get("BUCKET_NAME")
    if not bucket:
        logger.warning("BUCKET_ENDPOINT_URL is set but BUCKET_NAME is not: file results stay inline (base64)")
        return None
    keys = AccessKeys(access_key_id, secret, _region_of(endpoint))
    return ObjectStore(Settings(s3_bucket=bucket, s3_endpoint_url=endpoint), keys)


def _region_of(endpoint_url: str) -> str | None:
    """The region in an AWS or DigitalOcean Spaces endpoint URL (None: boto3's default applies)."""
    host = urlparse(endpoint_url).hostname or ""
    aws = re.search(r"(?:^|\.)s3[.-]([a-z0-9-]+)\.amazonaws\.com$", host)
    if aws:
        return aws.group(1)
    if host.endswith(".digitaloceanspaces.com"):
        return host.split(".")[-3]
    return None

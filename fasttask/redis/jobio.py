"""What a running job reads and writes besides its state: inputs from the bucket, progress, outputs and
result files."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from redis.exceptions import RedisError

from ..errors import ConfigError, PayloadTooLarge, size_text
from ..files import MediaFile, iter_files
from ..storage import ObjectStore
from ..tasks import TaskDef
from . import keys as layout

logger = logging.getLogger("fasttask.worker")

PROGRESS_INTERVAL_S = 0.1
"""Progress reaches Redis at most this often per job; the last report always lands."""

INLINE_RESULT_LIMIT_BYTES = 16 * 1024 * 1024
"""Largest result file kept inside Redis when no object storage is configured."""


@dataclass(eq=False)
class Claimed:
    """A job this worker took: everything needed to run and finish it."""

    job_id: str
    queue: str
    task: TaskDef
    params: dict[str, Any]
    execution_id: str
    started_at: datetime
    result_ttl: int
    timeout_s: float | None
    retries: int
    failures: int
    stop: threading.Event = field(default_factory=threading.Event)
    input_objects: list[str] = field(default_factory=list)
    requeued: bool = False
    outputs: int = 0
    files: int = 0
    pending_progress: tuple[float, str | None] | None = None
    progress_written_at: float = 0.0
    last_progress: tuple[float, str | None] = (0.0, None)
    unreadable: str | None = None
    """Why the job record's parameters could not be read (the job then fails without running)."""

    @property
    def member(self) -> str:
        return f"{self.job_id}:{self.execution_id}"


class JobIO:
    """Moves a job's data between the task and Redis or the bucket."""

    def __init__(self, connection: redis.Redis, store: ObjectStore | None) -> None:
        self.redis = connection
        self.store = store

    def forget_inputs(self, claimed: Claimed) -> None:
        """The job is over (not re-queued): its input files in the bucket are no longer needed."""
        if self.store is not None and claimed.input_objects and not claimed.requeued:
            try:
                self.store.delete(claimed.input_objects)
            except Exception as exc:  # the sweep deletes them when they expire anyway
                logger.warning("could not delete the inputs of job %s: %s", claimed.job_id, exc)

    def fetch_inputs(self, claimed: Claimed, params: dict[str, Any]) -> None:
        """Download the file parameters the API process put in the bucket."""
        for media in (f for value in params.values() for f in iter_files(value)):
            if media.object_key is None:
                continue
            if self.store is None:
                raise ConfigError("the job's files are in object storage: give this worker FTAPI_S3_BUCKET")
            claimed.input_objects.append(media.object_key)
            with self.store.open(media.object_key) as stream:
                downloaded = MediaFile.from_stream(stream, media.file_name, media.content_type)
            media.take_content(downloaded)

    def report(self, claimed: Claimed, progress: float, message: str | None) -> None:
        claimed.pending_progress = (progress, message)
        if time.monotonic() - claimed.progress_written_at >= PROGRESS_INTERVAL_S:
            self.flush_progress(claimed)

    def flush_progress(self, claimed: Claimed) -> None:
        """Write the job's latest progress report if it has not reached Redis yet."""
        pending = claimed.pending_progress
        if pending is None:
            return
        claimed.pending_progress = None
        claimed.last_progress = pending
        claimed.progress_written_at = time.monotonic()
        items = [layout.F_PROGRESS, repr(pending[0])]
        if pending[1] is not None:
            items += [layout.F_MESSAGE, pending[1]]
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(layout.job_key(claimed.job_id), items=items)
            pipe.publish(layout.EVENTS_CHANNEL, claimed.job_id)
            pipe.execute()
        except RedisError as exc:
            logger.warning("progress of job %s not written: %s", claimed.job_id, exc)
            claimed.pending_progress = claimed.pending_progress or pending

    def output_sink(self, claimed: Claimed) -> Callable[[Any], None]:
        def push(value: Any) -> None:
            claimed.outputs += 1
            pipe = self.redis.pipeline(transaction=False)
            pipe.rpush(layout.outputs_key(claimed.job_id), json.dumps(value, separators=(",", ":")))
            pipe.publish(layout.EVENTS_CHANNEL, claimed.job_id)
            pipe.execute()

        return push

    def file_store(self, claimed: Claimed, stored: list[MediaFile]) -> Callable[[MediaFile], dict[str, Any]]:
        def store(media: MediaFile) -> dict[str, Any]:
            stored.append(media)
            index = claimed.files
            claimed.files += 1
            key = layout.file_key(claimed.job_id, index)
            items: list[str | bytes] = ["file_name", media.file_name, "content_type", media.content_type]
            url = f"/jobs/{claimed.job_id}/files/{index}"
            if self.store is not None:
                name = f"out-{index}-{media.file_name}"
                object_key = self.store.key_for(claimed.job_id, name, claimed.result_ttl)
                self.store.put_file(object_key, media)
                items += ["size", str(media.size), "object", object_key]
                url = self.store.presigned_url(object_key, claimed.result_ttl) or url
            elif media.size > INLINE_RESULT_LIMIT_BYTES:
                raise PayloadTooLarge(
                    f"the result file {media.file_name!r} takes {size_text(media.size)}; without object "
                    f"storage (FTAPI_S3_BUCKET) results carry at most {size_text(INLINE_RESULT_LIMIT_BYTES)}"
                )
            else:
                items += ["content", media.to_bytes()]
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, items=items)
            pipe.expire(key, claimed.result_ttl)
            pipe.execute()
            return {"file_name": media.file_name, "content_type": media.content_type, "size": media.size, "url": url}

        return store

"""What a running job reads and writes besides its state: inputs from the bucket, progress, outputs and
result files."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from ..errors import ConfigError, PayloadTooLarge, size_text
from ..files import MediaFile, iter_files
from ..logs import log_job_error
from ..progress import ProgressThrottle, Report
from ..runner import CallJob
from ..storage import ObjectStore
from ..tasks import TaskDef
from . import keys as layout
from .codec import ClaimedRecord, InvalidJobRecord

logger = logging.getLogger("fasttask.worker")

PROGRESS_INTERVAL_S = 0.1
"""Progress reaches Redis at most this often per job; the last report always lands."""

INLINE_RESULT_LIMIT_BYTES = 16 * 1024 * 1024
"""Largest result file kept inside Redis when no object storage is configured."""


@dataclass(eq=False)
class Claimed:
    """A job this worker took: its record as claimed, and what running and finishing it keeps track of."""

    record: ClaimedRecord
    task: TaskDef
    result_ttl: int
    stop: threading.Event = field(default_factory=threading.Event)
    throttle: ProgressThrottle | None = None
    """The job's progress on its way to Redis (None when the task takes no `JobProgress`)."""
    input_objects: list[str] = field(default_factory=list)
    requeued: bool = False
    outputs: int = 0
    files: int = 0

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def queue(self) -> str:
        return self.record.queue

    @property
    def member(self) -> str:
        """The job's entry in RQ's StartedJobRegistry."""
        return self.record.member

    def take_progress(self, finished: bool) -> Report | None:
        """The report to write with the job's end (see `ending_report`); later reports are dropped."""
        if self.throttle is None:
            return ending_report(None, (0.0, None), finished)
        pending = self.throttle.take()
        self.throttle.close()
        return ending_report(pending, self.throttle.last, finished)


def ending_report(pending: Report | None, last: Report, finished: bool) -> Report | None:
    """The progress written with a job's end: a finished job reads 1.0 with its latest message; another keeps
    the report still waiting, if any (`last` was written already)."""
    if finished:
        return (1.0, (pending or last)[1])
    return pending


class JobIO:
    """Moves a job's data between the task and Redis or the bucket."""

    def __init__(self, connection: redis.Redis, store: ObjectStore | None) -> None:
        self.redis = connection
        self.store = store

    def prepare(self, claimed: Claimed, job: CallJob, may_retry: bool) -> bool:
        """The job's parameters, decoded from its record (validated once, by the API that took the job) and
        with their files downloaded from the bucket. A job that cannot have them fails here (logged, and marked
        `retrying` when `may_retry` and its record could be read): then False."""
        try:
            if claimed.record.unreadable is not None:
                raise InvalidJobRecord(claimed.record.unreadable)
            job.params = claimed.task.decode_params(claimed.record.params)
            self.fetch_inputs(claimed, job.params)
        except Exception as exc:
            job.error = exc
            job.retrying = may_retry and claimed.record.unreadable is None
            log_job_error(claimed.job_id, claimed.task.path, exc, retrying=job.retrying)
            return False
        return True

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

    def write_progress(self, claimed: Claimed, progress: float, message: str | None) -> None:
        """Deliver a progress report to the job's record (a `ProgressThrottle`'s delivery: a Redis error
        keeps the report waiting for the next one)."""
        items = [layout.F_PROGRESS, repr(progress)]
        if message is not None:
            items += [layout.F_MESSAGE, message]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(layout.job_key(claimed.job_id), items=items)
        pipe.publish(layout.EVENTS_CHANNEL, claimed.job_id)
        pipe.execute()

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

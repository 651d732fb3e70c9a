"""RQ's job record: the job hash a submit writes (`job_record_fields`), the parameters a claim reads out of
it (`decode_job_data`), RQ's result encodings and timestamps, and the job JSON read back (`record_from_redis`)."""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections.abc import Collection
from datetime import datetime, timezone
from typing import Any

import redis
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.job import Retry
from rq.serializers import JSONSerializer

from ...errors import PayloadTooLarge, size_text
from ...files import iter_files
from ...jobs import JobRecord, JobStatus
from ...tasks import TaskDef
from .. import keys as layout

RECORD_FIELDS = (
    "status",
    "created_at",
    "started_at",
    "ended_at",
    layout.F_ENDPOINT,
    layout.F_PROGRESS,
    layout.F_MESSAGE,
    layout.F_ERROR,
    layout.F_OUTCOME,
    layout.F_WEBHOOK,
)
"""The job hash's fields a JobRecord is made of, in this order."""
READ_FIELDS = (*RECORD_FIELDS, layout.F_RESULT)
"""What `GET /jobs/{id}` reads of the job hash (one HMGET): RECORD_FIELDS, then the result the hash keeps."""
_KEPT, _ERROR = len(RECORD_FIELDS), RECORD_FIELDS.index(layout.F_ERROR)

RESULT_KEPT_LIMIT_BYTES = 4096
"""A result whose JSON is at most this long is written to the job hash too (`ft_result`): a read is then one
command, not two; a longer one is stored once, in RQ's result stream, and read from there."""

_STATUS = {
    "queued": JobStatus.QUEUED,
    "deferred": JobStatus.QUEUED,
    "scheduled": JobStatus.QUEUED,
    "created": JobStatus.QUEUED,
    "started": JobStatus.RUNNING,
    "finished": JobStatus.FINISHED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.CANCELLED,
    "stopped": JobStatus.CANCELLED,
}

JOB_DATA_LIMIT_BYTES = 16 * 1024 * 1024
"""Largest job parameters (files included, as base64) inside a job record, measured uncompressed: the API
refuses more, and a worker fails a record that decompresses to more instead of running out of memory."""

INLINE_PARAMS_LIMIT_BYTES = JOB_DATA_LIMIT_BYTES
"""What the API lets into a job record (the same bound; a separate name so that tests can lower it)."""

RESULT_TYPE_SUCCESSFUL = 1
RESULT_TYPE_FAILED = 2
"""RQ's `Result.Type` values in a result stream entry's `type` field."""
_SUCCESSFUL = str(RESULT_TYPE_SUCCESSFUL).encode()

ABANDONED = {
    "type": "AbandonedJobError",
    "message": "the worker running this job was lost (killed or cut off from Redis) and no retries were left",
}


def rq_timestamp(moment: datetime) -> str:
    """RQ's timestamp format (UTC, microseconds, `Z`)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rq_timestamp(raw: bytes | None) -> datetime | None:
    if not raw:
        return None
    text = raw.decode()
    if text.endswith("Z"):
        text = text[:-1]
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def needs_result_entry(values: list[bytes | None]) -> bool:
    """Whether an HMGET of READ_FIELDS needs the newest result stream entry too: a finished job whose result the
    hash does not keep (too long, or ended by RQ's own code), or a failure that fasttask did not record."""
    status = values[0]
    if status == b"finished":
        return not values[_KEPT]
    return status == b"failed" and not values[_ERROR]


def record_from_redis(
    job_id: str, values: list[bytes | None], result_entry: dict[bytes, bytes] | None
) -> JobRecord | None:
    """A JobRecord from an HMGET of READ_FIELDS (or of RECORD_FIELDS) and the newest entry of the job's result
    stream (None where `needs_result_entry` said no)."""
    raw_status, created, started, ended, endpoint, progress, message, error, outcome, webhook, *kept = values
    if raw_status is None:
        return None
    status = _STATUS.get(raw_status.decode(), JobStatus.QUEUED)
    if status is JobStatus.FAILED and outcome == b"timeout":
        status = JobStatus.TIMEOUT
    record = JobRecord(
        id=job_id,
        endpoint=endpoint.decode() if endpoint else "",
        status=status,
        progress=float(progress) if progress else 0.0,
        message=message.decode() if message else None,
        created_at=parse_rq_timestamp(created) or datetime.now(timezone.utc),
        started_at=parse_rq_timestamp(started),
        finished_at=parse_rq_timestamp(ended) if status.is_final else None,
    )
    if error:
        record.error = json.loads(error)
    if webhook:
        record.webhook = json.loads(webhook)
    if status is JobStatus.FINISHED:
        record.progress = 1.0
        if kept and kept[0]:
            record.result = json.loads(kept[0])
        elif result_entry is not None and result_entry.get(b"type") == _SUCCESSFUL:
            encoded = result_entry.get(b"return_value")
            record.result = json.loads(base64.b64decode(encoded)) if encoded else None
    elif status is JobStatus.FAILED and record.error is None:
        record.error = _error_from_result(result_entry)
    return record


def _error_from_result(entry: dict[bytes, bytes] | None) -> dict[str, str]:
    """A failure fasttask did not record itself: RQ's cleanup of an abandoned job, most often."""
    text = ""
    if entry is not None and entry.get(b"exc_string"):
        try:
            text = zlib.decompress(base64.b64decode(entry[b"exc_string"])).decode(errors="replace")
        except (ValueError, zlib.error):
            text = ""
    if not text or "AbandonedJobError" in text:
        return dict(ABANDONED)
    last_line = text.strip().splitlines()[-1]
    kind, _, message = last_line.partition(": ")
    return {"type": kind or "Error", "message": message or last_line}


def encode_result(value: Any) -> bytes:
    """RQ's encoding of a return value in its result stream: base64 of the JSON serializer's bytes."""
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode())


def encode_exception_text(text: str) -> bytes:
    """RQ's encoding of `exc_string`: base64 of zlib of the text."""
    return base64.b64encode(zlib.compress(text.encode()))


class InvalidJobRecord(ValueError):
    """A job record whose parameters cannot be read: corrupt, or larger than JOB_DATA_LIMIT_BYTES."""


def decode_job_data(
    raw: bytes | None, served: Collection[str], limit: int = JOB_DATA_LIMIT_BYTES
) -> tuple[str, dict[str, Any]]:
    """The task path (one of `served`) and keyword arguments in RQ's `data` field (zlib of the JSON job
    tuple), decompressing at most `limit` bytes: a small record must not unpack into gigabytes."""
    unpacker = zlib.decompressobj()
    try:
        text = unpacker.decompress(raw or b"", limit + 1)
    except zlib.error as exc:
        raise InvalidJobRecord(f"the job's parameters are not compressed data ({exc})") from None
    if len(text) > limit or unpacker.unconsumed_tail:
        raise InvalidJobRecord(f"the job's parameters decompress to more than {limit} bytes")
    if not unpacker.eof:
        raise InvalidJobRecord("the job's parameters are truncated")
    try:
        _, _, args, kwargs = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise InvalidJobRecord("the job's parameters are not the JSON of an RQ job") from None
    if not (isinstance(args, list) and args and isinstance(args[0], str) and isinstance(kwargs, dict)):
        raise InvalidJobRecord("the job's parameters are not the JSON of an RQ job")
    if args[0] not in served:
        raise InvalidJobRecord(f"the job is for {args[0][:100]!r}, which this worker does not serve")
    return args[0], kwargs


# -- the job record: written by a submit, read by a claim -----------------------------------------------


def job_record_fields(
    task: TaskDef, queue: str, record: JobRecord, params: dict[str, Any], connection: redis.Redis
) -> dict[str, Any]:
    """The job hash of a new job: RQ's own record (`Job.create(...).to_dict()`, JSON serializer, the task's
    path as the one argument of `fasttask.worker.execute`, its parameters as keyword arguments) plus the
    `ft_*` fields. Parameters past INLINE_PARAMS_LIMIT_BYTES are refused (PayloadTooLarge)."""
    inline = sum(media.size for value in params.values() for media in iter_files(value) if not media.object_key)
    if inline * 4 // 3 > INLINE_PARAMS_LIMIT_BYTES:  # too large as base64 already: refused before encoding
        raise _too_large(inline * 4 // 3)
    rq_job = RQJob.create(
        layout.TASK_FUNCTION,
        args=[task.path],
        kwargs=task.dump_params(params),
        connection=connection,
        id=record.id,
        result_ttl=math.ceil(task.result_ttl_s),
        timeout=math.ceil(task.timeout_s) if task.timeout_s is not None else -1,
        retry=Retry(max=max(1, task.retries)),  # a job whose worker dies runs again at least once
        serializer=JSONSerializer,
        origin=queue,
        description=task.path,
        status=RQStatus.QUEUED,
    )
    rq_job.created_at = record.created_at.replace(tzinfo=None)
    rq_job.enqueued_at = rq_job.created_at
    size = len(rq_job.data)  # the parameters as a worker unpacks them (RQ's JSON before zlib; kept for to_dict)
    if size > INLINE_PARAMS_LIMIT_BYTES:
        raise _too_large(size)
    fields = rq_job.to_dict()
    fields["status"] = RQStatus.QUEUED.value
    fields[layout.F_ENDPOINT] = task.path
    if task.timeout_s is not None:
        fields[layout.F_TIMEOUT] = repr(task.timeout_s)
    fields[layout.F_RETRIES] = task.retries
    return fields


def _too_large(size: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the job's parameters take {size_text(size)}; the Redis queue carries at most "
        f"{size_text(INLINE_PARAMS_LIMIT_BYTES)} per job (uncompressed): configure object storage "
        "(FTAPI_S3_BUCKET) for large files"
    )

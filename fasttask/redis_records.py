"""Reading fasttask's job JSON out of RQ's job hash and result stream (no Redis client needed here)."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Collection
from datetime import datetime, timezone
from typing import Any

from . import redis_layout as layout
from .jobs import JobRecord, JobStatus

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
)
"""What `GET /jobs/{id}` reads of the job hash, in this order (one HMGET)."""

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

RESULT_SUCCESSFUL = b"1"

JOB_DATA_LIMIT_BYTES = 16 * 1024 * 1024
"""Largest job parameters (files included, as base64) inside a job record, measured uncompressed: the API
refuses more, and a worker fails a record that decompresses to more instead of running out of memory."""

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


def record_from_redis(
    job_id: str, values: list[bytes | None], result_entry: dict[bytes, bytes] | None
) -> JobRecord | None:
    """A JobRecord from an HMGET of RECORD_FIELDS and the newest entry of the job's result stream."""
    raw_status, created, started, ended, endpoint, progress, message, error, outcome = values
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
    if status is JobStatus.FINISHED:
        record.progress = 1.0
        if result_entry is not None and result_entry.get(b"type") == RESULT_SUCCESSFUL:
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

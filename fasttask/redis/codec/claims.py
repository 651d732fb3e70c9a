"""A job's run in RQ's formats: the claim scripts' replies read (`decode_claim`, `decode_batch_claim`), and a
job's end or return to its queue written (`finished`, `failed`, `finish_arguments`, `requeue_arguments`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import keys as layout
from .records import (
    RESULT_KEPT_LIMIT_BYTES,
    RESULT_TYPE_FAILED,
    RESULT_TYPE_SUCCESSFUL,
    InvalidJobRecord,
    decode_job_data,
    encode_exception_text,
    parse_rq_timestamp,
    rq_timestamp,
)


@dataclass(frozen=True)
class ClaimedRecord:
    """A job as the CLAIM script hands it over: where it came from, its task call and its RQ bookkeeping."""

    queue: str
    job_id: str
    path: str
    params: dict[str, Any]
    unreadable: str | None
    """Why the parameters could not be read (then `params` is empty and `path` the queue's task)."""
    execution_id: str
    started_at: datetime
    queued_at: datetime | None
    result_ttl: int | None
    timeout_s: float | None
    retries: int
    failures: int

    @property
    def member(self) -> str:
        """The job's entry in RQ's StartedJobRegistry: its id and this execution's."""
        return f"{self.job_id}:{self.execution_id}"


def decode_claim(reply: Any, served: Collection[str], path_of_queue: dict[str, str]) -> ClaimedRecord | None:
    """The CLAIM script's reply (`false`, or the queue, the job id and the job hash as a flat list) read with
    the paths this worker serves; a record whose parameters cannot be read comes back with `unreadable` set."""
    if not reply:
        return None
    return _claimed_record(reply, served, path_of_queue)


@dataclass(frozen=True)
class BatchClaim:
    """The CLAIM_BATCH script's reply: the jobs it took, or why it took none."""

    depth: int
    """The queue's length before the claim."""
    oldest_queued_at: datetime | None
    """When nothing was taken: when the oldest queued job was queued (None for an empty queue)."""
    jobs: list[ClaimedRecord]


def decode_batch_claim(reply: Any, served: Collection[str], path_of_queue: dict[str, str]) -> BatchClaim:
    depth, oldest, *taken = reply
    return BatchClaim(
        int(depth),
        parse_rq_timestamp(oldest) if oldest else None,
        [_claimed_record(job, served, path_of_queue) for job in taken],
    )


def _claimed_record(reply: Any, served: Collection[str], path_of_queue: dict[str, str]) -> ClaimedRecord:
    queue, job_id, flat = reply[0].decode(), reply[1].decode(), reply[2]
    fields = dict(zip(flat[0::2], flat[1::2], strict=True))
    unreadable: str | None = None
    try:
        path, params = decode_job_data(fields.get(b"data"), served)
    except InvalidJobRecord as exc:
        path, params, unreadable = path_of_queue[queue], {}, str(exc)
    started = parse_rq_timestamp(fields.get(b"started_at"))
    assert started is not None  # the CLAIM script writes it
    timeout = fields.get(layout.F_TIMEOUT.encode())
    ttl = fields.get(b"result_ttl")
    return ClaimedRecord(
        queue=queue,
        job_id=job_id,
        path=path,
        params=params,
        unreadable=unreadable,
        execution_id=fields[layout.F_EXECUTION.encode()].decode(),
        started_at=started,
        queued_at=parse_rq_timestamp(fields.get(b"enqueued_at") or fields.get(b"created_at")),
        result_ttl=int(ttl) if ttl else None,
        timeout_s=float(timeout) if timeout else None,
        retries=int(fields.get(layout.F_RETRIES.encode()) or 0),
        failures=int(fields.get(layout.F_FAILURES.encode()) or 0),
    )


# -- a job's end: RQ's result stream entry and fasttask's fields ------------------------------------------


@dataclass(frozen=True)
class Ending:
    """How the FINISH script records a job's end."""

    rq_status: str
    """`finished` or `failed` (a timeout is RQ's `failed`, with `ft_outcome` saying which)."""
    result_type: int
    payload_field: str
    """`return_value` or `exc_string`: the result stream entry's field carrying the payload."""
    payload: bytes
    fields: dict[str, str]
    """`ft_*` fields written with the status."""


def finished(value: Any) -> Ending:
    text = json.dumps(value, separators=(",", ":"))  # ASCII (the rest escaped): its length is its size
    kept = text if len(text) <= RESULT_KEPT_LIMIT_BYTES else ""  # "" too: no earlier run's result stays
    payload = base64.b64encode(text.encode())
    return Ending("finished", RESULT_TYPE_SUCCESSFUL, "return_value", payload, {layout.F_RESULT: kept})


def failed(error: dict[str, Any], timed_out: bool = False) -> Ending:
    """`error` as fasttask shows it (`type`, `message`, `traceback` in debug mode)."""
    fields = {layout.F_ERROR: json.dumps(error)}
    if timed_out:
        fields[layout.F_OUTCOME] = "timeout"
    text = error.get("traceback") or f"{error['type']}: {error['message']}"
    return Ending("failed", RESULT_TYPE_FAILED, "exc_string", encode_exception_text(text), fields)


def finish_arguments(
    job: ClaimedRecord,
    result_ttl: int,
    ending: Ending,
    report: tuple[float, str | None] | None,
    worker_name: str,
    now: datetime,
    has_outputs: bool,
) -> tuple[list[str], list[Any]]:
    """The FINISH script's keys and arguments that end a claimed job as `ending` says, with the job's last
    progress `report` (if any) written with it."""
    extra: dict[str, Any] = dict(ending.fields)
    if report is not None:
        extra[layout.F_PROGRESS] = repr(report[0])
        if report[1] is not None:
            extra[layout.F_MESSAGE] = report[1]
    registry = layout.finished_registry_key if ending.rq_status == "finished" else layout.failed_registry_key
    keys = [
        layout.job_key(job.job_id),
        layout.started_registry_key(job.queue),
        layout.results_key(job.job_id),
        registry(job.queue),
        layout.outputs_key(job.job_id),
    ]
    args = [
        job.member,
        ending.rq_status,
        rq_timestamp(now),
        result_ttl,
        now.timestamp() + result_ttl,  # to the microsecond: GET /jobs pages on it
        job.job_id,
        ending.result_type,
        ending.payload_field,
        ending.payload,
        worker_name,
        job.execution_id,
        job.started_at.timestamp(),
        now.timestamp(),
        "1" if has_outputs else "0",
        *(part for pair in extra.items() for part in pair),
    ]
    return keys, args


def requeue_arguments(job: ClaimedRecord, now: datetime, count_failure: bool) -> tuple[list[str], list[Any]]:
    """The REQUEUE script's keys and arguments that put a claimed job back in its queue."""
    keys = [layout.job_key(job.job_id), layout.started_registry_key(job.queue), layout.queue_key(job.queue)]
    return keys, [job.member, job.job_id, layout.queued_channel(job.queue), rq_timestamp(now), int(count_failure)]

"""A task submit's own headers: `Idempotency-Key` (one job per key and endpoint) and `Prefer: wait=S` (the
answer held until the job is final). docs/http-api.md says what a client sees; the brokers keep the keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Scope

from ..brokers import Broker
from ..errors import JobNotFound
from ..files import close_files
from ..idempotency import KeyedJob, check_same, fingerprint, read_key, read_prefer_wait
from ..jobs import JobRecord
from ..tasks import TaskDef
from ..webhooks import WebhookSpec

ReadParams = Callable[[], Awaitable[tuple[dict[str, Any], WebhookSpec | None]]]
"""Reads a submit's parameters, and the webhook its envelope asks for (not a parameter: not fingerprinted)."""


def submit_headers(scope: Scope) -> tuple[bytes | None, float | None]:
    """The raw Idempotency-Key and the seconds of `Prefer: wait`, in one pass over the headers (most submits
    carry neither, and pay only this loop)."""
    key: bytes | None = None
    wait: float | None = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            key = value
        elif name == b"prefer" and wait is None:
            wait = read_prefer_wait(value)
    return key, wait


async def submit_with_key(
    broker: Broker, task: TaskDef, raw_key: bytes, scope: Scope, read: ReadParams
) -> tuple[JobRecord, bool]:
    """The job of a submit with an Idempotency-Key, and whether it was made before (a replay).

    The key is marked in flight before the parameters are read (a repeat meanwhile is 409), then the job is
    made and remembered under the key in one step of the broker, so two racing requests make one job. A key
    whose job is gone (past its result_ttl) is forgotten and makes a new one."""
    key = read_key(raw_key)
    quick = _quick(task, scope)
    prior = await broker.hold_key(task, key, quick)
    try:
        params, webhook = await read()
    except BaseException:
        if prior is None:
            await broker.release_key(task, key)
        raise
    try:
        mark = await fingerprint(task, params)
        for _ in range(2):  # a second round only after forgetting a key whose job was gone
            if prior is None:
                made = await _submit(broker, task, params, key, mark, webhook)
                if isinstance(made, JobRecord):
                    return made, False
                prior = made
            check_same(prior, mark, task.path)
            try:
                record = await broker.get(prior.job_id)
            except JobNotFound:
                await broker.release_key(task, key, prior)
                prior = await broker.hold_key(task, key, quick)
                continue
            close_files(params.values())
            return record, True
        raise JobNotFound(prior.job_id if prior is not None else key)
    except BaseException:
        close_files(params.values())
        raise


QUICK_BODY_BYTES = 64 * 1024
"""A body up to this size, of a task without files, is read at once: its request is `quick` for the broker."""


def _quick(task: TaskDef, scope: Scope) -> bool:
    """Whether reading the parameters takes no time worth a 409 (see `Broker.hold_key`): no files to upload
    or download, and a small body whose size is known."""
    if task.file_params:
        return False
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) <= QUICK_BODY_BYTES
    return bool(scope["method"] == "GET")  # no body at all


async def _submit(
    broker: Broker, task: TaskDef, params: dict[str, Any], key: str, mark: str, webhook: WebhookSpec | None
) -> JobRecord | KeyedJob:
    try:
        return await broker.submit_keyed(task, params, key, mark, webhook)
    except BaseException:
        await broker.release_key(task, key)  # refused (429, 503, 413): a retry with the key must get through
        raise

"""What a task submit's `Idempotency-Key` and `Prefer: wait` headers mean, apart from any queue or HTTP code.

A key names one job of one endpoint. Two submits with the same key are the same request when their
parameters are equal as validated values (defaults filled in, files by their bytes), so the fingerprint is a
digest of the parameters as the job record would dump them, with each file's content replaced by its
SHA-256. How the body was encoded, and the order of its fields, cannot change it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import IdempotencyKeyReused, IdempotentRequestInFlight, InvalidIdempotencyKey
from .files import FILE_DIGESTS, iter_files
from .tasks import TaskDef

MAX_KEY_CHARS = 255
_KEY = re.compile(f"[!-~]{{1,{MAX_KEY_CHARS}}}")
MAX_PREFER_WAIT_S = 60.0
"""`Prefer: wait=S` above this counts as this (the same bound as `?wait=`)."""
PENDING_S = 60.0
"""How long a key stays marked as in flight for a request that has not made its job yet. The request clears
the mark itself when it fails; this bound only matters when its process dies meanwhile."""
KEY_MARGIN_S = 24 * 3600.0
"""A key outlives its job's result_ttl and timeout by this much: the time the job may wait for a worker."""


@dataclass(frozen=True)
class KeyedJob:
    """The job an Idempotency-Key made, and the fingerprint of the parameters it was made with."""

    job_id: str
    fingerprint: str

    def encode(self) -> str:
        return f"{self.fingerprint} {self.job_id}"

    @classmethod
    def decode(cls, raw: bytes | str) -> KeyedJob:
        text = raw.decode() if isinstance(raw, bytes) else raw
        fingerprint, _, job_id = text.partition(" ")
        return cls(job_id, fingerprint)


def read_key(raw: bytes) -> str:
    """The key of an `Idempotency-Key` header: quotes of a quoted string removed, else 400."""
    text = raw.decode("latin-1").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if _KEY.fullmatch(text) is None:
        raise InvalidIdempotencyKey("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return text


def read_prefer_wait(raw: bytes) -> float | None:
    """The seconds of a `Prefer` header's `wait=S` preference (RFC 7240), at most 60; None when there is none
    or its value cannot be read (then the header is ignored, as the RFC asks)."""
    for preference in raw.split(b","):
        name, _, value = preference.partition(b";")[0].partition(b"=")
        if name.strip().lower() != b"wait":
            continue
        try:
            seconds = float(value.strip().strip(b'"'))
        except ValueError:
            return None
        if not math.isfinite(seconds) or seconds < 0:
            return None
        return min(seconds, MAX_PREFER_WAIT_S)
    return None


def key_ttl_s(task: TaskDef) -> float:
    """How long a key is remembered: at least as long as its job can be read."""
    return task.result_ttl_s + (task.timeout_s or 0.0) + KEY_MARGIN_S


async def fingerprint(task: TaskDef, params: Mapping[str, Any]) -> str:
    """The digest that tells two submits' parameters apart (files are read in a thread: they may be large)."""
    if task.record_model is None:  # every value is JSON as it is: no dump needed (most tasks; the fast way)
        return _digest(params)
    if task.file_params and any(True for value in params.values() for _ in iter_files(value)):
        return await asyncio.to_thread(_fingerprint, task, params)
    return _fingerprint(task, params)


def _fingerprint(task: TaskDef, params: Mapping[str, Any]) -> str:
    model = task.params_model.model_construct(**params)
    return _digest(model.model_dump(mode="json", context={FILE_DIGESTS: True}))


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
"""One encoder for every fingerprint: `json.dumps` with options builds a new one per call."""


def _digest(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(_CANONICAL.encode(data).encode()).hexdigest()


def check_same(prior: KeyedJob, fingerprint: str, endpoint: str) -> None:
    if prior.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"this Idempotency-Key already made job {prior.job_id} of {endpoint} with other parameters"
        )


def in_flight(endpoint: str) -> IdempotentRequestInFlight:
    return IdempotentRequestInFlight(f"a request with this Idempotency-Key on {endpoint} is still being handled")

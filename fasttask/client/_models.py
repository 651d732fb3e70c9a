"""Reading the service's job JSON into JobStates (defined in `_state`), with file results wrapped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..jobs import JobStatus, is_file_result
from ._errors import ClientError
from ._state import JobState, StreamEvent

__all__ = ["FileWrapper", "JobState", "StreamEvent", "parse_job", "wrap_files"]

FileWrapper = Callable[[dict[str, Any]], Any]
"""Turns a file result `{file_name, content_type, size, url}` (from runpod also `{file_name, content_type,
content: <base64>}`) into an object that gives its content."""


def parse_job(data: Any, wrap_file: FileWrapper) -> JobState:
    """The job JSON (docs/http-api.md) as a JobState."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ClientError(f"the service did not answer with a job: {str(data)[:200]!r}")
    try:
        status = JobStatus(data.get("status"))
    except ValueError:
        raise ClientError(f"the service reported an unknown job status {data.get('status')!r}") from None
    error = data.get("error")
    return JobState(
        id=data["id"],
        status=status,
        endpoint=data.get("endpoint"),
        progress=float(data.get("progress") or 0.0),
        message=data.get("message"),
        result=wrap_files(data.get("result"), wrap_file),
        error={str(k): str(v) for k, v in error.items()} if isinstance(error, dict) else None,
        created_at=_timestamp(data.get("created_at")),
        started_at=_timestamp(data.get("started_at")),
        finished_at=_timestamp(data.get("finished_at")),
        raw=data,
    )


def wrap_files(value: Any, wrap_file: FileWrapper, is_file: Callable[[Any], bool] = is_file_result) -> Any:
    """A copy of a JSON value with each file result (what `is_file` recognises) replaced by `wrap_file(it)`."""
    if is_file(value):
        return wrap_file(value)
    if isinstance(value, list):
        return [wrap_files(item, wrap_file, is_file) for item in value]
    if isinstance(value, dict):
        return {key: wrap_files(item, wrap_file, is_file) for key, item in value.items()}
    return value


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        # fromisoformat reads a trailing Z only from Python 3.11 on
        return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None

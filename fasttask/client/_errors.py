"""Errors the client raises.

* ClientError
  x APIError          the service answered with an error status (after the retries of 429 and 503)
  x ConnectionFailed  the service could not be reached, or the connection broke
  x JobFailed         the job ended failed, cancelled or timed out
  x ResultTimeout     `result(timeout=)` passed while the job was still queued or running (also a TimeoutError)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import JobState


class ClientError(Exception):
    """Base class for all errors of fasttask's client."""


class APIError(ClientError):
    """Raised when the service answers with an error status; `detail` is the answer's `detail` field."""

    def __init__(self, status_code: int, detail: Any, method: str, url: str, note: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        message = f"{status_code} from {method} {url}: {describe_detail(detail)}"
        super().__init__(f"{message} ({note})" if note else message)


class ConnectionFailed(ClientError):
    """Raised when the service cannot be reached or a connection to it breaks."""


class JobFailed(ClientError):
    """Raised when a job ends `failed`, `cancelled` or `timeout`; `job` is its final state."""

    def __init__(self, job: JobState) -> None:
        self.job = job
        self.status = job.status
        self.error_type = job.error_type
        self.error_message = job.error_message
        what = {"failed": "failed", "cancelled": "was cancelled", "timeout": "timed out"}.get(job.status.value, "ended")
        message = f"job {job.id} {what}"
        if job.error is not None:
            message += f": {describe_job_error(job)}"
        super().__init__(message)


class ResultTimeout(ClientError, TimeoutError):
    """Raised when `result(timeout=)` passes before the job ends; the job goes on, `job` is its last state."""

    def __init__(self, job_id: str, timeout_s: float, job: JobState | None) -> None:
        self.job_id = job_id
        self.job = job
        status = f" (still {job.status.value})" if job is not None else ""
        super().__init__(f"job {job_id} did not end within {timeout_s:g} s{status}")


def describe_job_error(job: JobState) -> str:
    """A job's error as `Type: message`, or just the message when the service gave no type (runpod)."""
    if job.error_type is None:
        return str(job.error_message)
    return f"{job.error_type}: {job.error_message}"


def describe_detail(detail: Any) -> str:
    """A one-line reading of a `detail`: FastAPI's field-error list becomes `amount: Input should be …`."""
    if isinstance(detail, list) and all(isinstance(item, dict) for item in detail):
        parts = []
        for error in detail:
            loc = [str(part) for part in error.get("loc", [])]
            if len(loc) > 1 and loc[0] in ("body", "query"):
                loc = loc[1:]
            where = ".".join(loc)
            parts.append(f"{where}: {error.get('msg', error)}" if where else str(error.get("msg", error)))
        return "; ".join(parts) or "invalid parameters"
    return str(detail)

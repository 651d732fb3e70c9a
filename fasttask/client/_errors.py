"""Errors the client raises: ClientError and its subclasses only.

* ClientError
  x APIError          the service answered with an error status (after the retries of 429 and 503); for the
                      answers fasttask names, also an instance of fasttask's error class for it, so
                      `except fasttask.JobNotFound` catches a 404:
                      401 Unauthorized, 404 JobNotFound, 409 JobAlreadyFinal, 413 PayloadTooLarge,
                      422 InvalidInput, 429 QueueFull, 503 BackendUnavailable
  x InvalidArgument   a client or call was given an argument it cannot use (also a ValueError and a TypeError)
  x ConnectionFailed  the service could not be reached, or the connection broke
  x JobFailed         the job ended failed, cancelled or timed out
  x ResultTimeout     `result(timeout=)` passed while the job was still queued or running (also a TimeoutError)
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from .. import errors as service
from ._state import JobState


class ClientError(Exception):
    """Base class for all errors of fasttask's client."""


class APIError(ClientError):
    """Raised when the service answers with an error status; `detail` is the answer's `detail` field.

    `api_error()` makes the one for an answer: for the statuses fasttask names, an instance of a subclass that
    is also fasttask's error class for that status."""

    status_code: int
    detail: Any

    def __init__(self, status_code: int, detail: Any, method: str, url: str, note: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        message = f"{status_code} from {method} {url}: {describe_detail(detail)}"
        # not super().__init__: in the subclasses below the next class in line is fasttask's error class,
        # whose constructor takes other arguments
        Exception.__init__(self, f"{message} ({note})" if note else message)


class UnauthorizedError(APIError, service.Unauthorized):
    """401: the API key is missing or wrong."""


class JobNotFoundError(APIError, service.JobNotFound):
    """404: the job is unknown or expired (`job_id` is the id the request named, when it named one)."""

    def __init__(self, status_code: int, detail: Any, method: str, url: str, note: str = "") -> None:
        super().__init__(status_code, detail, method, url, note)
        self.job_id = job_id_in(url) or ""


class JobAlreadyFinalError(APIError, service.JobAlreadyFinal):
    """409: the job already ended."""


class PayloadTooLargeError(APIError, service.PayloadTooLarge):
    """413: a file or body is larger than the service takes."""


class InvalidInputError(APIError, service.InvalidInput):
    """422: the parameters do not fit the task."""


class QueueFullError(APIError, service.QueueFull):
    """429 (once the client's retries ran out): the endpoint's queue is full; `retry_after_s` is its advice."""

    def __init__(
        self, status_code: int, detail: Any, method: str, url: str, note: str = "", retry_after_s: int = 1
    ) -> None:
        super().__init__(status_code, detail, method, url, note)
        self.retry_after_s = retry_after_s


class BackendUnavailableError(APIError, service.BackendUnavailable):
    """503 (once the client's retries ran out): the service's Redis queue or its object storage cannot be reached."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: UnauthorizedError,
    404: JobNotFoundError,
    409: JobAlreadyFinalError,
    413: PayloadTooLargeError,
    422: InvalidInputError,
    503: BackendUnavailableError,
}


def api_error(
    status_code: int, detail: Any, method: str, url: str, note: str = "", retry_after_s: float | None = None
) -> APIError:
    """The error for an error answer: an instance of fasttask's error class for it when there is one."""
    if status_code == QueueFullError.status_code:
        return QueueFullError(status_code, detail, method, url, note, max(1, round(retry_after_s or 1)))
    return _BY_STATUS.get(status_code, APIError)(status_code, detail, method, url, note)


_JOB_ID_IN_URL = re.compile(r"/(?:jobs|status|cancel|stream)/([^/?#]+)|[?&]job_id=([^&#]+)")


def job_id_in(url: str) -> str | None:
    """The job id a request URL names (`/jobs/{id}…`, `?job_id=`, runpod's `/status/{id}`), if any."""
    match = _JOB_ID_IN_URL.search(url)
    if match is None:
        return None
    return unquote(match.group(1) or match.group(2))


class InvalidArgument(ClientError, ValueError, TypeError):
    """Raised when a client or a call is given an argument it cannot use (a base URL that is not http(s), a
    file opened in text mode, ...); also a ValueError and a TypeError, as Python's own would be."""


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

"""Errors fasttask raises; each carries the HTTP status it maps to.

* FastTaskError
  x InvalidInput 422 > IdempotencyKeyReused         x JobNotFound 404       x JobAlreadyFinal 409
  x InvalidIdempotencyKey 400                       x IdempotentRequestInFlight 409 (+Retry-After)
  x QueueFull 429 (+Retry-After)                    x PayloadTooLarge 413
  x UnsupportedMediaType 415                        x RangeNotSatisfiable 416
  x Unauthorized 401        x BackendUnavailable 503 > QueueUnavailable, StorageUnavailable
  x ConfigError (start-up only)
* RequestValidationFailed 422 (a request's parameters, as FastAPI's field-error list)
* JobCancelled (raised inside a task whose job was cancelled or timed out)
* MissingExtra (an ImportError: a feature's optional dependency is not installed)
"""

from __future__ import annotations

from typing import Any, ClassVar


class FastTaskError(Exception):
    """Base class for all fasttask errors."""

    status_code: ClassVar[int] = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(FastTaskError):
    """Raised when a request's parameters cannot be turned into a task call."""

    status_code = 422


class IdempotencyKeyReused(InvalidInput):
    """Raised when an Idempotency-Key already made a job of the same endpoint with other parameters."""


class InvalidIdempotencyKey(FastTaskError):
    """Raised when an Idempotency-Key header is not 1 to 255 visible ASCII characters."""

    status_code = 400


class IdempotentRequestInFlight(FastTaskError):
    """Raised when the first request with an Idempotency-Key is still being handled and has no job yet."""

    status_code = 409

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class JobNotFound(FastTaskError):
    """Raised when a job id is unknown or its record has expired."""

    status_code = 404

    def __init__(self, job_id: str) -> None:
        shown = job_id if len(job_id) <= 64 else job_id[:64] + "…"  # ids are 32 characters: never echo a long one
        super().__init__(f"job {shown!r} not found (unknown, or expired after its result_ttl)")
        self.job_id = job_id


class JobAlreadyFinal(FastTaskError):
    """Raised when a job that already ended is cancelled."""

    status_code = 409


class QueueFull(FastTaskError):
    """Raised when an endpoint already holds `queue_size` jobs waiting to start."""

    status_code = 429

    def __init__(self, endpoint: str, queue_size: int, retry_after_s: int = 1) -> None:
        super().__init__(f"queue of {endpoint} is full ({queue_size} jobs waiting); retry later")
        self.retry_after_s = retry_after_s


class PayloadTooLarge(FastTaskError):
    """Raised when a request body, an upload or a download exceeds its limit (FTAPI_MAX_BODY_MB,
    FTAPI_MAX_FILE_MB, field counts), or a job's parameters exceed what the Redis queue carries."""

    status_code = 413


class UnsupportedMediaType(FastTaskError):
    """Raised when a request body is neither JSON, a form, nor a JSON object under another content type."""

    status_code = 415


class RangeNotSatisfiable(FastTaskError):
    """Raised when a download's `Range` header asks for bytes the file does not have."""

    status_code = 416


class Unauthorized(FastTaskError):
    """Raised when FTAPI_API_KEY is set and a request does not carry it."""

    status_code = 401


class BackendUnavailable(FastTaskError):
    """Raised when something the service depends on cannot be reached: answered with 503.

    Its name stays for the clients that catch it; everywhere else the word means the serving runtime
    (FTAPI_BACKEND). The subclasses say what is away."""

    status_code = 503


class QueueUnavailable(BackendUnavailable):
    """Raised when the Redis queue cannot be reached or cannot take writes now."""


class StorageUnavailable(BackendUnavailable):
    """Raised when object storage (FTAPI_S3_BUCKET) cannot be reached or refuses a request."""


class ConfigError(FastTaskError):
    """Raised at start-up when settings or task definitions are invalid."""


class MissingExtra(ImportError):
    """Raised when a feature needs an optional dependency that is not installed; says which extra to add."""


class RequestValidationFailed(Exception):
    """A request's parameters did not validate; `errors` is FastAPI's field-error list (answered with 422)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid parameters")
        self.errors = errors


class JobCancelled(Exception):
    """Raised inside a running task by `JobProgress.set_status` once its job was cancelled or timed out."""


def size_text(n_bytes: int) -> str:
    """A size for people: `16 MB`, `1.5 MB`, `512 KB`, `100 bytes` (never `0 MB` for a limit under 1 MB)."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n_bytes >= scale:
            return f"{round(n_bytes / scale, 1):g} {unit}"
    return f"{n_bytes} bytes"

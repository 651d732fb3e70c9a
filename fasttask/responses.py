"""JSON responses and the mapping of fasttask's errors to them, shared by every route."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from .errors import FastTaskError, QueueFull


class RequestValidationFailed(Exception):
    """A request's parameters did not validate; `errors` is FastAPI's field-error list."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid parameters")
        self.errors = errors


def json_response(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return Response(body, status_code, headers, media_type="application/json")


def error_response(exc: Exception) -> Response | None:
    """The documented answer (docs/http-api.md) to one of our errors, or None for anything else."""
    if isinstance(exc, FastTaskError):
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
        return json_response({"detail": exc.detail}, exc.status_code, headers)
    if isinstance(exc, RequestValidationFailed):
        return json_response({"detail": exc.errors}, 422)
    return None

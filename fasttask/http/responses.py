"""JSON responses and the mapping of fasttask's errors to them, shared by every route."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import Response

from ..errors import FastTaskError, RequestValidationFailed

MAX_REPORTED_ERRORS = 50
"""A 422 lists at most this many field errors (and says how many more there were)."""
MAX_ECHO_CHARS = 200
"""An error's `input` goes back only when small: strings are cut to this many characters, and a list or
object only when it holds no more than this many characters and items in all; a long `loc` part is cut too."""


def json_response(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return Response(body, status_code, headers, media_type="application/json")


def error_response(exc: Exception) -> Response | None:
    """The documented answer (docs/http-api.md) to one of our errors, or None for anything else."""
    if isinstance(exc, FastTaskError):
        retry_after = getattr(exc, "retry_after_s", None)  # QueueFull, IdempotentRequestInFlight
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return json_response({"detail": exc.detail}, exc.status_code, headers)
    if isinstance(exc, RequestValidationFailed):
        return json_response({"detail": reportable_errors(exc.errors)}, 422)
    return None


def reportable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's field-error list as it may go back to a client: a bounded number of errors, each with only
    short strings from the input, so a large or hostile input is never echoed (and always serialises)."""
    shown = []
    for error in errors[:MAX_REPORTED_ERRORS]:
        entry: dict[str, Any] = {key: error[key] for key in ("type", "msg") if key in error}
        entry["loc"] = [_short(part) if isinstance(part, str) else part for part in error.get("loc", ())]
        if "input" in error and _small_json(error["input"]):
            entry["input"] = _short(error["input"]) if isinstance(error["input"], str) else error["input"]
        shown.append(entry)
    if len(errors) > MAX_REPORTED_ERRORS:
        more = len(errors) - MAX_REPORTED_ERRORS
        shown.append({"type": "too_many_errors", "loc": [], "msg": f"and {more} more errors"})
    return shown


def _short(text: str) -> str:
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "…"


def _small_json(value: Any) -> bool:
    """True for a string (it is cut), or a JSON value of at most MAX_ECHO_CHARS characters and items."""
    if isinstance(value, str):
        return True
    left = MAX_ECHO_CHARS
    stack = [value]
    while stack:
        item = stack.pop()
        left -= 1
        if left < 0:
            return False
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if item.bit_length() > 64:
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, str):
            left -= len(item)
        elif isinstance(item, list | dict):
            if len(item) > left:
                return False
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    return False
                left -= sum(len(key) for key in item)
                stack.extend(item.values())
            else:
                stack.extend(item)
        else:
            return False
    return left >= 0


__all__ = ["RequestValidationFailed", "error_response", "json_response", "reportable_errors"]

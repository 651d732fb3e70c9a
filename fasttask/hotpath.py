"""The two routes every job passes through, served without FastAPI's per-request machinery.

Submitting a task and reading a job are most of a job service's traffic. FastAPI's middleware stack,
dependency solving and routing cost several times what the work itself costs, so these requests are
answered here, and everything else falls through to the FastAPI application (which also documents
these routes in OpenAPI, with the same handlers behind them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .responses import RequestValidationFailed, error_response, json_response

logger = logging.getLogger("fasttask")

Handler = Callable[[Request], Awaitable[Response]]


class HotPath:
    """Dispatches exact (method, path) matches and `GET /jobs/{id}` itself; the rest goes to `fallback`."""

    def __init__(self, fallback: ASGIApp, routes: Mapping[tuple[str, str], Handler], read_job: Handler) -> None:
        self.fallback = fallback
        self.routes = routes
        self.read_job = read_job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is None and scope["method"] == "GET" and _is_job_path(scope["path"]):
                handler = self.read_job
                scope["path_params"] = {"job_id": scope["path"][len("/jobs/") :]}
            if handler is not None:
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except Exception as exc:
                    answer = error_response(exc)
                    if answer is None:
                        logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
                        answer = json_response({"detail": "internal server error"}, 500)
                    response = answer
                await response(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def _is_job_path(path: str) -> bool:
    """`/jobs/{id}` and nothing deeper (`/jobs/{id}/stream` goes to FastAPI)."""
    return path.startswith("/jobs/") and path.count("/") == 2 and len(path) > len("/jobs/")


def parse_wait(raw: str | None, limit: float) -> float:
    """`?wait=` as seconds in [0, limit]; anything else is a 422 in FastAPI's field-error shape."""
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        error = {"type": "float_parsing", "msg": "Input should be a valid number"}
    else:
        if 0.0 <= value <= limit:
            return value
        error = {"type": "range", "msg": f"Input should be between 0 and {limit:g}"}
    raise RequestValidationFailed([{**error, "loc": ["query", "wait"], "input": raw}])

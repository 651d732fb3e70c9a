"""The routes every job passes through, served without FastAPI's per-request machinery.

Submitting a task and reading a job are most of a job service's traffic. FastAPI's middleware stack,
dependency solving and routing cost several times what the work itself costs, so the route table's `hot`
routes are answered here, and everything else falls through to the FastAPI application (which also
documents these routes in OpenAPI, with the same handlers behind them).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import RequestValidationFailed
from .responses import error_response, json_response
from .routes import Handler, RouteTable

logger = logging.getLogger("fasttask")


class HotPath:
    """Dispatches requests the table's hot routes match; the rest goes to `fallback`."""

    def __init__(self, fallback: ASGIApp, table: RouteTable) -> None:
        self.fallback = fallback
        # the table's lookups with the handlers resolved once: a submit costs one dict lookup
        self.exact: dict[tuple[str, str], Handler] = {key: route.endpoint for key, route in table.exact.items()}
        self.prefixed = [(prefix, param, route.methods, route.endpoint) for prefix, param, route in table.prefixed]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            handler = self.exact.get((method, path))
            if handler is None:
                for prefix, param, methods, endpoint in self.prefixed:
                    # one segment after the prefix (`/jobs/{id}`, not `/jobs/{id}/stream`), and the method
                    start = len(prefix)
                    if (
                        path.startswith(prefix)
                        and len(path) > start
                        and path.find("/", start) < 0
                        and method in methods
                    ):
                        handler = endpoint
                        scope["path_params"] = {param: path[len(prefix) :]}
                        break
            if handler is not None:
                try:
                    response = await handler(Request(scope, receive))
                except Exception as exc:
                    answer = error_response(exc)
                    if answer is None:
                        logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
                        answer = json_response({"detail": "internal server error"}, 500)
                    response = answer
                await response(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


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

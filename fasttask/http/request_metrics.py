"""Counting and timing every HTTP request (`fasttask_http_*`), labelled by the route table's templates."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import HttpMetrics, RouteStats
from .routes import RouteTable


class HttpMetricsMiddleware:
    """Times and counts every request, labelled by route template: a task's path, `/jobs/{id}`, or another
    route's template (`{job_id}` spelled `{id}`), never a raw id.

    It sits outside the hot path and the API-key check, so refused and hot-path requests count too.
    `others` are the routes added to the FastAPI application directly (not in the table).
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, table: RouteTable, others: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.table = table
        self.others = others
        # resolved once: a task submit finds its series with one dict lookup, a job read with one more
        self.exact = {(method, path): metrics.route(path, method) for method, path in table.exact}
        self.by_prefix: list[tuple[str, str, dict[str, RouteStats]]] = [
            (prefix, route.label, {}) for prefix, _, route in table.prefixed
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        stats = self.exact.get((method, path))
        if stats is None:
            for prefix, label, by_method in self.by_prefix:
                # the template `/prefix/{param}`, whatever the method; `/prefix/` itself too
                if path.startswith(prefix) and path.find("/", len(prefix)) < 0:
                    stats = by_method.get(method)
                    if stats is None:
                        stats = by_method[method] = self.metrics.route(label, method)
                    break
        code = 500
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if stats is None:
                stats = self.metrics.route(self.table.label(scope, self.others), method)
            stats.observe(code, time.perf_counter() - started)

"""One route table: FastAPI, the hot path and the HTTP metrics' labels all read it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from fasttask import FastTaskAPI
from fasttask.http.hotpath import HotPath
from fasttask.http.request_metrics import HttpMetricsMiddleware
from fasttask.http.routes import UNMATCHED_ROUTE, Route, RouteTable
from fasttask.metrics import HttpMetrics


def test_a_submit_handler_is_built_once_and_serves_fastapi_and_the_hot_path() -> None:
    app = FastTaskAPI("routes", queue="local")

    @app.task_endpoint("/double", methods=("GET", "POST"))
    def double(n: int = 1) -> int:
        return 2 * n

    table: RouteTable = app.fastapi.state.routes
    hot = HotPath(app.fastapi, table)
    handler = hot.exact["GET", "/double"]
    assert hot.exact["POST", "/double"] is handler
    served = [r for r in app.fastapi.routes if isinstance(r, APIRoute) and r.path == "/double"]
    assert sorted(m for r in served for m in r.methods) == ["GET", "POST"]
    assert all(r.endpoint is handler for r in served)
    assert [entry[:3] for entry in hot.prefixed] == [("/jobs/", "job_id", ("GET",)), ("/status/", "job_id", ("GET",))]
    for (_, _, _, read), path in zip(hot.prefixed, ("/jobs/{job_id}", "/status/{job_id}"), strict=True):
        job_route = next(r for r in app.fastapi.routes if isinstance(r, APIRoute) and r.path == path)
        assert job_route.endpoint is read


async def _answer(text: str, request: Request) -> Response:
    return Response(f"{text} {dict(request.path_params)}")


def _table() -> RouteTable:
    async def submit(request: Request) -> Response:
        return await _answer("submit", request)

    async def read(request: Request) -> Response:
        return await _answer("read", request)

    async def stream(job_id: str) -> Response:
        return Response(job_id)

    return RouteTable(
        [
            Route("/submit", submit, ("POST",), hot=True),
            Route("/jobs/{job_id}", read, ("GET",), hot=True),
            Route("/jobs/{job_id}/stream", stream, ("GET",)),
        ]
    )


async def _call(app: Any, method: str, path: str) -> str:
    scope: Scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return b"".join(message.get("body", b"") for message in sent).decode()


@pytest.mark.parametrize(
    ("method", "path", "answer"),
    [
        ("POST", "/submit", "submit {}"),
        ("GET", "/jobs/abc", "read {'job_id': 'abc'}"),
        ("GET", "/submit", "fallback"),  # another method: FastAPI's (a 405 there)
        ("POST", "/jobs/abc", "fallback"),
        ("GET", "/jobs/abc/stream", "fallback"),  # deeper than the template: another route
        ("GET", "/jobs/", "fallback"),
    ],
)
def test_the_hot_path_answers_the_tables_hot_routes_and_passes_the_rest_on(method: str, path: str, answer: str) -> None:
    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        await Response("fallback")(scope, receive, send)

    assert asyncio.run(_call(HotPath(fallback, _table()), method, path)) == answer


def test_metrics_labels_come_from_the_table() -> None:
    table = _table()
    metrics = HttpMetrics()

    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        await Response("fallback")(scope, receive, send)

    middleware = HttpMetricsMiddleware(HotPath(fallback, table), metrics, table)
    for method, path in [("POST", "/submit"), ("DELETE", "/jobs/abc"), ("GET", "/jobs/"), ("GET", "/jobs/a/stream")]:
        asyncio.run(_call(middleware, method, path))
    assert set(metrics.routes) == {
        ("/submit", "POST"),
        ("/jobs/{id}", "DELETE"),  # a hot template labels every method
        ("/jobs/{id}", "GET"),
        ("/jobs/{id}/stream", "GET"),
    }

    def unrouted(method: str, path: str) -> Scope:
        return {"type": "http", "method": method, "path": path}

    assert table.label(unrouted("GET", "/jobs/abc/stream")) == "/jobs/{id}/stream"
    assert table.label(unrouted("POST", "/jobs/abc/stream")) == "/jobs/{id}/stream"  # the path matched
    assert table.label(unrouted("GET", "/elsewhere")) == UNMATCHED_ROUTE


def test_a_hot_route_is_a_literal_path_or_one_parameter_after_a_prefix() -> None:
    with pytest.raises(ValueError, match="/prefix/"):
        RouteTable([Route("/jobs/{job_id}/files/{index}", _answer, ("GET",), hot=True)])


def test_the_api_key_leaves_open_the_paths_the_table_marks_open() -> None:
    app = FastTaskAPI("routes", queue="local", api_key="secret")
    table: RouteTable = app.fastapi.state.routes
    docs_files = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "docs.js", "docs.css"}
    assert table.open_paths == {
        *("/health", "/ready", "/docs", "/dashboard", "/dashboard/"),
        *("/dashboard/dashboard.js", "/dashboard/dashboard.css"),
        *(f"/docs/{name}" for name in docs_files),
    }
    assert {route.path for route in table.routes if route.open and route.include_in_schema} == {"/health", "/ready"}
    assert asyncio.run(_call(app, "GET", "/health")) == '{"status":"ok"}'
    assert "missing or wrong API key" in asyncio.run(_call(app, "GET", "/queues"))

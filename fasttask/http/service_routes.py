"""The routes about the service: probes, queues, the job list, `/metrics` and the dashboard."""

from __future__ import annotations

import asyncio
from importlib import resources

from fastapi import Query
from starlette.responses import Response

from ..brokers import Broker, JobViews
from ..brokers.views import MAX_PAGE
from ..errors import FastTaskError, RequestValidationFailed
from ..jobs import JobStatus, isoformat, utcnow
from ..metrics import CONTENT_TYPE, Metrics
from ..series import Timeline, series_json
from .openapi_schemas import errors, json_body, ref
from .responses import json_response
from .routes import Route

RECENT_WINDOW_S = 60.0
"""The dashboard's recent throughput counts the jobs that ended in this many seconds."""
DASHBOARD_FILES = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def probe_routes(broker: Broker, views: JobViews) -> list[Route]:
    async def health() -> Response:
        return json_response({"status": "ok"})

    async def ready() -> Response:
        # background loops are reported, not judged: storage being away must not take the API out of
        # its load balancer while jobs without files still work
        loops = broker.loops.snapshot()
        if await broker.ready():
            return json_response({"status": "ready", "loops": loops})
        return json_response({"detail": "the queue is not ready", "loops": loops}, 503)

    async def queues() -> Response:
        return json_response({"queues": [info.to_json() for info in await views.queues()]})

    service = ("service",)
    return [
        Route(
            "/health",
            health,
            ("GET",),
            tags=service,
            summary="Liveness",
            responses={"200": json_body("The process serves", ref("ServiceState"))},
            open_paths=("/health",),
        ),
        Route(
            "/ready",
            ready,
            ("GET",),
            tags=service,
            summary="Readiness: the queue is reachable",
            responses={
                "200": json_body("The queue is reachable", ref("ServiceState")),
                "503": json_body("The queue is not reachable", ref("Error")),
            },
            open_paths=("/ready",),
        ),
        Route(
            "/queues",
            queues,
            ("GET",),
            tags=service,
            summary="Queued and running jobs per task endpoint",
            responses={"200": json_body("Per task endpoint", ref("QueueList")), **errors("503")},
        ),
    ]


def observability_routes(
    views: JobViews, metrics: Metrics | None, endpoints: list[str], timeline: Timeline
) -> list[Route]:
    async def list_jobs(
        endpoint: str | None = None,
        status: JobStatus | None = None,
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        cursor: str | None = None,
    ) -> Response:
        if endpoint is not None and endpoint not in endpoints:
            error = {"type": "enum", "loc": ["query", "endpoint"], "input": endpoint}
            raise RequestValidationFailed([{**error, "msg": f"Input should be one of {', '.join(endpoints)}"}])
        page = await views.list_jobs(endpoint, status, limit, cursor)
        return json_response(page.to_json())

    routes = [
        Route(
            "/jobs",
            list_jobs,
            ("GET",),
            tags=("jobs",),
            summary="Recent jobs, newest first; ?endpoint=, ?status=, ?limit=, ?cursor=",
            responses={"200": json_body("Newest first", ref("JobPage")), **errors("422", "503")},
        )
    ]
    if metrics is not None:
        counted = metrics

        async def metrics_route() -> Response:
            assert counted.queues is not None
            try:
                counted.queues.queues = await views.queues()
            except FastTaskError:  # the queue is unreachable: counters still, no queue gauges
                counted.queues.queues = []
            return Response(counted.render(), media_type=CONTENT_TYPE)

        text = {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
        routes.append(
            Route(
                "/metrics",
                metrics_route,
                ("GET",),
                tags=("service",),
                summary="Prometheus metrics (text format)",
                responses={"200": text},
            )
        )
    return routes + dashboard_routes(views, timeline)


def dashboard_routes(views: JobViews, timeline: Timeline) -> list[Route]:
    package = resources.files("fasttask") / "dashboard"
    page = (package / "index.html").read_bytes()
    assets = {name: (package / name).read_bytes() for name in DASHBOARD_FILES}

    async def dashboard() -> Response:
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": DASHBOARD_CSP}
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    async def dashboard_state() -> Response:
        queues, workers, recent = await asyncio.gather(views.queues(), views.workers(), views.recent(RECENT_WINDOW_S))
        now = utcnow()
        return json_response(
            {
                "time": isoformat(now),
                "window_s": RECENT_WINDOW_S,
                "queues": [{**info.to_json(), "recent": recent.get(info.endpoint, {})} for info in queues],
                "workers": [worker.to_json(now) for worker in workers],
            }
        )

    async def dashboard_series() -> Response:
        """The charts' data, minute by minute: see docs/http-api.md."""
        queues, history = await asyncio.gather(views.queues(), views.history(timeline.minutes))
        timeline.sample(queues)
        return json_response(series_json(timeline, history))

    async def dashboard_asset(name: str) -> Response:
        if name not in assets:
            return json_response({"detail": "not found"}, 404)
        return Response(assets[name], media_type=DASHBOARD_FILES[name], headers={"Cache-Control": "no-cache"})

    return [
        Route("/dashboard", dashboard, ("GET",), include_in_schema=False, open_paths=("/dashboard", "/dashboard/")),
        Route("/dashboard/state", dashboard_state, ("GET",), include_in_schema=False),
        Route("/dashboard/series", dashboard_series, ("GET",), include_in_schema=False),
        Route(
            "/dashboard/{name}",
            dashboard_asset,
            ("GET",),
            include_in_schema=False,
            open_paths=tuple(f"/dashboard/{name}" for name in DASHBOARD_FILES),
        ),
    ]

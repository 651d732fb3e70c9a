"""The HTTP surface: builds the FastAPI application that serves a FastTaskAPI."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp

from .auth import ApiKeyMiddleware
from .brokers import Broker, JobEvent, create_broker
from .brokers.base import MAX_PAGE
from .errors import FastTaskError
from .files import close_files
from .hotpath import HotPath, parse_wait
from .jobs import JobRecord, JobStatus, isoformat, utcnow
from .limits import bound_route_body
from .logs import configure_api_logging
from .loops import stop_tasks
from .metrics import CONTENT_TYPE, HttpMetricsMiddleware, Metrics
from .middleware import with_cors, with_user_middleware
from .openapi import install_openapi
from .params import InputLimits, read_params, read_request_data
from .ranges import byte_range
from .responses import RequestValidationFailed, error_response, json_response, reportable_errors
from .series import Timeline, series_json
from .settings import Settings
from .tasks import TaskDef

if TYPE_CHECKING:
    from .app import FastTaskAPI

logger = logging.getLogger("fasttask")

MAX_WAIT_S = 60.0
SSE_KEEPALIVE_S = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RECENT_WINDOW_S = 60.0
"""The dashboard's recent throughput counts the jobs that ended in this many seconds."""
DASHBOARD_FILES = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def build_asgi(service: FastTaskAPI, api: FastAPI) -> ASGIApp:
    """The ASGI app serving `service`: `api` (from `build_api`) inside the layers `middleware.py` describes."""
    settings = service.settings
    broker: Broker = api.state.broker
    metrics: Metrics | None = api.state.metrics
    limits = input_limits(settings)
    routes = {}
    for task in service.tasks.values():
        submit = _submit_route(broker, task, limits, metrics)
        routes.update({(method, task.path): submit for method in task.methods})
    app: ASGIApp = HotPath(api, routes, _read_job_route(broker))
    if settings.api_key:
        app = ApiKeyMiddleware(app, api_key=settings.api_key)
    if settings.cors_origins:
        app = with_cors(app, settings.cors_origins)
    user_middleware = [*service.added_middleware, *api.user_middleware]
    if user_middleware:
        api.user_middleware = []  # they wrap everything above instead, so each sees every request once
        app = with_user_middleware(app, api, user_middleware)
    if metrics is not None and metrics.http is not None:
        # outermost, so requests refused by the API-key check and hot-path requests are counted too
        app = HttpMetricsMiddleware(app, metrics.http, api, routes)
    return app


def build_api(service: FastTaskAPI) -> FastAPI:
    settings = service.settings
    metrics = Metrics(service.tasks) if settings.metrics else None
    broker = create_broker(settings, service.tasks, service, metrics.jobs if metrics is not None else None)
    if metrics is not None:
        metrics.watch_loops(broker.loops)
    limits = input_limits(settings)
    timeline = Timeline(list(service.tasks), metrics.jobs if metrics is not None else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_api_logging(settings)
        await broker.start()
        sampler = asyncio.create_task(timeline.run(broker), name="fasttask-chart-sampler")  # the dashboard's charts
        try:
            yield
        finally:
            await stop_tasks([sampler])
            await broker.close()

    api = FastAPI(title=service.title, lifespan=lifespan, docs_url=None, redoc_url=None)  # /docs: openapi.py
    api.state.broker = broker
    api.state.metrics = metrics
    _install_error_handlers(api)

    for task in service.tasks.values():
        submit = _submit_route(broker, task, limits, metrics)
        for method in task.methods:  # one route per method keeps OpenAPI operation ids unique
            api.add_api_route(
                task.path,
                submit,
                methods=[method],
                status_code=202,
                name=task.name,
                operation_id=f"{task.name}_{method.lower()}",
                summary=(task.fn.__doc__ or task.name).strip().splitlines()[0],
                response_class=JSONResponse,
            )
    for path, fn, methods in service.plain_endpoints:
        api.add_api_route(path, fn, methods=methods)
        route = api.routes[-1]
        assert isinstance(route, APIRoute)
        bound_route_body(route, limits)
    _add_job_routes(api, broker, limits)
    _add_observability_routes(api, broker, metrics, list(service.tasks), timeline)
    install_openapi(api, service)
    return api


def input_limits(settings: Settings) -> InputLimits:
    mb = 1024 * 1024
    return InputLimits(int(settings.max_file_mb * mb), settings.allow_private_urls, int(settings.max_body_mb * mb))


def _submit_route(
    broker: Broker, task: TaskDef, limits: InputLimits, metrics: Metrics | None = None
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    if metrics is None:

        async def submit(request: Request) -> Response:
            params = await read_params(request, task, limits)
            try:
                record = await broker.submit(task, params)
            except BaseException:
                close_files(params.values())  # refused (429, 503, 413): nobody else will read them
                raise
            return json_response(record.to_json(), 202, {"Location": f"/jobs/{record.id}"})

        return submit

    stats = metrics.jobs.stats(task.path)

    async def counted_submit(request: Request) -> Response:
        try:
            params = await read_params(request, task, limits)
        except Exception as exc:
            stats.refused(exc)
            raise
        try:
            record = await broker.submit(task, params)
        except BaseException as exc:
            close_files(params.values())  # refused (429, 503, 413): nobody else will read them
            stats.refused(exc)
            raise
        stats.submitted += 1
        return json_response(record.to_json(), 202, {"Location": f"/jobs/{record.id}"})

    return counted_submit


def _read_job_route(broker: Broker) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    async def read_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        wait = parse_wait(request.query_params.get("wait"), MAX_WAIT_S)
        record = await (broker.wait(job_id, wait) if wait > 0 else broker.get(job_id))
        return json_response(record.to_json())

    return read_job


def _add_job_routes(api: FastAPI, broker: Broker, limits: InputLimits) -> None:
    api.add_api_route(
        "/jobs/{job_id}",
        _read_job_route(broker),
        methods=["GET"],
        tags=["jobs"],
        summary="A job; ?wait=S (0 to 60) holds the answer until it ends",
        openapi_extra={
            "parameters": [
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
                },
            ]
        },
    )

    @api.post("/jobs/{job_id}/cancel", tags=["jobs"], summary="Cancel a queued or running job")
    async def cancel_job(job_id: str) -> Response:
        return json_response((await broker.cancel(job_id)).to_json())

    @api.get("/jobs/{job_id}/stream", tags=["jobs"], summary="Server-sent events: progress, output, end")
    async def stream_job(job_id: str, request: Request) -> StreamingResponse:
        # a client that reconnects sends the id of the last event it got: the outputs it already has
        resume = request.headers.get("last-event-id", "")
        events = await broker.open_stream(job_id, int(resume) if resume.isdigit() and len(resume) < 10 else 0)
        return StreamingResponse(_sse(events), media_type="text/event-stream", headers=SSE_HEADERS)

    @api.get("/jobs/{job_id}/files/{index}", tags=["jobs"], summary="Download a file the job returned")
    async def job_file(job_id: str, index: int, request: Request) -> StreamingResponse:
        file = await broker.result_file(job_id, index)
        name = quote(file.file_name.replace('"', ""))
        headers = {"Accept-Ranges": "bytes", "Content-Disposition": f"attachment; filename*=UTF-8''{name}"}
        span = byte_range(request.headers.get("range"), file.size)
        start, end = span if span is not None else (0, file.size)
        # opened before the answer starts (in a thread: it may be a request to object storage), so that
        # storage being away is a 503, not a download cut off after its headers
        chunks = await asyncio.to_thread(file.read, start, end)
        if span is None:
            headers["Content-Length"] = str(file.size)
            return StreamingResponse(chunks, media_type=file.content_type, headers=headers)
        headers["Content-Length"] = str(end - start)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
        return StreamingResponse(chunks, 206, headers, media_type=file.content_type)

    async def legacy_status(request: Request) -> Response:
        data, _ = await read_request_data(request, limits)
        job_id = data.get("job_id")
        if not job_id or not isinstance(job_id, str):
            raise RequestValidationFailed([{"type": "missing", "loc": ["query", "job_id"], "msg": "Field required"}])
        record: JobRecord = await broker.get(job_id)
        return json_response(record.to_legacy_json(str(request.base_url)))

    for method in ("GET", "POST"):
        api.add_api_route(
            "/status",
            legacy_status,
            methods=[method],
            tags=["jobs"],
            operation_id=f"legacy_status_{method.lower()}",
            summary="A job in the FastTaskAPI 1.x shape (?job_id=)",
        )

    @api.get("/health", tags=["service"], summary="Liveness")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @api.get("/ready", tags=["service"], summary="Readiness: the queue backend is reachable")
    async def ready() -> Response:
        # background loops are reported, not judged: storage being away must not take the API out of
        # its load balancer while jobs without files still work
        loops = broker.loops.snapshot()
        if await broker.ready():
            return json_response({"status": "ready", "loops": loops})
        return json_response({"detail": "the queue backend is not ready", "loops": loops}, 503)

    @api.get("/queues", tags=["service"], summary="Queued and running jobs per task endpoint")
    async def queues() -> Response:
        return json_response({"queues": [info.to_json() for info in await broker.queues()]})


def _add_observability_routes(
    api: FastAPI, broker: Broker, metrics: Metrics | None, endpoints: list[str], timeline: Timeline
) -> None:
    @api.get("/jobs", tags=["jobs"], summary="Recent jobs, newest first; ?endpoint=, ?status=, ?limit=, ?cursor=")
    async def list_jobs(
        endpoint: str | None = None,
        status: JobStatus | None = None,
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        cursor: str | None = None,
    ) -> Response:
        if endpoint is not None and endpoint not in endpoints:
            error = {"type": "enum", "loc": ["query", "endpoint"], "input": endpoint}
            raise RequestValidationFailed([{**error, "msg": f"Input should be one of {', '.join(endpoints)}"}])
        page = await broker.list_jobs(endpoint, status, limit, cursor)
        return json_response(page.to_json())

    if metrics is not None:

        @api.get("/metrics", tags=["service"], summary="Prometheus metrics (text format)")
        async def metrics_route() -> Response:
            assert metrics is not None and metrics.queues is not None
            try:
                metrics.queues.queues = await broker.queues()
            except FastTaskError:  # the backend is away: counters still, no queue gauges
                metrics.queues.queues = []
            return Response(metrics.render(), media_type=CONTENT_TYPE)

    package = resources.files("fasttask") / "dashboard"
    page = (package / "index.html").read_bytes()
    assets = {name: (package / name).read_bytes() for name in DASHBOARD_FILES}

    @api.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": DASHBOARD_CSP}
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    @api.get("/dashboard/state", include_in_schema=False)
    async def dashboard_state() -> Response:
        queues, workers, recent = await asyncio.gather(
            broker.queues(), broker.workers(), broker.recent(RECENT_WINDOW_S)
        )
        now = utcnow()
        return json_response(
            {
                "time": isoformat(now),
                "window_s": RECENT_WINDOW_S,
                "queues": [{**info.to_json(), "recent": recent.get(info.endpoint, {})} for info in queues],
                "workers": [worker.to_json(now) for worker in workers],
            }
        )

    @api.get("/dashboard/series", include_in_schema=False)
    async def dashboard_series() -> Response:
        """The charts' data, minute by minute: see docs/http-api.md."""
        queues, history = await asyncio.gather(broker.queues(), broker.history(timeline.minutes))
        timeline.sample(queues)
        return json_response(series_json(timeline, history))

    @api.get("/dashboard/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        if name not in assets:
            return json_response({"detail": "not found"}, 404)
        return Response(assets[name], media_type=DASHBOARD_FILES[name], headers={"Cache-Control": "no-cache"})


async def _sse(events: AsyncIterator[JobEvent]) -> AsyncIterator[str]:
    """Format events as SSE, with a comment line when nothing happened for a while to keep proxies open."""
    pending: asyncio.Future[JobEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=SSE_KEEPALIVE_S)
            if not done:
                yield ": keep-alive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
            yield f"id: {event.outputs_sent}\nevent: {event.kind}\ndata: {data}\n\n"
            if event.kind == "end":
                return
    finally:
        if pending is not None:
            pending.cancel()


def _install_error_handlers(api: FastAPI) -> None:
    async def fasttask_error(request: Request, exc: Exception) -> Response:
        response = error_response(exc)
        assert response is not None
        return response

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return json_response({"detail": reportable_errors(list(exc.errors()))}, 422)

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response({"detail": "internal server error"}, 500)

    api.add_exception_handler(FastTaskError, fasttask_error)
    api.add_exception_handler(RequestValidationFailed, fasttask_error)
    api.add_exception_handler(RequestValidationError, request_validation)
    api.add_exception_handler(Exception, unexpected)

"""Builds the FastAPI application serving a FastTaskAPI, and the ASGI app around it.

The routes come from one table (`routes.py`): FastAPI serves and documents them, the hot path answers the
hot ones first, and the HTTP metrics label requests with their templates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from ..brokers import create_broker
from ..errors import FastTaskError, RequestValidationFailed
from ..logs import configure_api_logging
from ..loops import stop_tasks
from ..metrics import Metrics
from ..series import Timeline
from ..settings import Settings
from .apipod_routes import apipod_routes
from .auth import ApiKeyMiddleware
from .hotpath import HotPath
from .job_routes import job_routes, task_routes
from .limits import bound_route_body
from .middleware import with_cors, with_user_middleware
from .openapi import docs_routes, install_openapi
from .params import InputLimits
from .request_metrics import HttpMetricsMiddleware
from .responses import error_response, json_response, reportable_errors
from .routes import Route, RouteTable
from .service_routes import observability_routes, probe_routes

if TYPE_CHECKING:
    from ..app import FastTaskAPI

logger = logging.getLogger("fasttask")


def build_asgi(service: FastTaskAPI, api: FastAPI) -> ASGIApp:
    """The ASGI app serving `service`: `api` (from `build_api`) inside the layers `middleware.py` describes."""
    settings = service.settings
    metrics: Metrics | None = api.state.metrics
    table: RouteTable = api.state.routes
    app: ASGIApp = HotPath(api, table)
    if settings.api_key:
        app = ApiKeyMiddleware(app, settings.api_key, table.open_paths)
    if settings.cors_origins:
        app = with_cors(app, settings.cors_origins)
    added = [Middleware(cls, *args, **kwargs) for cls, args, kwargs in service.added_middleware]
    user_middleware = [*added, *api.user_middleware]
    if user_middleware:
        api.user_middleware = []  # they wrap everything above instead, so each sees every request once
        app = with_user_middleware(app, api, user_middleware)
    if metrics is not None and metrics.http is not None:
        # outermost, so requests refused by the API-key check and hot-path requests are counted too
        own = {route.endpoint for route in table.routes}
        others = [route for route in api.router.routes if getattr(route, "endpoint", None) not in own]
        app = HttpMetricsMiddleware(app, metrics.http, table, others)
    return app


def build_api(service: FastTaskAPI) -> FastAPI:
    settings = service.settings
    metrics = Metrics(service.tasks) if settings.metrics else None
    broker = create_broker(settings, service.tasks, service, metrics.jobs if metrics is not None else None)
    views = broker.views  # the read-only seam: /queues, GET /jobs, /metrics' gauges, the dashboard
    if metrics is not None:
        metrics.watch_loops(broker.loops)
    limits = input_limits(settings)
    timeline = Timeline(list(service.tasks), metrics.jobs if metrics is not None else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_api_logging(settings)
        await broker.start()
        sampler = asyncio.create_task(timeline.run(views), name="fasttask-chart-sampler")  # the dashboard's charts
        try:
            yield
        finally:
            await stop_tasks([sampler])
            await broker.close()

    api = FastAPI(title=service.title, lifespan=lifespan, docs_url=None, redoc_url=None)  # /docs: openapi.py
    api.state.broker = broker
    api.state.views = views
    api.state.metrics = metrics
    _install_error_handlers(api)
    table = RouteTable(
        [
            *(route for task in service.tasks.values() for route in task_routes(broker, task, limits, metrics)),
            *(Route(path, fn, tuple(methods), bound_body=True) for path, fn, methods in service.plain_endpoints),
            *job_routes(broker, limits),
            *apipod_routes(broker),
            *probe_routes(broker, views),
            *observability_routes(views, metrics, list(service.tasks), timeline),
            *docs_routes(),
        ]
    )
    for route in table.routes:
        _add_route(api, route, limits)
    api.state.routes = table
    install_openapi(api, table, bool(settings.api_key))
    return api


def _add_route(api: FastAPI, route: Route, limits: InputLimits) -> None:
    options: dict[str, Any] = {"response_class": JSONResponse} if route.json_response else {}
    api.add_api_route(
        route.path,
        route.endpoint,
        methods=list(route.methods),
        status_code=route.status_code,
        tags=list(route.tags) if route.tags is not None else None,
        summary=route.summary,
        name=route.name,
        operation_id=route.operation_id,
        include_in_schema=route.include_in_schema,
        **options,
    )
    added = api.routes[-1]
    assert isinstance(added, APIRoute)
    if route.bound_body:
        bound_route_body(added, limits)


def input_limits(settings: Settings) -> InputLimits:
    mb = 1024 * 1024
    return InputLimits(int(settings.max_file_mb * mb), settings.allow_private_urls, int(settings.max_body_mb * mb))


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

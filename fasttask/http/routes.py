"""The route table: every route fasttask serves, declared once.

Three readers use it: `api.py` adds each route to the FastAPI application (which documents it, with the
responses and parameters declared here, see `openapi.py`), `HotPath` answers the `hot` routes without
FastAPI, and the HTTP metrics label each request with its route's template. A task's submit handler is
built once and serves both FastAPI and the hot path.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, compile_path
from starlette.types import Scope

if TYPE_CHECKING:
    from ..tasks import TaskDef

Handler = Callable[[Request], Awaitable[Response]]
"""What a hot route runs: the request in, the response out."""

UNMATCHED_ROUTE = "unmatched"
"""The route label of requests no route matched (404s of unknown paths): one series, whatever the path."""


@dataclass(frozen=True)
class Route:
    """One route: where it is, what answers it, and how OpenAPI documents it."""

    path: str
    """Starlette's template: `/jobs/{job_id}`."""
    endpoint: Callable[..., Any]
    methods: tuple[str, ...]
    hot: bool = False
    """Answered by HotPath: `endpoint` is a `Handler`, and the path is literal or `/prefix/{param}`."""
    name: str | None = None
    operation_id: str | None = None
    summary: str | None = None
    tags: tuple[str, ...] | None = None
    status_code: int | None = None
    include_in_schema: bool = True
    responses: dict[str, Any] | None = None
    """OpenAPI responses, replacing what FastAPI infers."""
    parameters: tuple[dict[str, Any], ...] = ()
    """OpenAPI parameters added to (or replacing, by name) what FastAPI infers."""
    open_paths: tuple[str, ...] = ()
    """The paths of this route served without the API key: the probes, so that orchestrators need no secret,
    and the static files of the dashboard and of /docs, which hold no data (those pages ask for the key and
    send it with their requests). OpenAPI documents a route whose own path is here as needing no key."""
    task: TaskDef | None = None
    """The task a submit route runs: OpenAPI documents its parameters as the request."""
    bound_body: bool = False
    """A service's own endpoint: its body is bounded by FTAPI_MAX_BODY_MB (see `limits.bound_route_body`)."""
    json_response: bool = False
    """Answered with FastAPI's JSONResponse class (documents `application/json`)."""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", compile_path(self.path)[0])

    @property
    def open(self) -> bool:
        return self.path in self.open_paths

    @property
    def label(self) -> str:
        """The metrics' route label: the template, a job id spelled `{id}`."""
        return self.path.replace("{job_id}", "{id}")


class RouteTable:
    """The routes in the order FastAPI matches them, and the hot path's lookups made from them once."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self.open_paths = frozenset(path for route in self.routes for path in route.open_paths)
        """What FTAPI_API_KEY leaves open (see `auth.ApiKeyMiddleware`)."""
        self.exact: dict[tuple[str, str], Route] = {}
        """Hot routes with a literal path, by (method, path): a submit finds its handler with one lookup."""
        self.prefixed: list[tuple[str, str, Route]] = []
        """Hot routes `/prefix/{param}`: (prefix, param, route); one path segment after the prefix matches."""
        for route in self.routes:
            if not route.hot:
                continue
            if "{" not in route.path:
                self.exact.update({(method, route.path): route for method in route.methods})
                continue
            prefix, _, rest = route.path.partition("{")
            if not prefix.endswith("/") or not rest.endswith("}") or "/" in rest:
                raise ValueError(f"a hot route is a literal path or /prefix/{{param}}, not {route.path}")
            self.prefixed.append((prefix, rest[:-1], route))

    def label(self, scope: Scope, others: Sequence[Any] = ()) -> str:
        """The label of a request no hot route's template matched (the metrics middleware matches those
        itself, whatever the method: `DELETE /jobs/x` is `/jobs/{id}` too): its FastAPI route when it was
        routed, or else (refused or answered before routing: a 401, a CORS preflight) the first route of the
        table, then of `others` (routes added to the FastAPI application directly), whose path matches; a
        route of the same method first."""
        route = scope.get("route")
        path = getattr(route, "path", None) if route is not None else self._match(scope, others)
        return path.replace("{job_id}", "{id}") if isinstance(path, str) else UNMATCHED_ROUTE

    def _match(self, scope: Scope, others: Sequence[Any]) -> str | None:
        full: str | None = None
        partial: str | None = None
        path, root = scope["path"], scope.get("root_path", "")
        path = path[len(root) :] if root and path.startswith(root) else path  # as Starlette's routing reads it
        for route in self.routes:
            if route.pattern.match(path):
                if scope["method"] in route.methods:
                    full = full or route.path
                else:
                    partial = partial or route.path
        for other in others:  # Starlette routes: their own matching
            match = other.matches(scope)[0]
            if match is Match.FULL:
                full = full or getattr(other, "path", None)
            elif match is Match.PARTIAL:
                partial = partial or getattr(other, "path", None)
        return full or partial

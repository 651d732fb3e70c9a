"""The layers around the routes, and the order a request passes them (outermost first):

HTTP metrics → the service's own middleware → CORS (FTAPI_CORS_ORIGINS) → API key → HotPath → FastAPI.

Middleware a service adds (`app.add_middleware`, or `app.fastapi.add_middleware`) is taken out of FastAPI's
own stack and wrapped around all of it instead: it sees task submits and job reads, which HotPath answers
without FastAPI, and requests the API key refused, each request exactly once. A service that adds none
gets no extra layer, so the hot path keeps its speed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .responses import json_response

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("fasttask")

EXPOSED_HEADERS = ("Location", "Retry-After", "Content-Disposition", "Content-Range")
"""Response headers a browser front end may read: where the job is, when to retry a full queue, and a
downloaded file's name and range."""


def with_cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """CORS for `origins` (`*`: any). Preflights are answered here, before the API-key check: browsers send
    them without the key. Keys travel in headers, never cookies, so credentials are not allowed."""
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=list(EXPOSED_HEADERS),
    )


def with_user_middleware(app: ASGIApp, api: FastAPI, middleware: Sequence[Middleware]) -> ASGIApp:
    """`app` inside the service's middleware, the first in `middleware` outermost (Starlette's order)."""
    for cls, args, kwargs in reversed(middleware):
        app = cls(app, *args, **kwargs)
    inner = app

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = api  # as Starlette sets it before its middleware: `request.app` works in theirs
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await inner(scope, receive, noting_start)
        except Exception:
            # a service middleware raised: the JSON 500 every other route gives, on a connection that stays usable
            logger.exception("unhandled error in middleware on %s %s", scope["method"], scope["path"])
            if started:
                raise
            await json_response({"detail": "internal server error"}, 500)(scope, receive, send)

    return serve

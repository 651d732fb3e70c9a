"""FastTaskAPI: the object a service author decorates, and what serves it."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import threading
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigError
from .progress import JobProgress
from .settings import Settings
from .tasks import DEFAULT_QUEUE_SIZE, DEFAULT_RESULT_TTL_S, Batch, TaskDef, is_progress_parameter

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

F = TypeVar("F", bound=Callable[..., Any])


class FastTaskAPI:
    """A job service: task endpoints that answer with a job at once, run it, and keep its result.

    Settings come from FTAPI_* environment variables; keyword arguments override them
    (`FastTaskAPI(queue="local", concurrency=2)`). The object is an ASGI app: `uvicorn module:app` works.
    """

    def __init__(self, title: str = "fasttask", *, settings: Settings | None = None, **overrides: Any) -> None:
        self.title = title
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(**overrides) if overrides else base
        self.tasks: dict[str, TaskDef] = {}
        self.plain_endpoints: list[tuple[str, Callable[..., Any], list[str]]] = []
        self._setup_hooks: list[Callable[[], Any]] = []
        self._setup_done = False
        self._setup_lock = threading.Lock()
        self.added_middleware: list[tuple[Callable[..., ASGIApp], tuple[Any, ...], dict[str, Any]]] = []
        """Added with `add_middleware`, outermost first: (class, args, keyword arguments)."""
        self._asgi: ASGIApp | None = None
        self._fastapi: FastAPI | None = None

    # -- declaring ---------------------------------------------------------------------------------
    def task_endpoint(
        self,
        path: str,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        timeout: float | None = None,
        retries: int = 0,
        result_ttl: float = DEFAULT_RESULT_TTL_S,
        methods: Sequence[str] = ("POST",),
        batch: Batch | None = None,
    ) -> Callable[[F], F]:
        """Serve `fn` at `path` as a job: a call answers 202 with the job, which runs in the background.

        With `batch=Batch(max_size, max_wait_ms)` up to `max_size` queued jobs run as one call: each parameter
        is annotated `list[T]` (a request carries one `T`), and `fn` returns a list with one result per job.
        """

        def register(fn: F) -> F:
            if path in self.tasks or any(p == path for p, _, _ in self.plain_endpoints):
                raise ConfigError(f"path {path} is registered twice")
            self._check_not_built()
            verbs = tuple(m.upper() for m in methods)
            if batch is not None and not isinstance(batch, Batch):
                raise ConfigError(f"{path}: batch= takes a fasttask.Batch, not {type(batch).__name__}")
            self.tasks[path] = TaskDef(path, fn, queue_size, timeout, retries, result_ttl, verbs, batch)
            return fn

        return register

    def endpoint(self, path: str, methods: Sequence[str] = ("POST",)) -> Callable[[F], F]:
        """Serve `fn` at `path` directly: no job, the answer is its return value."""

        def register(fn: F) -> F:
            if path in self.tasks or any(p == path for p, _, _ in self.plain_endpoints):
                raise ConfigError(f"path {path} is registered twice")
            self._check_not_built()
            self.plain_endpoints.append((path, _without_progress(fn), [m.upper() for m in methods]))
            return fn

        return register

    # FastTaskAPI 1.x spellings
    def post(self, path: str, queue_size: int = DEFAULT_QUEUE_SIZE, **options: Any) -> Callable[[F], F]:
        return self.task_endpoint(path, queue_size, methods=("POST",), **options)

    def get(self, path: str, queue_size: int = DEFAULT_QUEUE_SIZE, **options: Any) -> Callable[[F], F]:
        return self.task_endpoint(path, queue_size, methods=("GET",), **options)

    def setup(self, fn: F) -> F:
        """Register a function that runs once in each process that executes jobs, before its first job.

        Load models here: API-only processes never run it, so they stay light and start fast.
        """
        self._setup_hooks.append(fn)
        return fn

    async def run_setup_hooks(self) -> None:
        """Run the setup hooks once per process, whichever thread or event loop asks first (the others wait).

        Sync hooks run in a thread, so an embedded server stays live while a model loads.
        """
        if self._setup_done:
            return
        await asyncio.to_thread(self._setup_lock.acquire)
        try:
            if self._setup_done:
                return
            for hook in self._setup_hooks:
                if inspect.iscoroutinefunction(hook):
                    await hook()
                else:
                    await asyncio.to_thread(hook)
            self._setup_done = True
        finally:
            self._setup_lock.release()

    def add_middleware(self, middleware_class: Callable[..., ASGIApp], *args: Any, **kwargs: Any) -> None:
        """Wrap every route, task submits and job reads included, in `middleware_class(app, *args, **kwargs)`
        (Starlette's middleware); the last one added is the outermost. Call it before the app serves."""
        if self._asgi is not None:
            raise ConfigError("middleware must be added before the app starts serving")
        self.added_middleware.insert(0, (middleware_class, args, kwargs))

    # -- serving -----------------------------------------------------------------------------------
    @property
    def asgi(self) -> ASGIApp:
        """The ASGI application serving this service, built on first use (its first request or lifespan):
        the middleware added by then is part of it."""
        if self._asgi is None:
            from .http.api import build_asgi

            self._asgi = build_asgi(self, self.fastapi)
        return self._asgi

    @property
    def fastapi(self) -> FastAPI:
        """The FastAPI application inside: add your own routes or middleware to it before serving (its
        middleware wraps every route, like `add_middleware`'s)."""
        if self._fastapi is None:
            from .http.api import build_api

            self._fastapi = build_api(self)
        return self._fastapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    def start(self, host: str | None = None, port: int | None = None) -> None:
        """Serve per the settings: an HTTP server, or (FTAPI_BACKEND=runpod) a runpod serverless worker."""
        if self.settings.backend == "runpod":  # host and port are runpod's flags here (--rp_api_port, ...)
            from .runpod.handler import serve_runpod

            serve_runpod(self)
            return
        import uvicorn

        self.asgi  # noqa: B018 - built before the collector is settled, as `fasttask serve` does
        settle_garbage_collector()
        uvicorn.run(self, host=host or self.settings.host, port=port or self.settings.port, log_level="info")

    def _check_not_built(self) -> None:
        if self._fastapi is not None:
            raise ConfigError("endpoints must be declared before the app starts serving")


def settle_garbage_collector() -> None:
    """Move what a process holds once loaded (modules, the app, its models: tens of thousands of objects) out of
    the garbage collector's way: every full collection would walk through them again, for nothing."""
    gc.collect()
    gc.freeze()


def _without_progress(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A plain endpoint may ask for `job_progress` too; it gets one that reports nowhere."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigError(f"cannot resolve the type hints of {fn.__qualname__}: {exc}") from exc
    names = [n for n in signature.parameters if is_progress_parameter(n, hints.get(n))]
    if not names:
        return fn
    kept = [p for n, p in signature.parameters.items() if n not in names]

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs, **{n: JobProgress() for n in names})

        call_async.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
        return call_async

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs, **{n: JobProgress() for n in names})

    call.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    return call


__all__ = ["FastTaskAPI"]

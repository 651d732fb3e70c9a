"""The `fasttask` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from ._version import __version__
from .app import FastTaskAPI, settle_garbage_collector
from .client.cli import add_call_command
from .errors import ConfigError, MissingExtra
from .logs import configure_worker_logging
from .loops import LoopHealth


def load_app(target: str) -> FastTaskAPI:
    """Import `module:attribute` (the current directory is importable, as for uvicorn)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"expected MODULE:APP, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # only the target itself (or a package on its way) not being there is a usage error: a missing
        # import inside the user's module keeps its traceback, which says where it is
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise ConfigError(
            f"cannot load {target}: no module named {exc.name!r} in {os.getcwd()} or on PYTHONPATH"
        ) from None
    if not hasattr(module, attribute):
        raise ConfigError(f"cannot load {target}: module {module_name!r} has no attribute {attribute!r}")
    app = getattr(module, attribute)
    if not isinstance(app, FastTaskAPI):
        raise ConfigError(f"{target} is not a FastTaskAPI (found {type(app).__name__})")
    return app


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .logs import uvicorn_log_config

    app = load_app(args.app)
    app.asgi  # noqa: B018 - built now, so that what cannot work stops the process here, not every request
    settle_garbage_collector()
    host = args.host or app.settings.host
    port = args.port or app.settings.port
    # FTAPI_LOG_FORMAT=json: uvicorn's lines as JSON too, and a line per request (its access log)
    log_config = uvicorn_log_config(app.settings, args.log_level)
    access_log = args.access_log or log_config is not None
    if log_config is None:  # uvicorn's own logging setup, as it always was
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level=args.log_level)
    else:
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level=args.log_level, log_config=log_config)
    return 0


def work(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    redis_url = app.settings.redis_url
    if not redis_url:
        raise ConfigError("fasttask worker needs FTAPI_REDIS_URL (the Redis both API and workers share)")
    try:
        from .redis.process import run_worker_process
    except ModuleNotFoundError as exc:
        raise ConfigError("fasttask worker needs `pip install fasttask[redis]`") from exc
    configure_worker_logging(app.settings, args.log_level)
    settle_garbage_collector()
    endpoints = [path.strip() for path in args.endpoints.split(",") if path.strip()] if args.endpoints else None
    metrics = None
    loops = LoopHealth()
    if args.metrics_port is not None:
        from .metrics import serve_worker_metrics

        host = args.metrics_host or app.settings.host
        metrics = serve_worker_metrics(endpoints or list(app.tasks), host, args.metrics_port, loops)
        logging.getLogger("fasttask.worker").info("metrics on http://%s:%d/metrics", host, args.metrics_port)
    jobs = metrics.jobs if metrics is not None else None
    return run_worker_process(app, redis_url, endpoints, args.grace, args.name, args.concurrency, jobs, loops)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fasttask", description="Serve and run fasttask apps.")
    parser.add_argument("--version", action="version", version=f"fasttask {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser(
        "serve", help="run an API process (uvicorn); with the embedded queue (FTAPI_QUEUE=local) it runs the jobs too"
    )
    serve_cmd.add_argument("app", help="MODULE:APP, e.g. service:app")
    serve_cmd.add_argument("--host", default=None, help="bind address (default FTAPI_HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, default=None, help="port (default FTAPI_PORT or 8000)")
    serve_cmd.add_argument("--access-log", action="store_true", help="log every request")
    serve_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve_cmd.set_defaults(handler=serve)
    worker_cmd = commands.add_parser("worker", help="run a worker process for the Redis queue")
    worker_cmd.add_argument("app", help="MODULE:APP, e.g. service:app")
    worker_cmd.add_argument("--endpoints", default=None, help="comma-separated task paths (default: all)")
    worker_cmd.add_argument("--name", default=None, help="worker name in RQ (default: host, pid and a random part)")
    worker_cmd.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds to finish the current job after SIGTERM (FTAPI_WORKER_GRACE_S)",
    )
    worker_cmd.add_argument(
        "--concurrency", type=int, default=None, help="jobs this process runs at once (FTAPI_CONCURRENCY, default 1)"
    )
    worker_cmd.add_argument(
        "--metrics-port", type=int, default=None, help="serve this worker's Prometheus metrics on this port"
    )
    worker_cmd.add_argument("--metrics-host", default=None, help="address for --metrics-port (default FTAPI_HOST)")
    worker_cmd.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    worker_cmd.set_defaults(handler=work)
    add_call_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"fasttask: {exc.detail}", file=sys.stderr)
        return 2
    except MissingExtra as exc:  # a setting asks for an optional dependency that is not installed
        print(f"fasttask: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

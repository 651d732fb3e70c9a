"""The runpod handler: every task endpoint of the app behind one handler, and `serve_runpod` that starts it.

The handler itself needs nothing from the SDK (progress reports go through `progress.py`), so tests call
it directly; `serve_runpod` imports the SDK only when the app starts in this mode.

A job's input is `{"path": "/make_fries", <the task's parameters>}`. The parameters validate exactly like
the HTTP route's (defaults, pydantic models, files as base64 / data URI / dict / URL behind the same
address guard); the output is the task's return value as JSON, file results as `{file_name, content_type,
content}` (base64) or, with a bucket, `{file_name, content_type, size, url}`. Whatever goes wrong (no such
path, invalid input, the task raised or timed out) is returned as runpod's `{"error": "..."}`, which makes
the job FAILED with that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import ConfigError, FastTaskError, JobCancelled
from ..fetch import download
from ..files import close_files, iter_files
from ..logs import configure_worker_logging
from ..runner import GENERATOR_KINDS, Call, CallJob, run_call
from ..tasks import TaskDef, validation_errors
from ..threads import JobThreads
from .files import ResultFiles, result_store
from .progress import ProgressSender
from .sdk import runpod_sdk

if TYPE_CHECKING:
    from ..app import FastTaskAPI

logger = logging.getLogger("fasttask.runpod")

SWEEP_INTERVAL_S = 600.0
"""How often (at most) a worker that uploads result files deletes the expired ones from the bucket."""

_MB = 1024 * 1024


def serve_runpod(app: FastTaskAPI) -> None:
    """Run the app as a runpod serverless worker: the setup hooks first, then runpod's job loop.

    runpod's own command-line flags apply: `--rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port P` serves
    its local test API, `--test_input '{"input": {...}}'` runs one job and exits.
    """
    runpod = runpod_sdk()
    configure_worker_logging(app.settings, "info")  # masked lines, text or JSON; failed jobs say why
    worker = RunpodWorker(app)
    asyncio.run(app.run_setup_hooks())  # before the first job is taken: model loading stays out of every job
    runpod.serverless.start(worker.config())


class HandlerError(Exception):
    """Ends a runpod job as FAILED: the handler returns (or, streaming, yields) `{"error": message}`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RunpodWorker:
    """The runpod handler for an app's task endpoints, and the runpod configuration that goes with it."""

    def __init__(self, app: FastTaskAPI) -> None:
        if not app.tasks:
            raise ConfigError("FTAPI_BACKEND=runpod: the app has no task endpoints to serve")
        self.app = app
        self.settings = app.settings
        self.concurrency = app.settings.concurrency or 1
        self.store = result_store(app.settings)
        self.max_file_bytes = int(app.settings.max_file_mb * _MB)
        self._threads = JobThreads(self.concurrency, "fasttask-runpod")
        self._last_sweep = -math.inf

    def config(self) -> dict[str, Any]:
        """What `runpod.serverless.start` takes."""
        if self.settings.runpod_stream:
            return {
                "handler": self.handle_stream,
                "return_aggregate_stream": True,
                "concurrency_modifier": self.concurrency_modifier,
            }
        return {"handler": self.handle, "concurrency_modifier": self.concurrency_modifier}

    def concurrency_modifier(self, current: int) -> int:
        """Jobs this worker runs at once: FTAPI_CONCURRENCY (default 1)."""
        return self.concurrency

    def close(self) -> None:
        self._threads.shutdown()

    # -- the handlers ---------------------------------------------------------------------------------
    async def handle(self, job: dict[str, Any]) -> Any:
        """The handler without streaming: the output is the task's return value (a generator's yields as a list)."""
        try:
            async with contextlib.aclosing(self._events(job)) as events:
                async for kind, value in events:
                    if kind != "output":
                        return value
        except HandlerError as failure:
            return {"error": failure.message}
        raise AssertionError("a job ended without a result")  # pragma: no cover

    async def handle_stream(self, job: dict[str, Any]) -> AsyncIterator[Any]:
        """The handler with FTAPI_RUNPOD_STREAM=1: a generator task's yields stream one by one, a plain task's
        return value comes as the only item, and a failure as a last `{"error": ...}` item (runpod then marks
        the job FAILED)."""
        try:
            async with contextlib.aclosing(self._events(job)) as events:
                async for kind, value in events:
                    if kind != "outputs":  # a generator's list of yields: already streamed one by one
                        yield value
        except HandlerError as failure:
            yield {"error": failure.message}

    # -- one job --------------------------------------------------------------------------------------
    async def _events(self, job: Mapping[str, Any]) -> AsyncGenerator[tuple[str, Any], None]:
        """`("output", value)` for each yield of a generator task as it happens, then `("result", value)` for
        a plain task or `("outputs", [value, ...])` for a generator task.

        Raises HandlerError. The task runs on this worker's threads (`def`, generators) or on the running
        event loop (`async def`, async generators).
        """
        job_id = str(job.get("id", ""))
        await self.app.run_setup_hooks()  # done already when started by serve_runpod
        task, params = await self._prepare(job.get("input"))
        progress_sender = ProgressSender(job)
        files = ResultFiles(self.store, job_id, task.result_ttl_s)
        outputs: deque[Any] = deque()
        wake = asyncio.Event()

        def push(value: Any) -> None:  # on the loop, in order, before the call's end
            outputs.append(value)
            wake.set()

        call = Call(task, [CallJob(job_id, params, progress_sender.report, push, files.keep)])
        running = asyncio.ensure_future(run_call(call, self._threads))
        running.add_done_callback(lambda _: wake.set())
        # at the timeout async code is cancelled outright; threads stop at their next set_status or yield
        call.arm_timeout(asyncio.get_running_loop(), lambda _: wake.set())
        try:
            while True:
                wake.clear()
                while outputs:
                    value = outputs.popleft()
                    if not call.timed_out:
                        await self._resolve(files)
                        yield "output", value
                if running.done():
                    break
                await wake.wait()
            if call.timed_out:
                raise HandlerError(f"task {task.path} timed out after {task.timeout_s:g} s")
            running.result()  # the handler's own cancellation, as it came
            outcome = call.jobs[0]
            if outcome.error is not None:
                raise HandlerError(self._task_error(task, outcome.error))
            await self._resolve(files)
            yield ("outputs" if task.kind in GENERATOR_KINDS else "result"), outcome.result
        finally:
            call.disarm()
            progress_sender.close()
            if not running.done():  # runpod stopped the job (or its consumer went away)
                call.stop_job(call.jobs[0])  # async code is cancelled; a thread stops at its next report

            def cleanup(_: object = None) -> None:
                close_files(params.values())
                files.close()

            if running.done():
                cleanup()
            else:  # a thread still runs the task: its files stay open until it returns
                running.add_done_callback(cleanup)
            self._maybe_sweep(files)

    async def _prepare(self, data: Any) -> tuple[TaskDef, dict[str, Any]]:
        """The task the input's path names, and its validated keyword arguments (URL files downloaded)."""
        if not isinstance(data, dict):
            raise HandlerError('the job input must be a JSON object: {"path": "/<task>", <its parameters>}')
        values = dict(data)
        task = self._route(values.pop("path", None))
        try:
            params = task.validate(values, self.max_file_bytes)
        except ValidationError as exc:
            close_files(values.values())
            raise HandlerError(f"invalid input for {task.path}: {_field_errors(exc)}") from None
        except FastTaskError as exc:  # a file over FTAPI_MAX_FILE_MB
            close_files(values.values())
            raise HandlerError(f"invalid input for {task.path}: {exc.detail}") from None
        try:
            for name, value in params.items():
                for media in iter_files(value):
                    if media.source_url is None:
                        continue
                    try:
                        downloaded = await download(
                            media.source_url, self.max_file_bytes, self.settings.allow_private_urls
                        )
                    except FastTaskError as exc:
                        raise HandlerError(f"invalid input for {task.path}: input.{name}: {exc.detail}") from None
                    media.take_content(downloaded)
        except BaseException:
            close_files(params.values())
            raise
        return task, params

    def _route(self, path: Any) -> TaskDef:
        tasks = self.app.tasks
        served = ", ".join(tasks)
        if path is None:
            if len(tasks) == 1:
                return next(iter(tasks.values()))
            raise HandlerError(f"the job input has no path: say which task to run, one of {served}")
        task = None
        if isinstance(path, str):
            task = tasks.get(path) or (None if path.startswith("/") else tasks.get("/" + path))
        if task is None:
            raise HandlerError(f"unknown path {path!r}: this worker serves {served}")
        return task

    def _task_error(self, task: TaskDef, error: BaseException) -> str:
        """The runpod error message of a failed call (the runner has logged it)."""
        message = f"task {task.path} raised {type(error).__name__}: {error}"
        if isinstance(error, JobCancelled):
            message = f"task {task.path} was stopped"
        if self.settings.debug:
            message += "\n" + "".join(traceback.format_exception(error))
        return message

    async def _resolve(self, files: ResultFiles) -> None:
        """Fill in the file results handed out so far: base64, or uploaded to the bucket (off the event loop)."""
        if not files.pending:
            return
        try:
            await asyncio.to_thread(files.resolve)
        except Exception as exc:
            logger.error("job %s: storing a result file failed", files.job_id, exc_info=exc)
            raise HandlerError(f"could not store a result file: {type(exc).__name__}: {exc}") from None

    def _maybe_sweep(self, files: ResultFiles) -> None:
        store = self.store
        if store is None or not files.uploaded or time.monotonic() - self._last_sweep < SWEEP_INTERVAL_S:
            return
        self._last_sweep = time.monotonic()

        def sweep() -> None:
            try:
                store.sweep()
            except Exception as exc:  # best effort: the next sweep tries again
                logger.warning("deleting expired result files failed: %s", exc)

        threading.Thread(target=sweep, name="fasttask-runpod-sweep", daemon=True).start()


def _field_errors(exc: ValidationError) -> str:
    """pydantic's errors as one line: `input.amount: Input should be a valid integer; ...`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in validation_errors(exc, "input")
    )


__all__ = ["RunpodWorker", "serve_runpod"]

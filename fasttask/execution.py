"""The Redis worker's way of calling a task, until it runs its calls through `fasttask.runner` as the
embedded queue and the runpod handler do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import JobCancelled
from .progress import JobProgress
from .results import FileStore, to_json_value
from .runner import error_info
from .tasks import TaskDef, TaskKind

OutputSink = Callable[[Any], None]
"""Receives each JSON-ready yield of a generator task as it happens."""


def run_sync(
    task: TaskDef, params: dict[str, Any], progress: JobProgress, store_file: FileStore, on_output: OutputSink
) -> Any:
    """Run a `def` or generator task to the end and return its JSON-ready result. Blocks: call in a thread."""
    kwargs = task.call_kwargs(params, progress)
    if task.kind is TaskKind.GENERATOR:
        outputs = []
        for item in task.fn(**kwargs):
            if progress.cancelled:
                raise JobCancelled(f"job {progress.job_id} was stopped")
            value = to_json_value(item, store_file)
            outputs.append(value)
            on_output(value)
        return outputs
    return to_json_value(task.fn(**kwargs), store_file)


async def run_async(
    task: TaskDef, params: dict[str, Any], progress: JobProgress, store_file: FileStore, on_output: OutputSink
) -> Any:
    """Run an `async def` or async-generator task on the running event loop."""
    kwargs = task.call_kwargs(params, progress)
    if task.kind is TaskKind.ASYNC_GENERATOR:
        outputs = []
        async for item in task.fn(**kwargs):
            if progress.cancelled:
                raise JobCancelled(f"job {progress.job_id} was stopped")
            value = to_json_value(item, store_file)
            outputs.append(value)
            on_output(value)
        return outputs
    return to_json_value(await task.fn(**kwargs), store_file)


__all__ = ["error_info", "run_async", "run_sync"]

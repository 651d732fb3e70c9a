"""The queues. HTTP routes talk to two seams: a `Broker` (what a queue does with jobs) and its `views`
(`JobViews`: read-only answers for `/queues`, `GET /jobs` and the dashboard). Each queue implements both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..settings import Settings
from ..tasks import TaskDef
from .base import Broker, JobEvent
from .views import JobPage, JobViews, QueueInfo, WorkerInfo

if TYPE_CHECKING:
    from ..app import FastTaskAPI
    from ..metrics import JobMetrics

__all__ = ["Broker", "JobEvent", "JobPage", "JobViews", "QueueInfo", "WorkerInfo", "create_broker"]


def create_broker(
    settings: Settings, tasks: Mapping[str, TaskDef], app: FastTaskAPI, metrics: JobMetrics | None = None
) -> Broker:
    """The broker FTAPI_QUEUE asks for; it counts the jobs it ends in `metrics` when given."""
    if settings.queue == "local":
        from .local import LocalBroker

        return LocalBroker(tasks, settings, app.run_setup_hooks, metrics)
    try:
        from ..redis.broker import RedisBroker
    except ModuleNotFoundError as exc:
        raise ConfigError("FTAPI_QUEUE=redis needs `pip install fasttask[redis]`") from exc
    return RedisBroker(tasks, settings, metrics)

"""The broker seam: where jobs wait, run and keep their state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ..jobs import JobRecord
from ..tasks import TaskDef


@dataclass(frozen=True)
class JobEvent:
    """One server-sent event of a job's stream."""

    kind: Literal["progress", "output", "end"]
    data: Any


@dataclass(frozen=True)
class ResultFile:
    """A file a job returned, ready to send: its metadata, and its bytes [start, end) in chunks."""

    file_name: str
    content_type: str
    size: int
    read: Callable[[int, int], Iterator[bytes]]


@dataclass(frozen=True)
class QueueInfo:
    """One task endpoint's queue, as `/queues` reports it."""

    endpoint: str
    queued: int
    running: int
    queue_size: int
    workers: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "queued": self.queued,
            "running": self.running,
            "queue_size": self.queue_size,
            "workers": self.workers,
        }


class Broker(ABC):
    """Accepts jobs, runs or hands them out, and answers for their state."""

    async def start(self) -> None:
        """Connect and start background work; called once when the server starts."""

    async def close(self) -> None:
        """Stop background work and release resources."""

    @abstractmethod
    async def submit(self, task: TaskDef, params: dict[str, Any]) -> JobRecord:
        """Accept a job (raises QueueFull when the endpoint's queue is full)."""

    @abstractmethod
    async def get(self, job_id: str) -> JobRecord:
        """The job's current state (raises JobNotFound)."""

    @abstractmethod
    async def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        """The job once it is final, or its state after `timeout_s`, whichever comes first."""

    @abstractmethod
    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job (raises JobAlreadyFinal when it already ended)."""

    @abstractmethod
    async def open_stream(self, job_id: str) -> AsyncIterator[JobEvent]:
        """Progress and output events as they happen, ending with `end` (raises JobNotFound up front)."""

    @abstractmethod
    async def result_file(self, job_id: str, index: int) -> ResultFile:
        """A file the job returned, by its index in the job's result (raises JobNotFound)."""

    @abstractmethod
    async def queues(self) -> list[QueueInfo]:
        """Per task endpoint: queued and running counts, the limit and the workers serving it."""

    async def ready(self) -> bool:
        """True when the backend can take and serve jobs."""
        return True

"""The broker seam: what a queue must do with jobs. Accept them, answer for their state, wait on them, cancel
them, stream them, hand out their result files. The read-only views (`/queues`, `GET /jobs`, the dashboard) are
a second seam, `views.JobViews`, which each broker hands out as its `views`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..idempotency import KeyedJob
from ..jobs import JobRecord
from ..loops import LoopHealth
from ..tasks import TaskDef
from .views import JobViews

if TYPE_CHECKING:
    from ..webhook_loops import WebhookService
    from ..webhooks import WebhookSpec


@dataclass(frozen=True)
class JobEvent:
    """One server-sent event of a job's stream."""

    kind: Literal["progress", "output", "end"]
    data: Any
    outputs_sent: int = 0
    """How many outputs the stream had sent with this event: its SSE id, so a client that reconnects with
    `Last-Event-ID` resumes after the outputs it already has."""


@dataclass(frozen=True)
class ResultFile:
    """A file a job returned, ready to send: its metadata, and its bytes [start, end) in chunks."""

    file_name: str
    content_type: str
    size: int
    read: Callable[[int, int], Iterator[bytes]]


class Broker(ABC):
    """A queue's front: accepts jobs, runs or hands them out, and answers for their state."""

    loops: LoopHealth
    """The broker's background loops and how their last rounds went (for `/ready` and `/metrics`)."""
    views: JobViews
    """The queue's read-only views, over the same state and connection as the broker."""
    webhooks: WebhookService
    """The webhook loops, over the queue's own store of watches and deliveries."""

    async def start(self) -> None:
        """Connect and start background work; called once when the server starts."""

    async def close(self) -> None:
        """Stop background work and release resources."""

    @abstractmethod
    async def submit(self, task: TaskDef, params: dict[str, Any], webhook: WebhookSpec | None = None) -> JobRecord:
        """Accept a job (raises QueueFull when the endpoint's queue is full); with a webhook, watch it."""

    # Idempotency-Key (see `http/keyed.py` for the order of the calls). A key is per endpoint: `task.path`.
    @abstractmethod
    async def hold_key(self, task: TaskDef, key: str, quick: bool = False) -> KeyedJob | None:
        """Before a keyed submit reads its parameters: the job made with the key before, or None when this
        request may make it (the key is marked in flight meanwhile). Raises IdempotentRequestInFlight while
        another request has it marked. `quick`: the parameters are read at once (a small body, no files),
        so a queue whose keys live elsewhere may mark the key in this process only and leave the rest to
        `submit_keyed`, which decides atomically (and answers 409 for a mark of another process)."""

    @abstractmethod
    async def submit_keyed(
        self,
        task: TaskDef,
        params: dict[str, Any],
        key: str,
        fingerprint: str,
        webhook: WebhookSpec | None = None,
    ) -> JobRecord | KeyedJob:
        """`submit`, and remember the job under the key, in one step: another request that made a job with
        the key meanwhile wins, and its job is answered instead (nothing is submitted then)."""

    @abstractmethod
    async def release_key(self, task: TaskDef, key: str, held: KeyedJob | None = None) -> None:
        """Forget the key if it still holds what this request saw: its in-flight mark (`held` None: the
        request made no job), or a job that is gone."""

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
    async def open_stream(self, job_id: str, after_outputs: int = 0) -> AsyncIterator[JobEvent]:
        """Progress and output events as they happen, ending with `end` (raises JobNotFound up front)."""

    @abstractmethod
    async def result_file(self, job_id: str, index: int) -> ResultFile:
        """A file the job returned, by its index in the job's result (raises JobNotFound)."""

    async def ready(self) -> bool:
        """True when the queue can take and serve jobs (Redis reachable, the embedded queue started)."""
        return True

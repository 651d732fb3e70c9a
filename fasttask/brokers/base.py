"""The broker seam: where jobs wait, run and keep their state."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from ..errors import InvalidInput
from ..jobs import JobRecord, JobStatus, isoformat, utcnow
from ..loops import LoopHealth
from ..series import MinuteStats
from ..tasks import TaskDef

MAX_PAGE = 200
"""Most jobs one `GET /jobs` page holds."""


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


@dataclass(frozen=True)
class QueueInfo:
    """One task endpoint's queue, as `/queues` reports it."""

    endpoint: str
    queued: int
    running: int
    queue_size: int
    workers: list[dict[str, Any]]
    stopping: int = 0
    """Jobs already cancelled or timed out whose code has not returned yet: they still hold a runner (a thread,
    a worker) but are no longer running jobs."""

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "queued": self.queued,
            "running": self.running,
            "stopping": self.stopping,
            "queue_size": self.queue_size,
            "workers": self.workers,
        }


@dataclass(frozen=True)
class JobPage:
    """One page of `GET /jobs`: newest first, and the cursor of the next page (None on the last)."""

    jobs: list[JobRecord]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"jobs": [record.to_json() for record in self.jobs], "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class WorkerInfo:
    """A process that runs jobs, as the dashboard shows it."""

    name: str
    endpoints: list[str]
    state: str | None
    current_jobs: list[str] = field(default_factory=list)
    last_heartbeat: datetime | None = None
    pid: int | None = None
    hostname: str | None = None

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        age = None
        if self.last_heartbeat is not None:
            age = round(max(0.0, ((now or utcnow()) - self.last_heartbeat).total_seconds()), 3)
        return {
            "name": self.name,
            "endpoints": self.endpoints,
            "state": self.state,
            "current_jobs": self.current_jobs,
            "last_heartbeat": isoformat(self.last_heartbeat),
            "heartbeat_age_s": age,
            "pid": self.pid,
            "hostname": self.hostname,
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def unix_us(moment: datetime) -> int:
    """An aware datetime as whole microseconds since the epoch (exact, unlike float seconds)."""
    return (moment - _EPOCH) // _MICROSECOND


def activity_us(record: JobRecord) -> int:
    """When the job last changed state (ended, else started, else submitted), in unix microseconds:
    `GET /jobs` lists jobs newest first by it, job id breaking ties."""
    return unix_us(record.finished_at or record.started_at or record.created_at)


def encode_cursor(moment_us: int, job_id: str) -> str:
    """The position after the job at (`moment_us`, `job_id`) in the newest-first order; opaque to clients."""
    return f"{moment_us}~{job_id}"


MAX_CURSOR_CHARS = 100
"""A cursor is a time in microseconds, `~` and a job id: far shorter than this."""


def decode_cursor(raw: str | None) -> tuple[int, str] | None:
    if raw is None or raw == "":
        return None
    moment, sep, job_id = raw.partition("~")
    if len(raw) <= MAX_CURSOR_CHARS and sep and job_id and moment.isdigit() and moment.isascii():
        return int(moment), job_id
    shown = raw if len(raw) <= MAX_CURSOR_CHARS else raw[:MAX_CURSOR_CHARS] + "…"
    raise InvalidInput(f"cursor {shown!r} is not one that GET /jobs gave")


class RecentCounts:
    """Final jobs per endpoint and status in one-second slots, for the dashboard's recent throughput."""

    def __init__(self, keep_s: int = 300) -> None:
        self._slots: deque[tuple[int, Counter[tuple[str, str]]]] = deque(maxlen=keep_s)

    def add(self, endpoint: str, status: JobStatus) -> None:
        second = int(time.monotonic())
        if not self._slots or self._slots[-1][0] != second:
            self._slots.append((second, Counter()))
        self._slots[-1][1][(endpoint, status.value)] += 1

    def counts(self, window_s: float) -> dict[str, dict[str, int]]:
        since = time.monotonic() - window_s
        out: dict[str, dict[str, int]] = {}
        for second, counts in self._slots:
            if second >= since:
                for (endpoint, status), n in counts.items():
                    per = out.setdefault(endpoint, {})
                    per[status] = per.get(status, 0) + n
        return out


def hostname() -> str:
    import socket

    return socket.gethostname()


class Broker(ABC):
    """Accepts jobs, runs or hands them out, and answers for their state."""

    loops: LoopHealth
    """The broker's background loops and how their last rounds went (for `/ready` and `/metrics`)."""

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
    async def open_stream(self, job_id: str, after_outputs: int = 0) -> AsyncIterator[JobEvent]:
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

    @abstractmethod
    async def list_jobs(
        self, endpoint: str | None, status: JobStatus | None, limit: int, cursor: str | None
    ) -> JobPage:
        """Jobs newest first (by their last state change), optionally of one endpoint and status; `cursor`
        is the previous page's `next_cursor` (raises InvalidInput for one it did not give)."""

    @abstractmethod
    async def workers(self) -> list[WorkerInfo]:
        """The processes running this service's jobs, with the jobs they run now."""

    @abstractmethod
    async def recent(self, window_s: float) -> dict[str, dict[str, int]]:
        """Per endpoint, how many jobs reached each final status in the last `window_s` seconds."""

    async def history(self, minutes: int) -> dict[str, list[MinuteStats | None]] | None:
        """Per endpoint and minute (oldest first, the current one last), the jobs that ended and their wait and
        run times, read from shared state. None (the default) when the jobs run in this process, whose own
        counters serve the dashboard's charts instead."""
        return None

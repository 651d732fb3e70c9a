"""The embedded queue's read-only views: `/queues`, `GET /jobs`, the dashboard's worker and recent counts.

`LocalBroker` owns the state and changes it; these views hold the same containers and only read them, on the
event loop the broker runs on (so no lock is needed).
"""

from __future__ import annotations

import heapq
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Protocol

from ..jobs import JobRecord, JobStatus, utcnow
from ..tasks import TaskDef
from .views import JobPage, JobViews, QueueInfo, WorkerInfo, activity_us, decode_cursor, encode_cursor


class HasRecord(Protocol):
    """A job as the embedded queue keeps it; the views read only its record."""

    record: JobRecord


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


class LocalViews(JobViews):
    """Answers from the embedded queue's own containers, which its broker keeps current."""

    def __init__(
        self,
        tasks: Mapping[str, TaskDef],
        concurrency: int,
        jobs: Mapping[str, HasRecord],
        counts: tuple[Counter[str], Counter[str], Counter[str]],
        running_ids: set[str],
        recent: RecentCounts,
    ) -> None:
        self._tasks = tasks
        self._concurrency = concurrency
        self._jobs = jobs
        self._waiting_count, self._running_count, self._stopping_count = counts
        self._running_ids = running_ids
        self._recent = recent

    async def queues(self) -> list[QueueInfo]:
        worker = {"name": f"embedded-{os.getpid()}", "concurrency": self._concurrency}
        return [
            QueueInfo(
                path,
                self._waiting_count[path],
                self._running_count[path],
                task.queue_size,
                [worker],
                self._stopping_count[path],
            )
            for path, task in self._tasks.items()
        ]

    async def list_jobs(
        self, endpoint: str | None, status: JobStatus | None, limit: int, cursor: str | None
    ) -> JobPage:
        after = decode_cursor(cursor)
        records = (
            job.record
            for job in self._jobs.values()
            if (endpoint is None or job.record.endpoint == endpoint) and (status is None or job.record.status is status)
        )
        keyed = ((activity_us(record), record.id, record) for record in records)
        if after is not None:
            keyed = (item for item in keyed if (item[0], item[1]) < after)
        page = heapq.nlargest(limit + 1, keyed, key=lambda item: (item[0], item[1]))
        more = len(page) > limit
        page = page[:limit]
        next_cursor = encode_cursor(page[-1][0], page[-1][1]) if more else None
        return JobPage([record for _, _, record in page], next_cursor)

    async def workers(self) -> list[WorkerInfo]:
        running = sorted(self._running_ids)
        return [
            WorkerInfo(
                name=f"embedded-{os.getpid()}",
                endpoints=list(self._tasks),
                state="busy" if running else "idle",
                current_jobs=running,
                last_heartbeat=utcnow(),
                pid=os.getpid(),
                hostname=socket.gethostname(),
            )
        ]

    async def recent(self, window_s: float) -> dict[str, dict[str, int]]:
        return self._recent.counts(window_s)

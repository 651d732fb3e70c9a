"""The dashboard's charts: the last minutes of each endpoint, minute by minute.

Nothing new is counted for them. An API process samples what it already has every few seconds: the queue
depth from its queue's views, and, when it runs the jobs itself (the embedded queue), the cumulative counters and
wait/run histograms of `metrics.JobMetrics`; a minute's figures are the difference between the counters at
its start and at the next minute's. With the Redis queue the jobs end in worker processes, so its views
read the ended jobs' counts and times from RQ's registries instead (`JobViews.history`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import FastTaskError

if TYPE_CHECKING:
    from .brokers.views import JobViews, QueueInfo
    from .metrics import JobMetrics

logger = logging.getLogger("fasttask")

MINUTE_S = 60
MINUTES = 15
"""How far back the charts go."""
SAMPLE_S = 5.0
"""How often an API process samples queue depth and its own counters."""


@dataclass(frozen=True)
class MinuteStats:
    """The jobs of one endpoint that ended in one minute, and how long they waited and ran (seconds)."""

    finished: int = 0
    failed: int = 0
    """failed and timed out"""
    cancelled: int = 0
    wait_p50: float | None = None
    wait_p95: float | None = None
    run_p50: float | None = None
    run_p95: float | None = None


@dataclass(frozen=True)
class _Counters:
    """One endpoint's cumulative counters at one moment."""

    ended: dict[str, int]
    wait: list[int]
    run: list[int]


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile of a sample (None when it is empty)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def bucket_quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of a histogram (counts per bucket, the last one +Inf), interpolated inside its bucket the
    way Prometheus's histogram_quantile does; None without observations."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(bounds):  # the +Inf bucket: the largest finite bound is all that is known
                return float(bounds[-1])
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])


class Timeline:
    """Per-minute samples of one API process: queue depth, and its own job counters when it has them."""

    def __init__(self, endpoints: Sequence[str], jobs: JobMetrics | None, minutes: int = MINUTES) -> None:
        self.endpoints = list(endpoints)
        self.jobs = jobs
        self.minutes = minutes
        self._depth: dict[int, dict[str, tuple[int, int]]] = {}  # minute → endpoint → (max queued, max running)
        self._base: dict[int, dict[str, _Counters]] = {}  # minute → counters at its first sample

    def sample(self, queues: Sequence[QueueInfo], now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // MINUTE_S)
        depth = self._depth.setdefault(minute, {})
        for info in queues:
            queued, running = depth.get(info.endpoint, (0, 0))
            depth[info.endpoint] = (max(queued, info.queued), max(running, info.running))
        if self.jobs is not None and minute not in self._base:
            self._base[minute] = self._counters()
        for old in [m for m in self._depth if m <= minute - self.minutes - 1]:
            del self._depth[old]
        for old in [m for m in self._base if m <= minute - self.minutes - 1]:
            del self._base[old]

    async def run(self, views: JobViews) -> None:
        """Sample every SAMPLE_S seconds until cancelled."""
        while True:
            try:
                self.sample(await views.queues())
            except FastTaskError:
                pass  # the queue is unreachable: no depth for now, the counters are sampled next time
            except Exception:
                logger.exception("sampling the dashboard's charts failed")
            await asyncio.sleep(SAMPLE_S)

    def counted(self, now: float | None = None) -> dict[str, list[MinuteStats | None]]:
        """Per endpoint and minute (oldest first), what this process's counters say; None before they were
        sampled."""
        current = int((time.time() if now is None else now) // MINUTE_S)
        latest = self._counters() if self.jobs is not None else {}
        out: dict[str, list[MinuteStats | None]] = {path: [] for path in self.endpoints}
        for minute in range(current - self.minutes + 1, current + 1):
            start = self._base.get(minute)
            end = latest if minute == current else self._base.get(minute + 1)
            for path in self.endpoints:
                before = start.get(path) if start is not None else None
                after = end.get(path) if end is not None else None
                out[path].append(_difference(before, after) if before is not None and after is not None else None)
        return out

    def depth(self, now: float | None = None) -> dict[str, list[tuple[int, int] | None]]:
        """Per endpoint and minute (oldest first): the most jobs seen queued and running; None when unsampled."""
        current = int((time.time() if now is None else now) // MINUTE_S)
        minutes = range(current - self.minutes + 1, current + 1)
        return {
            path: [self._depth[m].get(path) if m in self._depth else None for m in minutes] for path in self.endpoints
        }

    def _counters(self) -> dict[str, _Counters]:
        assert self.jobs is not None
        return {
            path: _Counters(dict(stats.finished), list(stats.wait.counts), list(stats.run.counts))
            for path, stats in list(self.jobs.endpoints.items())
        }


def _difference(before: _Counters, after: _Counters) -> MinuteStats:
    from .metrics import JOB_BUCKETS

    ended = {status: after.ended.get(status, 0) - count for status, count in before.ended.items()}
    wait = [b - a for a, b in zip(before.wait, after.wait, strict=True)]
    run = [b - a for a, b in zip(before.run, after.run, strict=True)]
    return MinuteStats(
        finished=ended.get("finished", 0),
        failed=ended.get("failed", 0) + ended.get("timeout", 0),
        cancelled=ended.get("cancelled", 0),
        wait_p50=bucket_quantile(JOB_BUCKETS, wait, 0.5),
        wait_p95=bucket_quantile(JOB_BUCKETS, wait, 0.95),
        run_p50=bucket_quantile(JOB_BUCKETS, run, 0.5),
        run_p95=bucket_quantile(JOB_BUCKETS, run, 0.95),
    )


def series_json(
    timeline: Timeline, history: dict[str, list[MinuteStats | None]] | None, now: float | None = None
) -> dict[str, Any]:
    """`GET /dashboard/series`: per endpoint, one list per figure, one value per minute, oldest first."""
    moment = time.time() if now is None else now
    current = int(moment // MINUTE_S)
    counted = history if history is not None else timeline.counted(moment)
    depth = timeline.depth(moment)
    endpoints: dict[str, dict[str, list[Any]]] = {}
    for path in timeline.endpoints:
        stats = counted.get(path, [None] * timeline.minutes)
        levels = depth[path]
        figures: dict[str, list[Any]] = {
            "queued": [level[0] if level is not None else None for level in levels],
            "running": [level[1] if level is not None else None for level in levels],
        }
        for name in ("finished", "failed", "cancelled", "wait_p50", "wait_p95", "run_p50", "run_p95"):
            figures[name] = [_round(getattr(item, name)) if item is not None else None for item in stats]
        endpoints[path] = figures
    first = (current - timeline.minutes + 1) * MINUTE_S
    return {"minute_s": MINUTE_S, "start": first, "time": round(moment, 3), "endpoints": endpoints}


def _round(value: float | int | None) -> float | int | None:
    return round(value, 4) if isinstance(value, float) else value

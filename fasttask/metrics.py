"""Prometheus metrics: what a fasttask process counts, and `/metrics` in the Prometheus text format.

Counting happens on the hot path (every submit, every request), so the figures are plain integers in
objects made once per endpoint and per route, with no lock and no per-event allocation; prometheus_client
turns them into metric families when Prometheus scrapes (a custom collector, as its docs describe for
figures kept elsewhere). The API process counts on its event loop thread without locks; a worker's lanes
(threads) count through `JobMetrics.started` / `JobMetrics.ended`, which take a lock.

The names and labels are stable and documented in docs/operations.md:

    fasttask_jobs_submitted_total{endpoint}         fasttask_jobs_rejected_total{endpoint,reason}
    fasttask_jobs_finished_total{endpoint,status}   fasttask_job_wait_seconds{endpoint} (histogram)
    fasttask_job_run_seconds{endpoint} (histogram)  fasttask_queue_jobs{endpoint,state}
    fasttask_queue_limit{endpoint}                  fasttask_workers{endpoint}
    fasttask_http_requests_total{route,method,code} fasttask_http_request_seconds{route,method} (histogram)
    fasttask_loop_up{loop}                          fasttask_loop_failures_total{loop}
    fasttask_webhook_deliveries_total{endpoint,outcome}
    fasttask_batch_size{endpoint} (histogram; endpoints with batch= only)
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .errors import BackendUnavailable, FastTaskError, QueueFull, RequestValidationFailed
from .jobs import FINAL_STATUSES, JobStatus

if TYPE_CHECKING:
    from .brokers.views import QueueInfo
    from .loops import LoopHealth

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

JOB_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    *(10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
"""Seconds: a no-op job waits milliseconds, an inference job runs seconds to minutes."""

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: `?wait=` holds a request up to 60 s and streams longer; the rest answer in milliseconds."""

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
"""Jobs per call of a batched endpoint: powers of two up to the largest `Batch.max_size`."""

REJECT_REASONS = ("queue_full", "invalid", "unavailable")
FINAL = tuple(status.value for status in JobStatus if status in FINAL_STATUSES)


class Buckets:
    """One histogram series: a count per bucket (the last one is +Inf) and the sum of observations."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out = []
        for bound, count in zip([*map(_le, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class EndpointStats:
    """Everything counted about one task endpoint's jobs in this process."""

    __slots__ = ("batch", "endpoint", "finished", "rejected", "run", "submitted", "wait")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.submitted = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.finished = dict.fromkeys(FINAL, 0)
        self.wait = Buckets(JOB_BUCKETS)
        self.run = Buckets(JOB_BUCKETS)
        self.batch: Buckets | None = None
        """Jobs per call, for an endpoint with `batch=` (made by `batched`)."""

    def batched(self) -> Buckets:
        """The endpoint batches: its `fasttask_batch_size` series, made on first use."""
        if self.batch is None:
            self.batch = Buckets(BATCH_BUCKETS)
        return self.batch

    def observe_batch(self, jobs: int) -> None:
        self.batched().observe(jobs)

    def started(self, waited_s: float) -> None:
        self.wait.observe(max(0.0, waited_s))

    def ended(self, status: JobStatus, ran_s: float | None) -> None:
        """A job reached a final status; `ran_s` when it had started."""
        self.finished[status.value] += 1
        if ran_s is not None:
            self.run.observe(max(0.0, ran_s))

    def refused(self, exc: BaseException) -> None:
        """A submit of this endpoint was answered with an error: count it under its reason."""
        if isinstance(exc, QueueFull):
            self.rejected["queue_full"] += 1
        elif isinstance(exc, BackendUnavailable):
            self.rejected["unavailable"] += 1
        elif isinstance(exc, (FastTaskError, RequestValidationFailed)):
            self.rejected["invalid"] += 1


class JobMetrics:
    """Job counts per endpoint, made up front for the known endpoints so every series exists from the start."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        self.endpoints = {path: EndpointStats(path) for path in endpoints}
        self.webhook_attempts: Counter[tuple[str, str]] = Counter()
        """Webhook delivery attempts by (endpoint, outcome): delivered, retried, gave_up."""
        self._lock = threading.Lock()

    def started(self, endpoint: str, waited_s: float) -> None:
        """`EndpointStats.started` for callers on several threads (a worker's lanes)."""
        with self._lock:
            self.stats(endpoint).started(waited_s)

    def ended(self, endpoint: str, status: JobStatus, ran_s: float | None) -> None:
        """`EndpointStats.ended` for callers on several threads (a worker's lanes, its cleanup)."""
        with self._lock:
            self.stats(endpoint).ended(status, ran_s)

    def observe_batch(self, endpoint: str, jobs: int) -> None:
        """`EndpointStats.observe_batch` for callers on several threads."""
        with self._lock:
            self.stats(endpoint).observe_batch(jobs)

    def stats(self, endpoint: str) -> EndpointStats:
        found = self.endpoints.get(endpoint)
        if found is None:
            found = self.endpoints[endpoint] = EndpointStats(endpoint)
        return found

    def collect(self) -> Iterator[Metric]:
        stats = list(self.endpoints.values())
        submitted = CounterMetricFamily("fasttask_jobs_submitted", "Jobs accepted (202)", labels=["endpoint"])
        rejected = CounterMetricFamily(
            "fasttask_jobs_rejected", "Submits refused, by reason", labels=["endpoint", "reason"]
        )
        finished = CounterMetricFamily(
            "fasttask_jobs_finished", "Jobs that reached a final status", labels=["endpoint", "status"]
        )
        wait = HistogramMetricFamily(
            "fasttask_job_wait_seconds", "Time from submit (or re-queue) to start", labels=["endpoint"]
        )
        run = HistogramMetricFamily("fasttask_job_run_seconds", "Time from start to the end", labels=["endpoint"])
        batch = HistogramMetricFamily("fasttask_batch_size", "Jobs per call of a batched endpoint", labels=["endpoint"])
        for stat in stats:
            submitted.add_metric([stat.endpoint], stat.submitted)
            for reason, count in stat.rejected.items():
                rejected.add_metric([stat.endpoint, reason], count)
            for status, count in stat.finished.items():
                finished.add_metric([stat.endpoint, status], count)
            wait.add_metric([stat.endpoint], stat.wait.cumulative(), stat.wait.total)
            run.add_metric([stat.endpoint], stat.run.cumulative(), stat.run.total)
            if stat.batch is not None:
                batch.add_metric([stat.endpoint], stat.batch.cumulative(), stat.batch.total)
        webhooks = CounterMetricFamily(
            "fasttask_webhook_deliveries", "Webhook delivery attempts, by outcome", labels=["endpoint", "outcome"]
        )
        for (endpoint, outcome), count in sorted(self.webhook_attempts.items()):
            webhooks.add_metric([endpoint, outcome], count)
        yield from (submitted, rejected, finished, wait, run, webhooks)
        if batch.samples:  # no family at all for a service without batched endpoints
            yield batch


class RouteStats:
    """One (route, method): requests per status code and their durations."""

    __slots__ = ("codes", "method", "route", "seconds")

    def __init__(self, route: str, method: str) -> None:
        self.route = route
        self.method = method
        self.codes: dict[int, int] = {}
        self.seconds = Buckets(HTTP_BUCKETS)

    def observe(self, code: int, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.seconds.observe(seconds)


class HttpMetrics:
    """Request counts by route template, so the number of series stays bounded whatever the ids."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteStats] = {}

    def route(self, route: str, method: str) -> RouteStats:
        key = (route, method)
        found = self.routes.get(key)
        if found is None:
            found = self.routes[key] = RouteStats(route, method)
        return found

    def collect(self) -> Iterator[Metric]:
        stats = list(self.routes.values())
        requests = CounterMetricFamily(
            "fasttask_http_requests", "HTTP requests answered", labels=["route", "method", "code"]
        )
        seconds = HistogramMetricFamily(
            "fasttask_http_request_seconds",
            "Time to answer an HTTP request (to its last byte)",
            labels=["route", "method"],
        )
        for stat in stats:
            for code, count in list(stat.codes.items()):
                requests.add_metric([stat.route, stat.method, str(code)], count)
            seconds.add_metric([stat.route, stat.method], stat.seconds.cumulative(), stat.seconds.total)
        yield from (requests, seconds)


class QueueSnapshot:
    """Queue gauges as read from the queue's views just before a scrape (nothing when the queue was unreachable)."""

    def __init__(self) -> None:
        self.queues: list[QueueInfo] = []

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("fasttask_queue_jobs", "Jobs per state now", labels=["endpoint", "state"])
        limit = GaugeMetricFamily("fasttask_queue_limit", "The endpoint's queue_size", labels=["endpoint"])
        workers = GaugeMetricFamily("fasttask_workers", "Live workers serving the endpoint", labels=["endpoint"])
        for info in self.queues:
            jobs.add_metric([info.endpoint, "queued"], info.queued)
            jobs.add_metric([info.endpoint, "running"], info.running)
            jobs.add_metric([info.endpoint, "stopping"], info.stopping)
            limit.add_metric([info.endpoint], info.queue_size)
            workers.add_metric([info.endpoint], len(info.workers))
        yield from (jobs, limit, workers)


class _Families(Collector):
    def __init__(self, sources: Sequence[Callable[[], Iterator[Metric]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source()


class Metrics:
    """One process's metrics: jobs, and for API processes HTTP requests and the queue gauges."""

    def __init__(self, endpoints: Iterable[str], http: bool = True) -> None:
        self.jobs = JobMetrics(endpoints)
        self.http = HttpMetrics() if http else None
        self.queues = QueueSnapshot() if http else None
        self.registry = CollectorRegistry(auto_describe=False)
        self._sources: list[Callable[[], Iterator[Metric]]] = [self.jobs.collect]
        if self.http is not None and self.queues is not None:
            self._sources += [self.queues.collect, self.http.collect]
        self.registry.register(_Families(self._sources))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def watch_loops(self, loops: LoopHealth) -> None:
        """Report these background loops too (`fasttask_loop_up`, `fasttask_loop_failures_total`)."""
        self._sources.append(loops.collect)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve_worker_metrics(endpoints: Iterable[str], host: str, port: int, loops: LoopHealth | None = None) -> Metrics:
    """A worker's metrics (its jobs, its loops and its process) on http://host:port/metrics, from a thread."""
    metrics = Metrics(endpoints, http=False)
    if loops is not None:
        metrics.watch_loops(loops)
    start_http_server(port, addr=host, registry=metrics.registry)
    return metrics


def _le(bound: float) -> str:
    return repr(float(bound))

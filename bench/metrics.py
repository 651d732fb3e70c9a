"""Observability benchmark: what metrics cost the hot path, and what a /metrics scrape costs in Redis mode.

One command runs everything:

    python bench/metrics.py [--duration 10] [--connections 32] [--rounds 3] [--jobs 10000]

1. Embedded queue, wrk (bench/wrk/fasttask.lua: POST /noop -> GET /jobs/<id>?wait=60 per connection), the
   same server started alternately with FTAPI_METRICS=0 and FTAPI_METRICS=1, --rounds times each, server
   pinned to core 0 and wrk to core 1 as in core.py: median jobs/s of each, and the difference.
   Target: at most 5 % fewer jobs/s with metrics on.
2. Redis queue: a redis-server of its own, one API process and two workers. With 10 finished jobs in
   Redis, then with --jobs finished jobs: the time of one GET /metrics (median of --scrapes) and the
   Redis commands one scrape sends (INFO commandstats around the scrapes, less what Redis ran in an idle
   window of the same length and less this script's own look-ups). Workers are stopped while measuring,
   so only the API process talks to Redis. Also the time of one GET /jobs?limit=50 page.
   Target: the same time and commands with 10,000 jobs as with 10.
3. The metrics code alone, in this process (no network, so it holds still on a busy machine): what the HTTP
   metrics middleware adds to one request, and what a job's counting adds (wait and run observations, the
   finished counter), best of several repeats; set against the server time one job takes in part 1.

Everything binds and connects to 127.0.0.1 only. Only the standard library is needed to run this file;
the servers run from .venv.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    FORM,
    HOST,
    MAIN_PY,
    MiniRedis,
    Proc,
    clean_env,
    commands_between,
    commandstats,
    free_port,
    http,
    wait_for,
)
from core import FastTask, Server, cpu_plan, run_wrk

APP = "bench.apps.fasttask_noop:app"
QUEUE = "fasttask.noop"


# ----------------------------------------------------------------------------- 1. jobs/s, metrics on vs off


class FastTaskWithMetrics(FastTask):
    """The core benchmark's fasttask server, with FTAPI_METRICS set."""

    def __init__(self, metrics_on: bool) -> None:
        super().__init__()
        self.metrics_on = metrics_on

    def env(self, port: int) -> dict[str, str]:
        env = super().env(port)
        env["FTAPI_METRICS"] = "1" if self.metrics_on else "0"
        return env


def throughput(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    server_prefix, driver_prefix, pin_note = cpu_plan(args.no_pin)
    runs: dict[str, list[float]] = {"off": [], "on": []}
    p50: dict[str, list[float]] = {"off": [], "on": []}
    for round_ in range(args.rounds):
        for mode in ("off", "on"):
            system = FastTaskWithMetrics(mode == "on")
            server = Server(system, server_prefix, logdir, f"metrics-{mode}-{round_ + 1}")
            try:
                server.wait_ready()
                why = system.smoke(server.base)
                if why:
                    raise RuntimeError(f"smoke job failed: {why}")
                if mode == "on":
                    code, _ = http("GET", server.base + "/metrics")
                    assert code == 200, f"/metrics answered {code} with FTAPI_METRICS=1"
                else:
                    code, _ = http("GET", server.base + "/metrics")
                    assert code == 404, f"/metrics answered {code} with FTAPI_METRICS=0"
                if args.warmup > 0:
                    run_wrk(system, server.base, args.warmup, args.connections, 5.0, driver_prefix)
                res, out = run_wrk(system, server.base, args.duration, args.connections, 5.0, driver_prefix)
                (logdir / f"driver-metrics-{mode}-{round_ + 1}.txt").write_text(out)
            finally:
                server.stop()
            runs[mode].append(res["jobs_per_s"])
            p50[mode].append(res["p50_ms"])
            print(f"[jobs/s] round {round_ + 1} metrics {mode}: {res['jobs_per_s']:,.1f} jobs/s", flush=True)
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    return {
        "cpu": pin_note,
        "runs": runs,
        "p50_ms": {mode: statistics.median(values) for mode, values in p50.items()},
        "off": off,
        "on": on,
        "change_pct": (on - off) / off * 100 if off else None,
    }


# ----------------------------------------------------------------------------- 2. scrape cost in Redis mode


class Redis:
    """A throwaway redis-server: no RDB, no AOF, loopback only, on a free port."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        self.proc = Proc([*argv, "--dir", str(logdir)], logdir / "redis-metrics.log")
        self.r: MiniRedis = wait_for(self._connect, 10, f"redis-server on port {self.port}")

    def _connect(self) -> MiniRedis | None:
        if not self.proc.alive():
            raise RuntimeError(f"redis-server exited:\n{self.proc.log_tail()}")
        try:
            r = MiniRedis(self.port)
            r.call("PING")
            return r
        except OSError:
            return None

    def stop(self) -> None:
        self.r.close()
        self.proc.stop(signal.SIGTERM)


def start_workers(redis: Redis, logdir: Path, count: int, tag: str) -> list[Proc]:
    env = clean_env(FTAPI_REDIS_URL=redis.url, FTAPI_QUEUE="redis")
    before = int(redis.r.call("SCARD", "rq:workers"))
    workers = [
        Proc(
            [str(MAIN_PY), "-m", "fasttask", "worker", APP, "--log-level", "warning"],
            logdir / f"worker-metrics-{tag}-{i + 1}.log",
            env,
        )
        for i in range(count)
    ]
    wait_for(lambda: int(redis.r.call("SCARD", "rq:workers")) >= before + count, 30, "the workers to register", 0.2)
    return workers


def stop_workers(workers: list[Proc]) -> None:
    for worker in workers:
        worker.stop(signal.SIGTERM)


def submit_many(base: str, count: int) -> None:
    def one(_: int) -> None:
        code, body = http("POST", base + "/noop", b"", FORM, timeout=30)
        if code != 202:
            raise RuntimeError(f"POST /noop -> {code} {body[:200]!r}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def finished_count(redis: Redis) -> int:
    return int(redis.r.call("ZCARD", f"rq:finished:{QUEUE}"))


def timed_get(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    code, body = http("GET", url, timeout=30)
    elapsed = time.perf_counter() - t0
    if code != 200:
        raise RuntimeError(f"GET {url} -> {code} {body[:200]!r}")
    return elapsed, body


def measure_scrapes(redis: Redis, base: str, scrapes: int) -> dict[str, Any]:
    timed_get(base + "/metrics")  # warm: connections in the pool, code paths
    t0 = time.monotonic()
    idle_before = commandstats(redis.r)
    times = [timed_get(base + "/metrics")[0] for _ in range(scrapes)]
    window = time.monotonic() - t0
    scraped = commands_between(idle_before, commandstats(redis.r))
    # the same window with nobody scraping: the API process's own background (cleanup, pub/sub)
    idle_start = commandstats(redis.r)
    time.sleep(window)
    idle = commands_between(idle_start, commandstats(redis.r))
    per_scrape = Counter({name: n - idle.get(name, 0) for name, n in scraped.items()})
    per_scrape = +per_scrape
    page_times = [timed_get(base + "/jobs?limit=50")[0] for _ in range(max(5, scrapes // 4))]
    _, body = timed_get(base + "/metrics")
    return {
        "scrape_ms_median": statistics.median(times) * 1000,
        "scrape_ms_p90": sorted(times)[int(len(times) * 0.9) - 1] * 1000,
        "commands_per_scrape": sum(per_scrape.values()) / scrapes,
        "commands": {name: round(n / scrapes, 2) for name, n in per_scrape.most_common()},
        "series": sum(1 for line in body.decode().splitlines() if line.startswith("fasttask_")),
        "jobs_page_ms_median": statistics.median(page_times) * 1000,
    }


def scrape_cost(args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    redis = Redis(logdir)
    env = clean_env(FTAPI_REDIS_URL=redis.url, FTAPI_QUEUE="redis", FTAPI_METRICS="1")
    port = free_port()
    base = f"http://{HOST}:{port}"
    serve = [str(MAIN_PY), "-m", "fasttask", "serve", APP, "--host", HOST, "--port", str(port)]
    api = Proc([*serve, "--log-level", "warning"], logdir / "api-metrics.log", env)
    results: dict[str, Any] = {}
    try:
        wait_for(lambda: _healthy(api, base), 60, "the API process", 0.2)
        for target in (10, args.jobs):
            have = finished_count(redis)
            workers = start_workers(redis, logdir, 2, str(target))
            print(f"[scrape] running {target - have:,} jobs to have {target:,} finished ...", flush=True)
            submit_many(base, target - have)
            wait_for(lambda target=target: finished_count(redis) >= target, 600, f"{target} finished jobs", 0.2)
            stop_workers(workers)
            wait_for(lambda: int(redis.r.call("SCARD", "rq:workers")) == 0, 30, "the workers to leave", 0.2)
            results[str(target)] = measure_scrapes(redis, base, args.scrapes)
            results[str(target)]["finished_in_redis"] = finished_count(redis)
            print(f"[scrape] {target:,} jobs: {json.dumps(results[str(target)])}", flush=True)
    finally:
        api.stop(signal.SIGINT)
        redis.stop()
    return results


def _healthy(api: Proc, base: str) -> bool:
    if not api.alive():
        raise RuntimeError(f"API process exited:\n{api.log_tail()}")
    try:
        return http("GET", base + "/health", timeout=2)[0] == 200
    except OSError:
        return False


# ----------------------------------------------------------------------------- 3. the metrics code alone


def code_cost() -> dict[str, float]:
    """Nanoseconds the metrics code adds per request and per job (best of 5 repeats of 100,000)."""
    import asyncio
    import timeit

    sys.path.insert(0, str(BENCH.parent))
    from fasttask.http.request_metrics import HttpMetricsMiddleware
    from fasttask.http.routes import Route, RouteTable
    from fasttask.jobs import JobRecord, JobStatus, utcnow
    from fasttask.metrics import HttpMetrics, JobMetrics

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {}

    table = RouteTable([Route("/noop", app, ("POST",), hot=True), Route("/jobs/{job_id}", app, ("GET",), hot=True)])
    middleware = HttpMetricsMiddleware(app, HttpMetrics(), table)
    submit = {"type": "http", "method": "POST", "path": "/noop"}
    read = {"type": "http", "method": "GET", "path": "/jobs/0123456789abcdef0123456789abcdef"}
    n = 100_000

    async def per_call(target: Any, scope: Any) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                await target(scope, receive, send)
            best = min(best, (time.perf_counter() - t0) / n)
        return best * 1e9

    async def requests() -> tuple[float, float, float]:
        return await per_call(app, submit), await per_call(middleware, submit), await per_call(middleware, read)

    bare, with_submit, with_read = asyncio.run(requests())
    jobs = JobMetrics(["/noop"])
    created, started, finished = JobRecord("x", "/noop").created_at, utcnow(), utcnow()

    def one_job() -> None:  # what the embedded queue does per job with metrics on
        stats = jobs.stats("/noop")
        stats.submitted += 1
        stats.started((started - created).total_seconds())
        jobs.stats("/noop").ended(JobStatus.FINISHED, (finished - started).total_seconds())

    hooks = min(timeit.repeat(one_job, number=n, repeat=5)) / n * 1e9
    return {
        "submit_request_ns": with_submit - bare,
        "read_request_ns": with_read - bare,
        "job_hooks_ns": hooks,
        "per_job_ns": with_submit - bare + with_read - bare + hooks,
    }


# ----------------------------------------------------------------------------- report


def render(
    args: argparse.Namespace, jobs: dict[str, Any] | None, scrape: dict[str, Any] | None, code: dict[str, float] | None
) -> str:
    lines = []
    if jobs is not None:
        runs_off = ", ".join(f"{v:,.0f}" for v in jobs["runs"]["off"])
        runs_on = ", ".join(f"{v:,.0f}" for v in jobs["runs"]["on"])
        verdict = "met" if jobs["change_pct"] is not None and jobs["change_pct"] >= -5.0 else "NOT met"
        lines += [
            f"Embedded queue, wrk, {args.connections} connections, {args.duration:g} s runs after {args.warmup:g} s "
            f"warm-up, {args.rounds} rounds alternating. CPU: {jobs['cpu']}.",
            "",
            "| metrics | jobs/s (median) | runs | p50 ms |",
            "|---|---:|---|---:|",
            f"| off (FTAPI_METRICS=0) | {jobs['off']:,.1f} | {runs_off} | {jobs['p50_ms']['off']:.2f} |",
            f"| on (default) | {jobs['on']:,.1f} | {runs_on} | {jobs['p50_ms']['on']:.2f} |",
            "",
            f"Change with metrics on: **{jobs['change_pct']:+.1f} %** (target: no worse than -5 %: {verdict}).",
            "",
        ]
    if scrape is not None:
        lines += [
            "Redis queue, one API process (workers stopped while measuring), one GET /metrics at a time:",
            "",
            "| finished jobs in Redis | scrape ms (median) | scrape ms (p90) | Redis commands / scrape | "
            "commands | fasttask_ lines | GET /jobs?limit=50 ms |",
            "|---:|---:|---:|---:|---|---:|---:|",
        ]
        for target, res in scrape.items():
            commands = ", ".join(f"{name} {n:g}" for name, n in res["commands"].items())
            lines.append(
                f"| {res['finished_in_redis']:,} (target {int(target):,}) | {res['scrape_ms_median']:.2f} "
                f"| {res['scrape_ms_p90']:.2f} | {res['commands_per_scrape']:.1f} | {commands} | {res['series']} "
                f"| {res['jobs_page_ms_median']:.2f} |"
            )
    if code is not None:
        lines += [
            "",
            f"The metrics code alone: +{code['submit_request_ns'] / 1000:.2f} µs per submit request, "
            f"+{code['read_request_ns'] / 1000:.2f} µs per job read, +{code['job_hooks_ns'] / 1000:.2f} µs of job "
            f"counting: **{code['per_job_ns'] / 1000:.2f} µs per job**"
            + (
                f", {code['per_job_ns'] / 1e9 * jobs['off'] * 100:.1f} % of the {1e6 / jobs['off']:.0f} µs one job "
                "takes the server with metrics off (part 1)."
                if jobs is not None and jobs["off"]
                else "."
            ),
        ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured warm-up per run (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per mode, alternating off/on (default 3)")
    ap.add_argument("--jobs", type=int, default=10_000, help="finished jobs in Redis for the second scrape")
    ap.add_argument("--scrapes", type=int, default=50, help="scrapes per measurement (default 50)")
    ap.add_argument("--only", choices=["throughput", "scrape", "code"], default=None, help="run one part only")
    ap.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    ap.add_argument("--out", type=Path, default=None, help="results dir (default bench/results/metrics-<time>)")
    args = ap.parse_args()
    for tool in ("wrk", "redis-server"):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install -y {tool}", file=sys.stderr)
            return 1
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = args.out or BENCH / "results" / f"metrics-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    jobs = throughput(args, logdir) if args.only in (None, "throughput") else None
    scrape = scrape_cost(args, logdir) if args.only in (None, "scrape") else None
    code = code_cost() if args.only in (None, "code") else None
    table = render(args, jobs, scrape, code)
    (logdir / "results.md").write_text(table + "\n")
    (logdir / "results.json").write_text(json.dumps({"throughput": jobs, "scrape": scrape, "code": code}, indent=2))
    print()
    print(table)
    print(f"\n(logs and raw results in {logdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batching benchmark: many queued jobs, one model call. fasttask unbatched, batched (embedded and Redis queue)
and Ray Serve's `@serve.batch`, side by side in one run.

    python bench/batching.py [--duration 20] [--connections 64] [--systems unbatched,embedded,redis,ray]

The stand-in model (bench/apps/standin.py) costs 20 ms plus 1 ms per input, sleeps (so it releases the GIL
as GPU work does) and runs one call at a time per process (a lock, as one GPU). The systems:

- fasttask unbatched: `POST /infer` (a plain task endpoint, default concurrency), embedded queue;
- fasttask batched, embedded: `POST /infer_batch` (`Batch(max_size=32, max_wait_ms=10)`), at the default
  concurrency (4 runner slots: up to 4 batches at once) and with FTAPI_CONCURRENCY=1 (one batch at a time,
  as Ray Serve's default `max_concurrent_batches=1`);
- fasttask batched, Redis queue: the same endpoint, 1 API process + 1 worker on a fresh redis-server (a
  worker that does not batch yet runs each job alone, and the row says so);
- Ray Serve: `@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)` on the same model
  (bench/apps/ray_batching.py, run by the Python of a venv of its own, --ray-python; bench/setup.sh makes it).

Each system gets a fresh server, one job end to end as a check, --warmup s of load, then --duration s
measured: --connections wrk connections, each submitting one job and waiting for its result, no think time
(fasttask: `POST` -> 202 -> `GET /jobs/<id>?wait=60`, bench/wrk/fasttask.lua; Ray: one `POST` answered with
the result, bench/wrk/direct.lua). Then, for the batched systems, a lone client for --lone s: its latency
shows what waiting for a batch that does not fill costs. Reported: jobs/s, p50/p99 submit->result latency, mean batch
size (fasttask: `fasttask_batch_size` of /metrics, the worker's for the Redis queue; Ray: what the batched
method counted), and the ratios to Ray Serve. A system that cannot run (no Ray venv; a Redis worker that
does not batch yet) is reported in its row and the others are still measured.

Everything binds and connects to 127.0.0.1 only (Ray included: see bench/apps/ray_batching.py). Nothing is
pinned: servers and wrk share the machine's CPUs. Only the standard library is needed to run this file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import BENCH, HOST, MAIN_PY, Proc, clean_env, free_port, http, machine_busy, parse_result, wait_for
from distributed import RedisServer

APP = "bench.apps.fasttask_batching:app"
RAY_PY = Path.home() / ".cache" / "fasttask-bench" / "ray-venv" / "bin" / "python"
SYSTEMS = ("unbatched", "embedded", "embedded1", "redis", "ray")
LABELS = {
    "unbatched": "fasttask, unbatched (embedded)",
    "embedded": "fasttask, batched, embedded",
    "embedded1": "fasttask, batched, embedded, FTAPI_CONCURRENCY=1",
    "redis": "fasttask, batched, Redis queue (1 API + 1 worker)",
    "ray": "Ray Serve, @serve.batch",
}
JSON = {"Content-Type": "application/json"}


@dataclass
class Row:
    system: str
    result: dict[str, Any] | None = None
    lone: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- servers


class Server:
    """One system under test: its processes, its base URL, the path a job goes to, and its batch counters."""

    path = "/infer_batch"
    mode = "job"  # wrk/fasttask.lua; "direct": wrk/direct.lua

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.procs: list[Proc] = []

    def start(self) -> None:
        raise NotImplementedError

    def smoke(self) -> str | None:
        """One job end to end (x=3 gives 6); None when it came back right, else what went wrong."""
        code, body = http("POST", self.base + self.path, b'{"x": 3}', JSON, timeout=60)
        if code != 202:
            return f"POST {self.path} -> {code} {body[:300]!r}"
        job_id = json.loads(body)["id"]
        code, body = http("GET", f"{self.base}/jobs/{job_id}?wait=30", timeout=40)
        job = json.loads(body) if code == 200 else {}
        if job.get("status") != "finished" or job.get("result") != 6:
            return f"the job ended {job.get('status')}: {json.dumps(job.get('error') or job.get('result'))[:300]}"
        return None

    def batches(self) -> tuple[float, float] | None:
        """(calls, jobs) of the batched endpoint so far, or None when this system does not count them."""
        return _histogram(self.base + "/metrics", self.path)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(signal.SIGINT)


class Embedded(Server):
    def __init__(self, logdir: Path, path: str, concurrency: int | None = None) -> None:
        super().__init__(logdir)
        self.path = path
        self.concurrency = concurrency

    def start(self) -> None:
        argv = [str(MAIN_PY), "-m", "fasttask", "serve", APP, "--host", HOST, "--port", str(self.port)]
        env = clean_env(FTAPI_QUEUE="local")
        if self.concurrency is not None:
            env["FTAPI_CONCURRENCY"] = str(self.concurrency)
        log = self.logdir / f"{self.path[1:]}-{self.concurrency or 'default'}.log"
        self.procs.append(Proc([*argv, "--log-level", "warning"], log, env))
        wait_for(lambda: _up(self.base + "/health", self.procs[0]), 60, "the fasttask server", 0.2)

    def batches(self) -> tuple[float, float] | None:
        return super().batches() if self.path == "/infer_batch" else None


class RedisQueue(Server):
    def start(self) -> None:
        self.redis = RedisServer(self.logdir, "batching")
        env = clean_env(FTAPI_REDIS_URL=self.redis.url, FTAPI_QUEUE="redis")
        serve = [str(MAIN_PY), "-m", "fasttask", "serve", APP, "--host", HOST, "--port", str(self.port)]
        self.metrics_port = free_port()
        worker = [str(MAIN_PY), "-m", "fasttask", "worker", APP, "--log-level", "warning"]
        worker += ["--metrics-port", str(self.metrics_port), "--metrics-host", HOST]
        self.procs.append(Proc([*serve, "--log-level", "warning"], self.logdir / "redis-api.log", env))
        self.procs.append(Proc(worker, self.logdir / "redis-worker.log", env))
        wait_for(lambda: _up(self.base + "/health", self.procs[0]), 60, "the API process", 0.2)
        wait_for(lambda: self.redis.r.call("SCARD", "rq:workers") >= 1, 60, "the worker to register", 0.2)

    def batches(self) -> tuple[float, float] | None:
        return _histogram(f"http://{HOST}:{self.metrics_port}/metrics", self.path)

    def stop(self) -> None:
        super().stop()
        if hasattr(self, "redis"):
            self.redis.stop()


class Ray(Server):
    path = "/infer"
    mode = "direct"

    def __init__(self, logdir: Path, python: Path) -> None:
        super().__init__(logdir)
        self.python = python

    def start(self) -> None:
        if not self.python.exists():
            raise Unavailable(f"no Ray venv at {self.python} (bash bench/setup.sh makes it; or --ray-python)")
        env = clean_env(RAY_USAGE_STATS_ENABLED="0")
        env.pop("PYTHONPATH", None)  # Ray's venv runs the app alone, without the repository's packages
        argv = [str(self.python), str(BENCH / "apps" / "ray_batching.py"), str(self.port)]
        proc = Proc(argv, self.logdir / "ray.log", env)
        self.procs.append(proc)

        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"Ray Serve exited:\n{proc.log_tail()}")
            return "READY" in proc.log_path.read_text(errors="replace")

        wait_for(ready, 180, "Ray Serve", 0.5)

    def smoke(self) -> str | None:
        code, body = http("POST", self.base + self.path, b'{"x": 3}', JSON, timeout=60)
        if code != 200 or json.loads(body).get("result") != 6:
            return f"POST {self.path} -> {code} {body[:300]!r}"
        return None

    def batches(self) -> tuple[float, float] | None:
        code, body = http("GET", self.base + "/stats", timeout=10)
        if code != 200:
            return None
        stats = json.loads(body)
        return float(stats["calls"]), float(stats["inputs"])

    def stop(self) -> None:
        for proc in self.procs:  # SIGTERM: the app shuts Serve and Ray down, then exits
            proc.stop(signal.SIGTERM)


class Unavailable(Exception):
    """The system cannot run here; its row says why."""


def _up(url: str, proc: Proc) -> bool:
    if not proc.alive():
        raise RuntimeError(f"the server exited:\n{proc.log_tail()}")
    try:
        return http("GET", url, timeout=2)[0] == 200
    except OSError:
        return False


def _histogram(url: str, endpoint: str) -> tuple[float, float] | None:
    """(count, sum) of `fasttask_batch_size` for `endpoint` at a /metrics URL, None when it has none."""
    try:
        code, body = http("GET", url, timeout=10)
    except OSError:
        return None
    found: dict[str, float] = {}
    for kind, value in re.findall(
        rf'^fasttask_batch_size_(count|sum){{endpoint="{re.escape(endpoint)}"}} (\S+)$', body.decode(), re.M
    ):
        found[kind] = float(value)
    if code != 200 or len(found) != 2:
        return None
    return found["count"], found["sum"]


# ----------------------------------------------------------------------------- load


def run_wrk(server: Server, duration: float, conns: int) -> tuple[dict[str, Any], str]:
    # one connection per wrk thread: the Lua chain state is per thread (see wrk/common.lua)
    cmd = ["wrk", "-t", str(conns), "-c", str(conns), "-d", f"{max(1, round(duration))}s", "--timeout", "70s"]
    if server.mode == "direct":
        cmd += ["-s", str(BENCH / "wrk" / "direct.lua"), server.base, "--", server.path]
    else:
        cmd += ["-s", str(BENCH / "wrk" / "fasttask.lua"), server.base, "--", server.path, "X"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 180)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr[-1000:]}")
    return parse_result(done.stdout), done.stdout + done.stderr


def measure(system: str, args: argparse.Namespace, logdir: Path) -> Row:
    row = Row(system)
    server: Server
    if system == "unbatched":
        server = Embedded(logdir, "/infer")
    elif system == "embedded":
        server = Embedded(logdir, "/infer_batch")
    elif system == "embedded1":  # one batch at a time, as Ray Serve's default max_concurrent_batches=1
        server = Embedded(logdir, "/infer_batch", concurrency=1)
    elif system == "redis":
        server = RedisQueue(logdir)
    else:
        server = Ray(logdir, args.ray_python)
    try:
        started = time.monotonic()
        server.start()
        row.extra["startup_s"] = round(time.monotonic() - started, 1)
        why = server.smoke()
        if why is not None:
            row.error = f"unsupported here: {why}" if system == "redis" else f"check job failed: {why}"
            return row
        if args.warmup > 0:
            run_wrk(server, args.warmup, args.connections)
        before, busy = server.batches(), machine_busy()
        res, out = run_wrk(server, args.duration, args.connections)
        after, busy_after = server.batches(), machine_busy()
        res["machine_busy_pct"] = round(100 * (busy_after[0] - busy[0]) / max(busy_after[1] - busy[1], 1e-9))
        (logdir / f"wrk-{system}.txt").write_text(out)
        if before is not None and after is not None and after[0] > before[0]:
            res["calls"] = after[0] - before[0]
            res["mean_batch"] = round((after[1] - before[1]) / res["calls"], 2)
        elif system == "redis":
            res["note"] = "the worker reports no fasttask_batch_size: it runs each job alone"
        row.result = res
        if system != "unbatched" and args.lone > 0:
            time.sleep(2)  # the jobs still in flight when the load stopped end first
            row.lone, _ = run_wrk(server, args.lone, 1)
    except Unavailable as e:
        row.error = f"unavailable: {e}"
    except Exception as e:  # one broken system is reported, the others still run
        row.error = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return row


# ----------------------------------------------------------------------------- report


def notes(res: dict[str, Any]) -> str:
    keys = ("failed", "rejected", "bad_reads", "socket_errors", "http_errors")
    out = [f"{k}={res[k]}" for k in keys if res.get(k)] + ([res["note"]] if "note" in res else [])
    if "machine_busy_pct" in res:
        out.append(f"CPUs {res['machine_busy_pct']}% busy")
    return ", ".join(out)


def render(rows: list[Row], args: argparse.Namespace, when: str) -> str:
    ray = next((r.result for r in rows if r.system == "ray" and r.result), None)
    lines = [
        f"Batching benchmark ({when}): stand-in model 20 ms + 1 ms per input, one call at a time per process; "
        f"{args.connections} clients submit and wait, no think time; {args.duration:g} s per system "
        f"(+{args.warmup:g} s warm-up); lone client {args.lone:g} s. {os.cpu_count()} CPUs, nothing pinned.",
        "",
        "| system | jobs/s | p50 ms | p99 ms | mean batch | jobs/s vs Ray | p99 vs Ray | lone p50 / p99 ms | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        label = LABELS[r.system]
        res = r.result
        if res is None:
            lines.append(f"| {label} | - | - | - | - | - | - | - | {(r.error or '?').splitlines()[0][:200]} |")
            continue
        batch = f"{res['mean_batch']:.1f}" if "mean_batch" in res else ("1" if r.system == "unbatched" else "n/a")
        vs_jobs = vs_p99 = "-"
        if ray and r.system != "ray":
            vs_jobs = f"{res['jobs_per_s'] / ray['jobs_per_s']:.2f}x"
            vs_p99 = f"{res['p99_ms'] / ray['p99_ms']:.2f}x"
        lone = f"{r.lone['p50_ms']:.1f} / {r.lone['p99_ms']:.1f}" if r.lone else "-"
        lines.append(
            f"| {label} | {res['jobs_per_s']:,.1f} | {res['p50_ms']:.1f} | {res['p99_ms']:.1f} | {batch} "
            f"| {vs_jobs} | {vs_p99} | {lone} | {notes(res)} |"
        )
    lines += ["", *targets(rows)]
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets, each with its figures and whether it held."""
    by = {r.system: r.result for r in rows if r.result}
    out = []

    def check(what: str, ok: bool, figures: str) -> None:
        out.append(f"- {what}: {figures} — {'**holds**' if ok else '**misses**'}")

    unbatched, embedded, redis, ray = (by.get(name) for name in ("unbatched", "embedded", "redis", "ray"))
    if unbatched and embedded:
        ratio = embedded["jobs_per_s"] / unbatched["jobs_per_s"]
        check("batched embedded >= 3x unbatched jobs/s", ratio >= 3, f"{ratio:.1f}x")
    if embedded and ray:
        ratio = embedded["jobs_per_s"] / ray["jobs_per_s"]
        check("batched embedded >= 1.0x Ray Serve jobs/s", ratio >= 1, f"{ratio:.2f}x")
        p99 = embedded["p99_ms"] / ray["p99_ms"]
        check("batched embedded p99 <= 1.5x Ray Serve's", p99 <= 1.5, f"{p99:.2f}x")
    if redis and ray:
        ratio = redis["jobs_per_s"] / ray["jobs_per_s"]
        check("batched Redis >= 0.8x Ray Serve jobs/s", ratio >= 0.8, f"{ratio:.2f}x")
    return out or ["- (no target could be checked: a system it needs did not run)"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per system (default 20)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--lone", type=float, default=5.0, help="seconds of the lone-client run (0: none)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    ap.add_argument("--ray-python", type=Path, default=RAY_PY, help="the Python of the venv with ray[serve]")
    ap.add_argument("--out", type=Path, default=None, help="results dir (default bench/results/<time>-batching)")
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    now = _dt.datetime.now(_dt.timezone.utc)
    logdir = args.out or BENCH / "results" / (now.strftime("%Y%m%d-%H%M%S") + "-batching")
    logdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for system in systems:
        print(f"-- {LABELS[system]}", flush=True)
        row = measure(system, args, logdir)
        print(f"   {json.dumps(row.result) if row.result else row.error}", flush=True)
        rows.append(row)
    table = render(rows, args, now.strftime("%Y-%m-%d %H:%M UTC"))
    print("\n" + table)
    (logdir / "results.md").write_text(table + "\n")
    saved = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": [asdict(r) for r in rows]}
    (logdir / "results.json").write_text(json.dumps(saved, indent=2))
    print(f"\n(logs and raw results in {logdir})")
    return 0 if all(r.result or (r.error or "").startswith(("unavailable", "unsupported")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

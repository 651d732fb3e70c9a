"""Distributed-mode benchmark: fasttask's API + Redis + worker processes, next to raw RQ and Celery.

One command runs everything, each measurement on a fresh redis-server it starts on a free port:

    python bench/distributed.py [--duration 10] [--connections 32] [--jobs 3000] [--profile]

1. fasttask end to end: `POST /noop` -> worker -> `GET /jobs/<id>?wait=60`, chained per connection by
   wrk with bench/wrk/fasttask.lua, 1 API process with 1 worker, then with 2 workers: jobs/s, p50, p99;
   and with 1 worker again, each submit with an Idempotency-Key of its own (target: at most 10% fewer jobs/s).
2. worker CPU ms per job (/proc/<pid>/stat utime+stime of the worker processes, before and after).
3. Redis commands per job (INFO commandstats before and after, less INFO and this script's own
   look-ups), the top commands per job, and (1 worker) a MONITOR sample that splits them into commands
   clients send and commands run inside Lua scripts.
4. raw RQ: --jobs no-op jobs enqueued (JSON serializer) before the clock starts, then drained by 1 and
   by 2 rq SimpleWorker processes (bench/rq_drain.py): jobs/s.
5. Celery 5 (Redis broker and result backend, --pool prefork --concurrency 2, bench/.venv-celery):
   the same drain (bench/celery_drain.py).
6. 32 fasttask workers on a task that sleeps 100 ms, 1 API process, 64 wrk connections: jobs/s
   against the ideal 32 / 0.1 s = 320 jobs/s.

Each measurement runs --repeat times (fresh Redis and processes each time); the row is the run with the
median jobs/s. A run during which more than --max-outside % of the CPUs went to other processes is measured
again (--retries); --wait-idle waits for a quiet machine first. --fasttask-rev measures a commit's fasttask/.

Everything binds and connects to 127.0.0.1 only. Nothing is pinned: Redis, the API process(es), the
workers and wrk share the machine's CPUs (the output says how busy they were). Only the standard library
is needed to run this file; fasttask and rq run from .venv, Celery from bench/.venv-celery.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    HOST,
    MAIN_PY,
    ROOT,
    MiniRedis,
    Proc,
    clean_env,
    commands_between,
    commandstats,
    cpu_times,
    fasttask_smoke,
    free_port,
    http,
    machine_busy,
    parse_result,
    rss_mb,
    wait_for,
)

CELERY_DIR = BENCH / ".venv-celery"
CELERY_PY = CELERY_DIR / "bin" / "python"
PY_SPY = MAIN_PY.parent / "py-spy"

NOOP_APP, NOOP_PATH, NOOP_QUEUE = "bench.apps.fasttask_noop:app", "/noop", "fasttask.noop"
SLEEP_APP, SLEEP_PATH, SLEEP_QUEUE = "bench.apps.fasttask_sleep:app", "/sleep100", "fasttask.sleep100"
RQ_QUEUE = "bench.noop"
SLEEP_S = 0.1

FASTTASK_SRC: Path | None = None
"""With --fasttask-rev: where that commit's fasttask/ was unpacked (None: the working tree's)."""

# what the team aims for (see bench/README.md, "Distributed")
TARGET_WORKER_CPU_MS = 1.5
TARGET_REDIS_CMDS = 25.0
TARGET_MANY_PCT = 90.0


# ----------------------------------------------------------------------------- processes


class RedisServer:
    """A throwaway redis-server: no RDB, no AOF, loopback only, on a free port."""

    def __init__(self, logdir: Path, tag: str) -> None:
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(logdir),
        ]
        self.proc = Proc(argv, logdir / f"redis-{tag}.log")
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


class Cluster:
    """fasttask in distributed mode: one API process and `workers` worker processes on one Redis."""

    def __init__(self, app: str, redis: RedisServer, workers: int, logdir: Path, tag: str) -> None:
        self.redis = redis
        env = clean_env(FTAPI_REDIS_URL=redis.url, FTAPI_QUEUE="redis")
        cwd = ROOT
        if FASTTASK_SRC is not None:  # --fasttask-rev: that commit's fasttask/ first on the path, and the cwd
            env["PYTHONPATH"] = f"{FASTTASK_SRC}{os.pathsep}{env['PYTHONPATH']}"
            cwd = FASTTASK_SRC
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        serve = [str(MAIN_PY), "-m", "fasttask", "serve", app, "--host", HOST, "--port", str(self.port)]
        self.api = Proc([*serve, "--log-level", "warning"], logdir / f"api-{tag}.log", env, cwd=cwd)
        self.workers = [
            Proc(
                [str(MAIN_PY), "-m", "fasttask", "worker", app, "--log-level", "warning"],
                logdir / f"worker-{tag}-{i + 1}.log",
                env,
                cwd=cwd,
            )
            for i in range(workers)
        ]

    def wait_ready(self, timeout: float) -> float:
        t0 = time.monotonic()

        def api_up() -> bool:
            if not self.api.alive():
                raise RuntimeError(f"API process exited:\n{self.api.log_tail()}")
            try:
                return http("GET", self.base + "/health", timeout=2)[0] == 200
            except OSError:
                return False

        def all_registered() -> bool:
            for w in self.workers:
                if not w.alive():
                    raise RuntimeError(f"a worker exited:\n{w.log_tail()}")
            return bool(self.redis.r.call("SCARD", "rq:workers") >= len(self.workers))

        wait_for(api_up, timeout, "the API process", 0.2)
        wait_for(all_registered, max(1.0, timeout - (time.monotonic() - t0)), "the workers to register", 0.2)
        return time.monotonic() - t0

    def stop(self) -> None:
        for w in self.workers:  # SIGTERM to all first: they stop in parallel
            if w.alive():
                os.killpg(w.pid, signal.SIGTERM)
        for w in self.workers:
            w.stop()
        self.api.stop(signal.SIGINT)


def drain(r: MiniRedis, queue: str, timeout: float = 60.0) -> None:
    """Wait until no job of `queue` is queued or running."""
    qkey, wip = f"rq:queue:{queue}", f"rq:wip:{queue}"
    wait_for(lambda: r.call("LLEN", qkey) == 0 and r.call("ZCARD", wip) == 0, timeout, f"{queue} to drain", 0.02)


def start_wrk(base: str, duration: float, conns: int, path: str, mode: str = "plain") -> subprocess.Popen[str]:
    # one connection per wrk thread: the Lua chain state is per thread (see wrk/common.lua)
    cmd = ["wrk", "-t", str(conns), "-c", str(conns), "-d", f"{max(1, round(duration))}s", "--timeout", "70s"]
    cmd += ["-s", str(BENCH / "wrk" / "fasttask.lua"), base]
    if path != NOOP_PATH or mode != "plain":
        cmd += ["--", path, mode]  # mode: fasttask.lua's MODE (key: an Idempotency-Key on every submit)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(p: subprocess.Popen[str], timeout: float) -> tuple[dict[str, Any], str]:
    out, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode}: {err[-1000:]}")
    return parse_result(out), out + err


def run_wrk(base: str, duration: float, conns: int, path: str, mode: str = "plain") -> tuple[dict[str, Any], str]:
    return finish_wrk(start_wrk(base, duration, conns, path, mode), duration + 120)


# ----------------------------------------------------------------------------- measuring

_RUNS: collections.Counter[str] = collections.Counter()


def run_tag(key: str) -> str:
    """`key-N` for the Nth run of a measurement: the name its log files carry."""
    _RUNS[key] += 1
    return f"{key}-{_RUNS[key]}"


@dataclass
class Snapshot:
    t: float
    stats: tuple[collections.Counter[str], collections.Counter[str]]
    finished: int
    failed: int
    cpu: dict[str, tuple[float, float]]  # role -> (user s, sys s)
    machine: tuple[float, float]
    children_cpu: float  # reaped children (wrk) user+sys
    self_cpu: float  # this script's own user+sys


def snapshot(redis: RedisServer, queue: str, roles: dict[str, list[int]]) -> Snapshot:
    cpu: dict[str, tuple[float, float]] = {}
    for role, pids in roles.items():
        user = system = 0.0
        for pid in pids:
            u, s = cpu_times(pid)
            user, system = user + u, system + s
        cpu[role] = (user, system)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Snapshot(
        t=time.monotonic(),
        stats=commandstats(redis.r),
        finished=redis.r.call("ZCARD", f"rq:finished:{queue}"),
        failed=redis.r.call("ZCARD", f"rq:failed:{queue}"),
        cpu=cpu,
        machine=machine_busy(),
        children_cpu=ru.ru_utime + ru.ru_stime,
        self_cpu=self_cpu(),
    )


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def window(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """What happened between two snapshots, per finished job."""
    jobs = b.finished - a.finished
    out: dict[str, Any] = {"jobs_done": jobs, "jobs_failed": b.failed - a.failed, "window_s": round(b.t - a.t, 3)}
    per = max(jobs, 1)
    out["wrk_cpu_ms_per_job"] = round((b.children_cpu - a.children_cpu) * 1000 / per, 3)
    for role in a.cpu:
        du, ds = b.cpu[role][0] - a.cpu[role][0], b.cpu[role][1] - a.cpu[role][1]
        out[f"{role}_cpu_ms_per_job"] = round((du + ds) * 1000 / per, 3)
        out[f"{role}_cpu_user_ms_per_job"] = round(du * 1000 / per, 3)
        out[f"{role}_cpu_sys_ms_per_job"] = round(ds * 1000 / per, 3)
    busy, total = b.machine[0] - a.machine[0], b.machine[1] - a.machine[1]
    out["machine_busy_pct"] = round(100 * busy / total, 1) if total else None
    known = sum(sum(b.cpu[role]) - sum(a.cpu[role]) for role in a.cpu) + b.self_cpu - a.self_cpu
    if "wrk" not in a.cpu:
        known += b.children_cpu - a.children_cpu
    out["other_cpu_pct"] = round(100 * (busy - known) / total, 1) if total else None
    commands = commands_between(a.stats, b.stats)
    out["redis_commands"] = dict(commands.most_common())
    out["redis_cmds_per_job"] = round(sum(commands.values()) / per, 2)
    return out


class Monitor:
    """Counts the commands Redis runs (MONITOR), split into sent by clients and run inside Lua scripts."""

    def __init__(self, redis: RedisServer, exclude: str, marker: str) -> None:
        self.conn = MiniRedis(redis.port, timeout=120)
        self.exclude = exclude.encode()
        self.marker = marker.encode()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.done = threading.Event()
        self.conn.call("MONITOR")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        pattern = re.compile(rb'^\+[\d.]+ \[(\d+ )?([^\]]+)\] "([^"]+)"')
        try:
            while True:
                line = self.conn.readline()
                if not line:
                    return
                m = pattern.match(line)
                if not m:
                    continue
                source, cmd = m.group(2), m.group(3).lower().decode()
                if source == self.exclude:
                    if cmd == "echo" and self.marker in line:
                        return
                    continue
                self.counts[("lua" if source == b"lua" else "client", cmd)] += 1
        finally:
            self.done.set()

    def finish(self, r: MiniRedis) -> collections.Counter[tuple[str, str]]:
        r.call("ECHO", self.marker.decode())
        if not self.done.wait(120):
            raise RuntimeError("MONITOR reader did not catch up within 120 s")
        self.conn.close()
        return self.counts


def profile(pids: dict[str, list[int]], seconds: float, logdir: Path, tag: str) -> dict[str, Any]:
    """py-spy (`--gil`: samples where a thread holds the GIL, i.e. Python on CPU) of each process, all at once;
    the samples of a role's processes are summed."""
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for role, role_pids in pids.items():
        for pid in role_pids:
            out = logdir / f"py-spy-{tag}-{role}-{pid}.txt"
            cmd = [str(PY_SPY), "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "200"]
            cmd += ["--gil", "--nonblocking", "-f", "raw", "-o", str(out)]
            procs.append((role, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out))
    files: dict[str, list[Path]] = {role: [] for role in pids}
    summary: dict[str, Any] = {}
    for role, p, out in procs:
        text = p.communicate(timeout=seconds + 60)[0].decode(errors="replace")
        if p.returncode != 0 or not out.exists():
            summary[role] = {"error": text.strip().splitlines()[-1:] or ["py-spy failed"]}
            continue
        files[role].append(out)
    for role, paths in files.items():
        if role not in summary:
            summary[role] = summarize_profile(paths)
            summary[role]["processes"] = len(paths)
    return summary


def summarize_profile(paths: list[Path], top: int = 12) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    lines = [line for path in paths for line in path.read_text().splitlines()]
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    skip = ("(fasttask/cli.py)", "(fasttask/__main__.py)")
    ours = [(f, n) for f, n in inclusive.most_common() if "(fasttask/" in f and not f.endswith(skip)]
    return {
        "samples": total,
        "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)] if total else [],
        "fasttask_inclusive": [(f, round(100 * n / total, 1)) for f, n in ours[:top]] if total else [],
    }


# ----------------------------------------------------------------------------- the measurements


@dataclass
class Row:
    key: str
    system: str
    setup: str
    result: dict[str, Any] | None = None
    error: str | None = None
    unavailable: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def measure_fasttask(
    args: argparse.Namespace,
    logdir: Path,
    *,
    key: str,
    app: str,
    path: str,
    queue: str,
    workers: int,
    conns: int,
    monitor: bool = False,
    do_profile: bool = False,
    steady: bool = False,
    mode: str = "plain",
) -> Row:
    setup = f"1 API + {workers} worker{'s' if workers > 1 else ''}, {conns} wrk conns"
    if mode == "key":
        setup += ", an Idempotency-Key on every submit"
    row = Row(key, "fasttask e2e" + ("" if path == NOOP_PATH else f" ({path})"), setup)
    tag = run_tag(key)
    redis = RedisServer(logdir, tag)
    cluster = Cluster(app, redis, workers, logdir, tag)
    try:
        row.extra["startup_s"] = round(cluster.wait_ready(timeout=60 + 5 * workers), 1)
        why = fasttask_smoke(cluster.base, path)
        if why:
            row.error = f"smoke job failed: {why}"
            return row
        roles = {"worker": [w.pid for w in cluster.workers], "api": [cluster.api.pid], "redis": [redis.proc.pid]}
        idle = {}
        if args.idle_s > 0:  # what the processes cost with nothing to do
            time.sleep(1.0)
            a = snapshot(redis, queue, roles)
            time.sleep(args.idle_s)
            b = snapshot(redis, queue, roles)
            span = b.t - a.t
            for role, pids in roles.items():
                used = sum(b.cpu[role]) - sum(a.cpu[role])
                idle[f"{role}_ms_per_s_each"] = round(used * 1000 / span / len(pids), 2)
            idle["redis_commands_per_s"] = round(sum(commands_between(a.stats, b.stats).values()) / span, 1)
        if steady:
            # one wrk run; the window is taken inside it, after the warm-up, so no ramp-up or tail is in it
            warm = max(args.warmup, 1.0)
            drain(redis.r, queue)
            wrk = start_wrk(cluster.base, warm + args.duration + 1, conns, path)
            time.sleep(warm)
            before = snapshot(redis, queue, {**roles, "wrk": [wrk.pid]})
            time.sleep(args.duration)
            after = snapshot(redis, queue, {**roles, "wrk": [wrk.pid]})
            res, out = finish_wrk(wrk, args.duration + warm + 120)
            drain(redis.r, queue)
            res["wrk_jobs_per_s"] = res["jobs_per_s"]
            res.update(window(before, after))
            res["jobs_per_s"] = round(res["jobs_done"] / res["window_s"], 1)
        else:
            if args.warmup >= 1:
                run_wrk(cluster.base, args.warmup, conns, path, mode)
            drain(redis.r, queue)
            before = snapshot(redis, queue, roles)
            res, out = run_wrk(cluster.base, args.duration, conns, path, mode)
            drain(redis.r, queue)
            after = snapshot(redis, queue, roles)
            res.update(window(before, after))
        (logdir / f"wrk-{tag}.txt").write_text(out)
        res["idle"] = idle
        res["worker_rss_mb"] = [rss_mb(w.pid) for w in cluster.workers]
        res["api_rss_mb"] = rss_mb(cluster.api.pid)
        if not all(p.alive() for p in [cluster.api, *cluster.workers]):
            res["died"] = True
        if monitor and args.monitor_s >= 1:
            marker = f"bench-monitor-end-{os.getpid()}"
            mon = Monitor(redis, redis.r.addr, marker)
            f0 = redis.r.call("ZCARD", f"rq:finished:{queue}")
            run_wrk(cluster.base, args.monitor_s, conns, path)
            drain(redis.r, queue)
            f1 = redis.r.call("ZCARD", f"rq:finished:{queue}")
            counts = mon.finish(redis.r)
            jobs = max(f1 - f0, 1)
            res["monitor"] = {
                "jobs": f1 - f0,
                "client_per_job": round(sum(n for (s, _), n in counts.items() if s == "client") / jobs, 2),
                "lua_per_job": round(sum(n for (s, _), n in counts.items() if s == "lua") / jobs, 2),
                "by_command": {f"{s}:{c}": round(n / jobs, 3) for (s, c), n in counts.most_common()},
            }
        if do_profile:
            if not PY_SPY.exists():
                res["profile"] = {"error": f"{PY_SPY} missing"}
            else:
                seconds = args.profile_s
                box: dict[str, Any] = {}
                driver = threading.Thread(
                    target=lambda: box.update(wrk=run_wrk(cluster.base, seconds + 3, conns, path)[0])
                )
                driver.start()
                time.sleep(1.5)
                sampled = [w.pid for w in cluster.workers[:4]]  # with many workers each one does little
                res["profile"] = profile({"worker": sampled, "api": [cluster.api.pid]}, seconds, logdir, tag)
                driver.join()
                res["profile"]["jobs_per_s_while_profiling"] = box.get("wrk", {}).get("jobs_per_s")
        row.result = res
    except Exception as e:  # one broken measurement is reported, the others still run
        row.error = f"{type(e).__name__}: {e}"
    finally:
        cluster.stop()
        redis.stop()
    return row


def measure_rq(args: argparse.Namespace, logdir: Path, workers: int) -> Row:
    key = f"rq-{workers}"
    row = Row(key, "RQ SimpleWorker drain", f"{workers} worker{'s' if workers > 1 else ''}, {args.jobs} jobs queued")
    tag = run_tag(key)
    redis = RedisServer(logdir, tag)
    procs: list[Proc] = []
    env = clean_env()
    try:
        url = redis.url
        script = str(BENCH / "rq_drain.py")
        r = subprocess.run(
            [str(MAIN_PY), script, "enqueue", "--url", url, "--queue", RQ_QUEUE, "--jobs", str(args.jobs)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        if r.returncode != 0:
            raise RuntimeError(f"enqueue failed: {r.stderr[-1500:]}")
        queued = redis.r.call("LLEN", f"rq:queue:{RQ_QUEUE}")
        if queued != args.jobs:
            raise RuntimeError(f"{queued} jobs queued, expected {args.jobs}")
        argv = [str(MAIN_PY), script, "work", "--url", url, "--queue", RQ_QUEUE, "--log-level", args.rq_log_level]
        procs = [Proc(argv, logdir / f"worker-{tag}-{i + 1}.log", env, subprocess.PIPE) for i in range(workers)]

        def ready() -> bool:
            for p in procs:
                if not p.alive():
                    raise RuntimeError(f"rq worker exited:\n{p.log_tail()}")
            return all("READY" in p.log_path.read_text() for p in procs)

        wait_for(ready, 60, "the rq workers to start", 0.05)
        fkey = f"rq:finished:{RQ_QUEUE}"
        roles = {"redis": [redis.proc.pid]}
        before = snapshot(redis, RQ_QUEUE, roles)
        t0 = time.perf_counter()
        for p in procs:
            assert p.proc.stdin is not None
            p.proc.stdin.write(b"go\n")
            p.proc.stdin.flush()
        deadline = time.monotonic() + 600
        while redis.r.call("ZCARD", fkey) + redis.r.call("ZCARD", f"rq:failed:{RQ_QUEUE}") < args.jobs:
            if time.monotonic() > deadline:
                raise RuntimeError("rq workers did not drain the queue within 600 s")
            if not any(p.alive() for p in procs):
                break
            time.sleep(0.005)
        t1 = time.perf_counter()
        for p in procs:
            p.proc.wait(60)
        after = snapshot(redis, RQ_QUEUE, roles)
        res = window(before, after)
        outs = [parse_result(p.log_path.read_text()) for p in procs]
        cpu = sum(o["cpu_user_s"] + o["cpu_sys_s"] for o in outs)
        jobs = max(res["jobs_done"], 1)
        res["seconds"] = round(t1 - t0, 4)
        res["jobs_per_s"] = round(res["jobs_done"] / (t1 - t0), 1)
        res["worker_cpu_ms_per_job"] = round(cpu * 1000 / jobs, 3)
        res["worker_cpu_user_ms_per_job"] = round(sum(o["cpu_user_s"] for o in outs) * 1000 / jobs, 3)
        res["worker_cpu_sys_ms_per_job"] = round(sum(o["cpu_sys_s"] for o in outs) * 1000 / jobs, 3)
        res["worker_seconds"] = [o["seconds"] for o in outs]
        busy, total = after.machine[0] - before.machine[0], after.machine[1] - before.machine[1]
        known = cpu + sum(after.cpu["redis"]) - sum(before.cpu["redis"]) + after.self_cpu - before.self_cpu
        res["other_cpu_pct"] = round(100 * (busy - known) / total, 1) if total else None
        row.result = res
    except Exception as e:
        row.error = f"{type(e).__name__}: {e}"
    finally:
        for p in procs:
            p.stop()
        redis.stop()
    return row


def measure_celery(args: argparse.Namespace, logdir: Path) -> Row:
    row = Row("celery", "Celery drain", f"prefork --concurrency 2, {args.jobs} jobs queued")
    if not CELERY_PY.exists():
        row.unavailable = f"{CELERY_DIR} missing: run `bash bench/setup.sh` (pip install 'celery[redis]')"
        return row
    tag = run_tag("celery")
    redis = RedisServer(logdir, tag)
    env = clean_env(
        BENCH_CELERY_BROKER=f"redis://{HOST}:{redis.port}/0", BENCH_CELERY_BACKEND=f"redis://{HOST}:{redis.port}/1"
    )
    argv = [str(CELERY_DIR / "bin" / "celery"), "-A", "bench.apps.celery_noop", "worker", "--pool", "prefork"]
    argv += ["--concurrency", "2", "--loglevel", "WARNING", "-n", f"bench-{redis.port}@localhost"]
    worker = Proc(argv, logdir / f"worker-{tag}.log", env)
    try:
        version = subprocess.run(
            [str(CELERY_PY), "-c", "import celery; print(celery.__version__)"], capture_output=True, text=True
        ).stdout.strip()
        cmd = [str(CELERY_PY), str(BENCH / "celery_drain.py"), "--jobs", str(args.jobs)]
        cmd += ["--worker-pid", str(worker.pid), "--redis-port", str(redis.port), "--redis-pid", str(redis.proc.pid)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        (logdir / f"driver-{tag}.txt").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"celery_drain exited {r.returncode}: {(r.stderr or r.stdout)[-1500:]}")
        res = parse_result(r.stdout)
        jobs = max(res["jobs"], 1)
        res["celery_version"] = version
        res["worker_cpu_ms_per_job"] = round((res["worker_cpu_user_s"] + res["worker_cpu_sys_s"]) * 1000 / jobs, 3)
        res["redis_cmds_per_job"] = round(sum(res["redis_commands"].values()) / jobs, 2)
        res["jobs_done"] = res["succeeded"]
        row.result = res
        if res["succeeded"] != res["jobs"]:
            row.error = f"only {res['succeeded']} of {res['jobs']} results were SUCCESS/ok"
    except Exception as e:
        row.error = f"{type(e).__name__}: {e}"
    finally:
        worker.stop()
        redis.stop()
    return row


# ----------------------------------------------------------------------------- report


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if v >= 100 else f"{v:.{digits}f}"


def notes(row: Row) -> str:
    res = row.result or {}
    bad = [f"{k}={res[k]}" for k in ("failed", "rejected", "bad_reads", "socket_errors", "http_errors") if res.get(k)]
    if res.get("jobs_failed"):
        bad.append(f"{res['jobs_failed']} jobs failed")
    if res.get("died"):
        bad.append("a process died")
    if row.key.startswith("e2e") or row.key == "many":
        bad.append(
            f"CPU ms/job: API {res['api_cpu_ms_per_job']:.2f}, Redis {res['redis_cpu_ms_per_job']:.2f}, "
            f"wrk {res['wrk_cpu_ms_per_job']:.2f}; machine {res['machine_busy_pct']:.0f}% busy "
            f"({res['other_cpu_pct']:.0f}% outside the measured processes)"
        )
    idle = res.get("idle") or {}
    if idle:
        bad.append(
            f"idle: each worker {idle['worker_ms_per_s_each']:.2f} ms CPU/s, "
            f"Redis {idle['redis_commands_per_s']:.0f} cmds/s"
        )
    if row.key == "many":
        bad.append(f"wrk's own count {res['wrk_jobs_per_s']:.1f} jobs/s (whole run, ramp-up included)")
        bad.append(f"worker RSS {min(res['worker_rss_mb'])}-{max(res['worker_rss_mb'])} MB")
    if row.key.startswith("rq"):
        bad.append(f"rq log level {res.get('log_level', '')}".strip())
    if row.key == "celery":
        bad.append(f"celery {res.get('celery_version')}, {res['succeeded']}/{res['jobs']} results ok")
    if (row.key.startswith("rq") or row.key == "celery") and res.get("machine_busy_pct") is not None:
        bad.append(
            f"machine {res['machine_busy_pct']:.0f}% busy "
            f"({res.get('other_cpu_pct', 0):.0f}% outside the measured processes)"
        )
    runs = row.extra.get("runs", [])
    if len(runs) > 1:
        each = " / ".join(f"{r['jobs_per_s']:,.0f}" for r in runs)
        bad.append(f"median of {len(runs)} runs: {each} jobs/s")
    if row.extra.get("disturbed_attempts"):
        bad.append(f"{row.extra['disturbed_attempts']} run(s) disturbed by other processes measured again")
    if row.error and row.result:
        bad.append(row.error)
    return "; ".join(b for b in bad if b)


def render(rows: list[Row], args: argparse.Namespace, machine_note: str) -> str:
    by = {r.key: r for r in rows}
    lines = [
        f"Distributed benchmark: {machine_note}. wrk runs {args.duration:g} s after {args.warmup:g} s warm-up; "
        f"drains of {args.jobs} no-op jobs queued before the clock starts. Nothing pinned.",
        "",
        "| # | system | setup | jobs/s | p50 ms | p99 ms | worker CPU ms/job | Redis cmds/job | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    section = {"e2e-1": 1, "e2e-2": 1, "e2e-1-key": 1, "rq-1": 4, "rq-2": 4, "celery": 5, "many": 6}
    for r in rows:
        n = section.get(r.key, "")
        if r.unavailable:
            lines.append(f"| {n} | {r.system} | {r.setup} | - | - | - | - | - | unavailable: {r.unavailable} |")
            continue
        if not r.result:
            lines.append(
                f"| {n} | {r.system} | {r.setup} | - | - | - | - | - | {(r.error or '?').splitlines()[0][:200]} |"
            )
            continue
        res = r.result
        jps = fmt(res["jobs_per_s"])
        if r.key == "many":
            jps += (
                f" ({100 * res['jobs_per_s'] / (args.many_workers / SLEEP_S):.1f}% of {args.many_workers / SLEEP_S:g})"
            )
        p50 = fmt(res.get("p50_ms")) if "p50_ms" in res else "-"
        p99 = fmt(res.get("p99_ms")) if "p99_ms" in res else "-"
        lines.append(
            f"| {n} | {r.system} | {r.setup} | {jps} | {p50} | {p99} | {fmt(res.get('worker_cpu_ms_per_job'), 3)} "
            f"| {fmt(res.get('redis_cmds_per_job'), 1)} | {notes(r)} |"
        )

    def val(k: str, field_: str) -> float | None:
        row = by.get(k)
        return row.result.get(field_) if row and row.result else None

    lines += ["", "Targets:", "", "| target | measured | met |", "|---|---|---|"]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("yes" if ok else "**no**")

    ft2, rq2 = val("e2e-2", "jobs_per_s"), val("rq-2", "jobs_per_s")
    ok = None if ft2 is None or rq2 is None else ft2 >= rq2
    lines.append(
        f"| fasttask e2e, 2 workers ≥ RQ SimpleWorker x2 drain | {fmt(ft2)} vs {fmt(rq2)} jobs/s"
        f"{f' ({ft2 / rq2:.2f}x)' if ft2 and rq2 else ''} | {verdict(ok)} |"
    )

    plain, keyed = val("e2e-1", "jobs_per_s"), val("e2e-1-key", "jobs_per_s")
    if plain and keyed:
        lines.append(
            f"| an Idempotency-Key on every submit: ≥ 0.9x the jobs/s of none (1 worker) "
            f"| {fmt(keyed)} vs {fmt(plain)} jobs/s ({keyed / plain:.2f}x) | {verdict(keyed >= 0.9 * plain)} |"
        )

    def setup_of(k: str) -> str:
        return f"{by[k].system}, {by[k].setup}" if k in by else k

    for k in ("e2e-1", "e2e-2", "many"):
        if k == "many" and k not in by:
            continue
        v = val(k, "worker_cpu_ms_per_job")
        lines.append(
            f"| worker CPU ≤ {TARGET_WORKER_CPU_MS} ms/job ({setup_of(k)}) | {fmt(v, 3)} ms "
            f"| {verdict(None if v is None else v <= TARGET_WORKER_CPU_MS)} |"
        )
    for k in ("e2e-1", "e2e-2", "many"):
        if k == "many" and k not in by:
            continue
        v = val(k, "redis_cmds_per_job")
        lines.append(
            f"| ≤ {TARGET_REDIS_CMDS:g} Redis commands/job ({setup_of(k)}) | {fmt(v, 1)} "
            f"| {verdict(None if v is None else v <= TARGET_REDIS_CMDS)} |"
        )
    many = val("many", "jobs_per_s")
    ideal = args.many_workers / SLEEP_S
    pct = None if many is None else 100 * many / ideal
    lines.append(
        f"| {args.many_workers} workers on 100 ms jobs ≥ {TARGET_MANY_PCT:g}% of {ideal:g} jobs/s "
        f"| {fmt(many)} jobs/s = {fmt(pct, 1)}% | {verdict(None if pct is None else pct >= TARGET_MANY_PCT)} |"
    )

    # Redis commands per job, side by side
    keys = [k for k in ("e2e-1", "e2e-2", "many", "rq-1", "celery") if k in by and by[k].result]
    if keys:
        top: collections.Counter[str] = collections.Counter()
        for k in keys:
            res = by[k].result or {}
            jobs = max(res.get("jobs_done", 0), 1)
            for cmd, n in res.get("redis_commands", {}).items():
                top[cmd] = max(top[cmd], n / jobs)
        lines += ["", "Redis commands per finished job (INFO commandstats; commands run inside Lua scripts count too):"]
        lines += ["", "| command | " + " | ".join(by[k].system + ", " + by[k].setup.split(",")[0] for k in keys) + " |"]
        lines.append("|---|" + "---:|" * len(keys))
        for cmd, _ in top.most_common(args.top_commands):
            cells = []
            for k in keys:
                res = by[k].result or {}
                n = res.get("redis_commands", {}).get(cmd)
                cells.append(f"{n / max(res['jobs_done'], 1):.2f}" if n else "")
            lines.append(f"| {cmd} | " + " | ".join(cells) + " |")
        totals = [fmt((by[k].result or {}).get("redis_cmds_per_job"), 2) for k in keys]
        lines.append("| **total** | " + " | ".join(totals) + " |")

    mon = val("e2e-1", "monitor")
    if mon:
        lines += [
            "",
            f"MONITOR sample ({args.monitor_s:g} s, 1 worker, {mon['jobs']} jobs): per job "
            f"{mon['client_per_job']:.2f} commands sent by clients + {mon['lua_per_job']:.2f} run inside Lua scripts.",
            "",
            "| sent by | command | per job |",
            "|---|---|---:|",
        ]
        for name, n in list(mon["by_command"].items())[: args.top_commands + 6]:
            src, _, cmd = name.partition(":")
            lines.append(f"| {'client' if src == 'client' else 'Lua script'} | {cmd} | {n:.2f} |")

    for k in ("e2e-1", "many"):
        prof = val(k, "profile")
        if not prof:
            continue
        lines += [
            "",
            f"py-spy --gil (samples where Python holds the GIL, i.e. runs), {args.profile_s:g} s, "
            f"{by[k].system}, {by[k].setup}; "
            f"{fmt(prof.get('jobs_per_s_while_profiling'))} jobs/s while profiling:",
        ]
        for role in ("worker", "api"):
            p = prof.get(role) or {}
            if "error" in p:
                lines += ["", f"{role}: py-spy failed: {p['error']}"]
                continue
            procs = f"{p.get('processes', 1)} processes, " if p.get("processes", 1) > 1 else ""
            lines += ["", f"{role} ({procs}{p.get('samples', 0)} samples), top own time:", ""]
            lines += [f"- {pct_:.1f}% {frame}" for frame, pct_ in p.get("own", [])]
            lines += ["", f"{role}, fasttask frames inclusive:", ""]
            lines += [f"- {pct_:.1f}% {frame}" for frame, pct_ in p.get("fasttask_inclusive", [])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def measure_repeatedly(what: str, run: Any, args: argparse.Namespace) -> Row:
    """--repeat runs of one measurement, each re-run (--retries) while other processes took more than
    --max-outside % of the CPUs; the row is the run with the median jobs/s."""
    runs: list[Row] = []
    disturbed = 0
    for i in range(args.repeat):
        attempts: list[Row] = []
        while True:
            before_pct = wait_idle(args.wait_idle) if args.wait_idle > 0 else None
            busy_note = f" (machine {before_pct:.0f}% busy before)" if before_pct is not None else ""
            print(f"[{what}] run {i + 1}/{args.repeat} ...{busy_note}", flush=True)
            t0 = time.monotonic()
            row: Row = run(not runs and not attempts)
            row.extra["busy_before_pct"] = before_pct
            attempts.append(row)
            took = f"{time.monotonic() - t0:.0f}s"
            if row.unavailable:
                print(f"[{what}] unavailable: {row.unavailable}", flush=True)
                return row
            if not row.result:
                print(f"[{what}] ({took}) ERROR {row.error}", flush=True)
                break
            brief = {k: v for k, v in row.result.items() if not isinstance(v, dict | list)}
            print(f"[{what}] ({took}) {json.dumps(brief)}", flush=True)
            if row.error:
                print(f"[{what}] ERROR {row.error}", flush=True)
            outside = row.result.get("other_cpu_pct")
            if outside is None or outside <= args.max_outside or len(attempts) > args.retries:
                break
            print(f"[{what}] {outside:.0f}% of the CPUs went to other processes: measuring again", flush=True)
        measured = [a for a in attempts if a.result]
        if not measured:
            return attempts[-1]  # broken: no point in repeating
        disturbed += len(measured) - 1
        runs.append(min(measured, key=lambda a: (a.result or {}).get("other_cpu_pct") or 0.0))
    ranked = sorted(runs, key=lambda r: (r.result or {})["jobs_per_s"])
    row = ranked[(len(ranked) - 1) // 2]
    res = row.result or {}
    for other in runs:  # MONITOR and py-spy ran on the first run only
        for k in ("monitor", "profile"):
            if k in (other.result or {}) and k not in res:
                res[k] = (other.result or {})[k]
    row.extra["runs"] = [
        {k: (r.result or {}).get(k) for k in ("jobs_per_s", "p50_ms", "p99_ms", "other_cpu_pct")} for r in runs
    ]
    row.extra["disturbed_attempts"] = disturbed
    if row.key.startswith("rq"):
        res["log_level"] = args.rq_log_level
    return row


def report(results_dir: Path) -> int:
    """Render an earlier run's results.json again (with this version's tables)."""
    saved = json.loads((results_dir / "results.json").read_text())
    args = argparse.Namespace(**saved["args"])
    rows = [Row(**r) for r in saved["rows"]]
    print(render(rows, args, saved["machine"]))
    return 0


def busy_pct(seconds: float) -> float:
    """How busy the machine's CPUs are over `seconds`, in percent."""
    b0 = machine_busy()
    time.sleep(seconds)
    b1 = machine_busy()
    return 100 * (b1[0] - b0[0]) / max(b1[1] - b0[1], 1e-9)


def wait_idle(timeout: float, threshold: float = 5.0) -> float:
    """Wait (up to `timeout` s) until the machine is below `threshold`% busy for 2 s; returns the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        pct = busy_pct(2.0)
        if pct < threshold or time.monotonic() > deadline:
            return pct


def unpack_fasttask(rev: str, dest: Path) -> str:
    """Put commit `rev`'s fasttask/ into `dest` (git archive: the repository is only read); its short hash."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "fasttask"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    env = clean_env(PYTHONPATH=str(dest))
    where = subprocess.run(
        [str(MAIN_PY), "-c", "import fasttask; print(fasttask.__file__)"],
        cwd=dest,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not where.startswith(str(dest)):
        raise SystemExit(f"fasttask from {rev} would not be the one imported (got {where!r})")
    return short


def git_rev() -> str:
    """The checkout's commit, and whether fasttask/ differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "fasttask"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "?"
    return rev.stdout.strip() + (" + uncommitted changes in fasttask/" if dirty.stdout.strip() else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk measurement (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections for the no-op runs (default 32)")
    ap.add_argument("--jobs", type=int, default=3000, help="jobs per RQ/Celery drain (default 3000)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured wrk warm-up (default 2)")
    ap.add_argument("--many-workers", type=int, default=32, help="workers for the 100 ms run (default 32)")
    ap.add_argument("--many-connections", type=int, default=64, help="wrk connections for it (default 64)")
    ap.add_argument("--monitor-s", type=float, default=2.0, help="MONITOR sample after the 1-worker run; 0: none")
    ap.add_argument(
        "--profile", action="store_true", help="py-spy a worker and the API process (1-worker and many-workers runs)"
    )
    ap.add_argument("--profile-s", type=float, default=5.0, help="seconds of py-spy sampling (default 5)")
    ap.add_argument("--idle-s", type=float, default=3.0, help="seconds of idle CPU measurement per cluster; 0: none")
    ap.add_argument("--rq-log-level", default="WARNING", help="rq SimpleWorker logging level (default WARNING)")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each measurement wait up to this many seconds for the machine to be < 5%% busy (default 0)",
    )
    ap.add_argument(
        "--fasttask-rev",
        default=None,
        help="measure fasttask/ as of this commit (unpacked with git archive into the results dir) instead of "
        "the working tree",
    )
    ap.add_argument(
        "--max-outside",
        type=float,
        default=10.0,
        help="measure again when more than this %% of the CPUs went to processes outside the measurement (default 10)",
    )
    ap.add_argument("--retries", type=int, default=2, help="at most this many extra attempts per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported (default 3)")
    ap.add_argument("--report", type=Path, default=None, help="print the tables of an earlier run's results dir again")
    ap.add_argument("--top-commands", type=int, default=14, help="rows of the commands-per-job table")
    ap.add_argument("--only", default="e2e,rq,celery,many", help="comma-separated subset of e2e,rq,celery,many")
    ap.add_argument("--out", type=Path, default=None, help="results dir (default bench/results/distributed-<time>)")
    args = ap.parse_args()
    if args.report is not None:
        return report(args.report)
    only = {s for s in args.only.split(",") if s}
    for tool in ("redis-server", "wrk"):
        if not shutil.which(tool):
            print(f"{tool} not found: apt-get install -y {tool} (or bash bench/setup.sh)", file=sys.stderr)
            return 2

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = args.out or BENCH / "results" / f"distributed-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    rv = next((w.split("=")[1] for w in redis_version if w.startswith("v=")), "?")
    if args.fasttask_rev:
        global FASTTASK_SRC
        FASTTASK_SRC = logdir / "fasttask-src"
        ft = f"{unpack_fasttask(args.fasttask_rev, FASTTASK_SRC)} (--fasttask-rev {args.fasttask_rev})"
    else:
        ft = git_rev()
    machine_note = f"{os.cpu_count()} CPUs, redis-server {rv}, Python {sys.version.split()[0]}, fasttask {ft}"
    background = busy_pct(2.0)
    machine_note += f", {background:.0f}% of the machine busy before the start"
    print(f"{machine_note}; logs in {logdir}", flush=True)
    if background > 10:
        print("WARNING: something else is using the CPUs; the figures will be low", file=sys.stderr, flush=True)

    plan: list[tuple[str, Any]] = []  # (what, run(first) -> Row); MONITOR and py-spy only on a first run
    if "e2e" in only:
        for n in (1, 2):
            plan.append(
                (
                    f"fasttask e2e, {n} worker(s)",
                    lambda first, n=n: measure_fasttask(
                        args,
                        logdir,
                        key=f"e2e-{n}",
                        app=NOOP_APP,
                        path=NOOP_PATH,
                        queue=NOOP_QUEUE,
                        workers=n,
                        conns=args.connections,
                        monitor=first and n == 1,
                        do_profile=first and n == 1 and args.profile,
                    ),
                )
            )
        plan.append(
            (
                "fasttask e2e, 1 worker, an Idempotency-Key on every submit",
                lambda first: measure_fasttask(
                    args,
                    logdir,
                    key="e2e-1-key",
                    app=NOOP_APP,
                    path=NOOP_PATH,
                    queue=NOOP_QUEUE,
                    workers=1,
                    conns=args.connections,
                    mode="key",
                ),
            )
        )
    if "rq" in only:
        for n in (1, 2):
            plan.append((f"RQ SimpleWorker drain, {n} worker(s)", lambda first, n=n: measure_rq(args, logdir, n)))
    if "celery" in only:
        plan.append(("Celery drain", lambda first: measure_celery(args, logdir)))
    if "many" in only:
        plan.append(
            (
                f"fasttask, {args.many_workers} workers on 100 ms jobs",
                lambda first: measure_fasttask(
                    args,
                    logdir,
                    key="many",
                    app=SLEEP_APP,
                    path=SLEEP_PATH,
                    queue=SLEEP_QUEUE,
                    workers=args.many_workers,
                    conns=args.many_connections,
                    steady=True,
                    do_profile=first and args.profile,
                ),
            )
        )

    rows = [measure_repeatedly(what, run, args) for what, run in plan]
    table = render(rows, args, machine_note)
    (logdir / "results.md").write_text(table + "\n")
    (logdir / "results.json").write_text(
        json.dumps(
            {
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "machine": machine_note,
                "rows": [r.__dict__ for r in rows],
            },
            indent=2,
        )
    )
    print()
    print(table)
    print(f"\n(logs and raw results in {logdir})")
    return 0 if all((r.result and not r.error) or r.unavailable for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

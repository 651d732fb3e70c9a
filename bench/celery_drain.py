"""Celery helper for bench/distributed.py (runs in bench/.venv-celery): drains --jobs no-op tasks.

The worker (`celery -A bench.apps.celery_noop worker --pool prefork --concurrency 2`) is already running
and idle. This waits until it answers a ping, makes it stop consuming the queue, sends --jobs tasks,
then starts the clock, lets the worker consume again and stops the clock when the result backend
(Redis db 1, nothing else in it) holds --jobs results. CPU time of the worker and its pool children
and Redis's command counts are read at both ends. Prints `BENCH_RESULT {json}`.

    BENCH_CELERY_BROKER=redis://127.0.0.1:P/0 BENCH_CELERY_BACKEND=redis://127.0.0.1:P/1 \\
      bench/.venv-celery/bin/python bench/celery_drain.py --jobs 3000 --worker-pid PID --redis-port P
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.apps.celery_noop` importable

from bench.apps.celery_noop import app, noop
from bench.common import MiniRedis, children, commands_between, commandstats, cpu_times, machine_busy

QUEUE = "celery"


def tree_cpu(pid: int) -> tuple[float, float]:
    user = system = 0.0
    for p in [pid, *children(pid)]:
        try:
            u, s = cpu_times(p)
        except OSError:
            continue
        user, system = user + u, system + s
    return user, system


def own_and_redis_cpu(redis_pid: int | None) -> float:
    t = os.times()
    cpu = t.user + t.system
    if redis_pid:
        cpu += sum(cpu_times(redis_pid))
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--worker-pid", type=int, required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--redis-pid", type=int, default=None, help="to tell its CPU time from other processes'")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    deadline = time.monotonic() + 120
    while not app.control.ping(timeout=1.0):
        if time.monotonic() > deadline:
            raise SystemExit("celery worker did not answer a ping within 120 s")
    app.control.cancel_consumer(QUEUE, reply=True, timeout=5.0)

    t_send = time.perf_counter()
    ids = [noop.apply_async().id for _ in range(args.jobs)]
    send_s = time.perf_counter() - t_send

    broker = MiniRedis(args.redis_port, db=0)
    results = MiniRedis(args.redis_port, db=1)
    queued = broker.call("LLEN", QUEUE)
    if results.call("DBSIZE") != 0:
        raise SystemExit("the result backend's db 1 is not empty")
    children_pids = children(args.worker_pid)

    before = commandstats(results)  # INFO is server-wide; `results` is the only client polling
    cpu0 = tree_cpu(args.worker_pid)
    others0 = own_and_redis_cpu(args.redis_pid)
    machine0 = machine_busy()
    t0 = time.perf_counter()
    app.control.add_consumer(QUEUE, reply=False)
    while results.call("DBSIZE") < args.jobs:
        if time.perf_counter() - t0 > args.timeout:
            raise SystemExit(f"only {results.call('DBSIZE')} of {args.jobs} results after {args.timeout:g} s")
        time.sleep(0.005)
    t1 = time.perf_counter()
    cpu1 = tree_cpu(args.worker_pid)
    others1 = own_and_redis_cpu(args.redis_pid)
    machine1 = machine_busy()
    after = commandstats(results)
    busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
    known = sum(cpu1) - sum(cpu0) + others1 - others0

    ok = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        for raw in results.call("MGET", *[f"celery-task-meta-{x}" for x in chunk]):
            meta = json.loads(raw) if raw else {}
            ok += meta.get("status") == "SUCCESS" and meta.get("result") == "ok"
    commands = commands_between(before, after)
    result = {
        "jobs": args.jobs,
        "queued_before_start": queued,
        "send_s": round(send_s, 3),
        "seconds": round(t1 - t0, 4),
        "jobs_per_s": round(args.jobs / (t1 - t0), 1),
        "succeeded": ok,
        "worker_cpu_user_s": round(cpu1[0] - cpu0[0], 3),
        "worker_cpu_sys_s": round(cpu1[1] - cpu0[1], 3),
        "pool_processes": len(children_pids),
        "machine_busy_pct": round(100 * busy / total, 1) if total else None,
        "other_cpu_pct": round(100 * (busy - known) / total, 1) if total else None,
        "redis_commands": dict(commands),
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

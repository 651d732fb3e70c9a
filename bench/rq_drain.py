"""Raw RQ helper for bench/distributed.py (runs in the project venv, which has rq):

enqueue: put --jobs no-op jobs (`bench.apps.rq_noop.noop`, JSON serializer) in a queue, in pipelines
work:    one rq SimpleWorker in burst mode; it imports everything, prints READY, waits for a line on
         stdin ("go"), then drains the queue and prints `BENCH_RESULT {json}` with its own CPU time

  .venv/bin/python bench/rq_drain.py enqueue --url redis://127.0.0.1:P/0 --queue bench.noop --jobs 3000
  .venv/bin/python bench/rq_drain.py work --url redis://127.0.0.1:P/0 --queue bench.noop
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.apps.rq_noop` importable

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from bench.apps.rq_noop import noop

CHUNK = 500


def enqueue(args: argparse.Namespace) -> int:
    connection = Redis.from_url(args.url)
    queue = Queue(args.queue, connection=connection, serializer=JSONSerializer)
    t0 = time.perf_counter()
    left = args.jobs
    while left > 0:
        n = min(CHUNK, left)
        with connection.pipeline() as pipe:
            queue.enqueue_many([Queue.prepare_data(noop) for _ in range(n)], pipeline=pipe)
            pipe.execute()
        left -= n
    seconds = time.perf_counter() - t0
    print("BENCH_RESULT " + json.dumps({"enqueued": queue.count, "seconds": round(seconds, 3)}), flush=True)
    return 0


def work(args: argparse.Namespace) -> int:
    connection = Redis.from_url(args.url)
    queue = Queue(args.queue, connection=connection, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=connection, serializer=JSONSerializer)
    print("READY", flush=True)
    sys.stdin.readline()
    t0, c0 = time.perf_counter(), os.times()
    worker.work(burst=True, logging_level=args.log_level)
    t1, c1 = time.perf_counter(), os.times()
    result = {
        "seconds": round(t1 - t0, 4),
        "cpu_user_s": round(c1.user - c0.user, 4),
        "cpu_sys_s": round(c1.system - c0.system, 4),
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("enqueue", "work"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--url", required=True, help="redis://127.0.0.1:PORT/0")
        cmd.add_argument("--queue", default="bench.noop")
        if name == "enqueue":
            cmd.add_argument("--jobs", type=int, default=3000)
        else:
            cmd.add_argument(
                "--log-level",
                default="WARNING",
                help="rq's logging level (default WARNING: rq's own default, INFO, logs two lines per job)",
            )
    args = ap.parse_args()
    return enqueue(args) if args.command == "enqueue" else work(args)


if __name__ == "__main__":
    sys.exit(main())

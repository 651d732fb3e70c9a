"""Python-client driver: N concurrent asyncio clients chaining jobs over httpx.

  fasttask: POST /noop -> GET /jobs/<id>?wait=60 (repeated until final) -> repeat
  peer:     POST /noop -> every POLL_MS: POST /status?job_id=<id> until "Finished" -> repeat

Prints one line `BENCH_RESULT {json}` with the same keys the wrk scripts print.
Used by bench/core.py; runnable alone:
  python bench/pyclient.py --system peer --url http://127.0.0.1:8000 --duration 10 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Any

import httpx

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
FINAL_OTHER_FT = {"failed", "cancelled", "timeout"}


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return 0.0
    k = min(max(math.ceil(p / 100 * len(sorted_vals)), 1), len(sorted_vals))
    return sorted_vals[k - 1]


class Stats:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.counters = {
            "failed": 0,
            "lost": 0,
            "rejected": 0,
            "bad_reads": 0,
            "polls": 0,
            "http_requests": 0,
            "socket_errors": 0,
            "done_at_submit": 0,
        }


async def job_fasttask(client: httpx.AsyncClient, st: Stats) -> None:
    t0 = time.perf_counter()
    st.counters["http_requests"] += 1
    r = await client.post("/noop", content=b"", headers=FORM)
    if r.status_code not in (200, 202):
        st.counters["rejected"] += 1
        return
    job_id = r.json()["id"]
    while True:
        st.counters["http_requests"] += 1
        st.counters["polls"] += 1
        r = await client.get(f"/jobs/{job_id}", params={"wait": 60})
        if r.status_code != 200:
            st.counters["bad_reads"] += 1
            return
        status = r.json().get("status")
        if status == "finished":
            st.lat.append(time.perf_counter() - t0)
            return
        if status in FINAL_OTHER_FT:
            st.counters["failed"] += 1
            return


async def job_peer(client: httpx.AsyncClient, st: Stats, poll_s: float) -> None:
    t0 = time.perf_counter()
    st.counters["http_requests"] += 1
    r = await client.post("/noop", content=b"", headers=FORM)
    body = r.json() if r.status_code == 200 else {}
    if body.get("status") == "Finished":  # ran before the submit was answered: result in hand
        st.lat.append(time.perf_counter() - t0)
        st.counters["done_at_submit"] += 1
        return
    if body.get("status") not in ("Queued", "Processing"):
        st.counters["rejected"] += 1
        return
    job_id = body["id"]
    while True:
        await asyncio.sleep(poll_s)
        st.counters["http_requests"] += 1
        st.counters["polls"] += 1
        r = await client.post("/status", params={"job_id": job_id}, content=b"")
        if r.status_code != 200:
            st.counters["bad_reads"] += 1
            return
        body = r.json()
        status = body.get("status")
        if status == "Finished":
            st.lat.append(time.perf_counter() - t0)
            return
        if status in ("Failed", "Timeout"):
            key = "lost" if body.get("error") == "Job not found." else "failed"
            st.counters[key] += 1
            return


async def worker(system: str, client: httpx.AsyncClient, st: Stats, deadline: float, poll_s: float) -> None:
    while time.perf_counter() < deadline:
        try:
            if system == "fasttask":
                await job_fasttask(client, st)
            else:
                await job_peer(client, st, poll_s)
        except httpx.HTTPError:
            st.counters["socket_errors"] += 1


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    st = Stats()
    # One single-connection AsyncClient per simulated client: like N separate users, and it
    # keeps httpx's shared-pool bookkeeping (slow with many waiters) out of the measurement.
    # trust_env=False: never route loopback traffic through an env-configured proxy.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(70.0)
    clients = [
        httpx.AsyncClient(base_url=args.url, limits=limits, timeout=timeout, trust_env=False)
        for _ in range(args.connections)
    ]
    try:
        start = time.perf_counter()
        deadline = start + args.duration
        tasks = [
            asyncio.create_task(worker(args.system, client, st, deadline, args.poll_ms / 1000)) for client in clients
        ]
        # Jobs still in flight at the deadline are not counted (like wrk); give them a
        # short grace to finish so the connections close cleanly, then cancel.
        await asyncio.sleep(args.duration)
        n_at_deadline = len(st.lat)
        lat_at_deadline = list(st.lat)
        _, pending = await asyncio.wait(tasks, timeout=2.0)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    lat = sorted(lat_at_deadline)
    res = {
        "jobs": n_at_deadline,
        "duration_s": round(args.duration, 3),
        "jobs_per_s": round(n_at_deadline / args.duration, 1),
        "mean_ms": round(sum(lat) / len(lat) * 1000, 3) if lat else 0.0,
        "p50_ms": round(pct(lat, 50) * 1000, 3),
        "p90_ms": round(pct(lat, 90) * 1000, 3),
        "p99_ms": round(pct(lat, 99) * 1000, 3),
        "max_ms": round(lat[-1] * 1000, 3) if lat else 0.0,
        "connections": args.connections,
        "event_loop": args.loop_name,
    }
    res.update(st.counters)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=["fasttask", "peer"], required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--poll-ms", type=float, default=5.0)
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    args.loop_name = "asyncio"
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
            args.loop_name = "uvloop"
        except ImportError:
            pass
    if loop_factory is not None and not hasattr(asyncio, "Runner"):  # Python 3.10
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if hasattr(asyncio, "Runner"):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            res = runner.run(main_async(args))
    else:
        res = asyncio.run(main_async(args))
    sys.stdout.write("BENCH_RESULT " + json.dumps(res) + "\n")


if __name__ == "__main__":
    main()

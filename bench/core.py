"""Core job-throughput benchmark: fasttask vs. fast-task-api 1.2.9 (the peer).

One command runs everything:

    python bench/core.py [--duration 10] [--connections 32]

For each system (fasttask, peer) and each driver (wrk, python) it starts a fresh server
subprocess on a free 127.0.0.1 port, waits until it answers, checks one job end to end,
warms up, runs the driver for --duration seconds, stops the server, and finally prints a
markdown table (system, driver, jobs/s, p50 ms, p99 ms) and the fasttask/peer ratio.

A "job" is one no-op task chained per connection:
  fasttask:         POST /noop -> GET /jobs/<id>?wait=60                 (server holds until final)
  fasttask+prefer:  POST /noop with `Prefer: wait=30`                    (one request: 200 with the result)
  fasttask+key:     as fasttask, each submit with an Idempotency-Key of its own
  peer:             POST /noop -> POST /status?job_id=<id> every 5 ms    (its clients' polling)
The two fasttask variants run under wrk only; the ratios to plain fasttask come from the same run.
Latency is per job: submit sent -> finished result received.

Everything binds and connects to 127.0.0.1 only. With taskset and >= 2 CPUs the server is
pinned to core 0 and the load driver to core 1. Only the standard library is needed to run
this file; the servers and the Python driver use the venvs below.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    FORM,
    HOST,
    MAIN_PY,
    ROOT,
    cpu_times,
    fasttask_smoke,
    free_port,
    http,
    parse_result,
    rss_mb,
)

PEER_PY = BENCH / ".venv-peer" / "bin" / "python"


# ----------------------------------------------------------------------------- helpers


def cpu_plan(no_pin: bool) -> tuple[list[str], list[str], str]:
    """(server prefix, driver prefix, human note)"""
    ncpu = os.cpu_count() or 1
    if no_pin:
        return [], [], f"not pinned (--no-pin; {ncpu} CPUs)"
    ts = shutil.which("taskset")
    if ts and ncpu >= 2:
        return (
            [ts, "-c", "0"],
            [ts, "-c", "1"],
            f"server pinned to core 0, load driver to core 1 (taskset; {ncpu} CPUs)",
        )
    why = "taskset not found" if not ts else f"only {ncpu} CPU"
    return [], [], f"not pinned ({why})"


# ----------------------------------------------------------------------------- systems


@dataclass
class System:
    name: str
    python: Path
    wrk_script: str

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def env(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("FTAPI_") or k.lower().endswith("_proxy"):
                env.pop(k)
        env["FTAPI_HOST"] = HOST
        env["FTAPI_PORT"] = str(port)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def available(self) -> str | None:
        """None if it can run, else why not."""
        if not self.python.exists():
            return f"{self.python} missing"
        return None

    def smoke(self, base: str) -> str | None:
        """Run one job end to end; None if fine, else what went wrong."""
        raise NotImplementedError


class FastTask(System):
    def __init__(self, mode: str = "plain") -> None:
        super().__init__("fasttask" if mode == "plain" else f"fasttask+{mode}", MAIN_PY, "fasttask.lua")
        self.mode = mode
        """bench/wrk/fasttask.lua's MODE: plain, key (an Idempotency-Key per submit), prefer (Prefer: wait)."""

    def command(self, port: int) -> list[str]:
        return [
            str(self.python),
            "-m",
            "fasttask",
            "serve",
            "bench.apps.fasttask_noop:app",
            "--host",
            HOST,
            "--port",
            str(port),
        ]

    def env(self, port: int) -> dict[str, str]:
        env = super().env(port)
        env["FTAPI_QUEUE"] = "local"  # in-process queue: nothing else to run
        env.pop("FTAPI_REDIS_URL", None)
        return env

    def available(self) -> str | None:
        why = super().available()
        if why:
            return why
        r = subprocess.run(
            [str(self.python), "-m", "fasttask", "serve", "--help"], cwd=ROOT, capture_output=True, text=True
        )
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["?"])[-1]
            return f"`python -m fasttask serve` does not work in {self.python.parent.parent}: {tail}"
        return None

    def smoke(self, base: str) -> str | None:
        return fasttask_smoke(base)


class Peer(System):
    def __init__(self) -> None:
        super().__init__("peer", PEER_PY, "peer.lua")

    access_log = True  # as shipped: app.start() runs uvicorn with its access log on

    def command(self, port: int) -> list[str]:
        return [str(self.python), str(BENCH / "apps" / "peer_noop.py"), str(port)]

    def env(self, port: int) -> dict[str, str]:
        env = super().env(port)
        env["BENCH_PEER_ACCESS_LOG"] = "1" if self.access_log else "0"
        return env

    def smoke(self, base: str) -> str | None:
        code, body = http("POST", base + "/noop", b"", FORM)
        job = json.loads(body) if code == 200 else {}
        if job.get("status") == "Finished":  # the peer can finish a job before answering its submit
            return None if job.get("result") == "ok" else f"result {job.get('result')!r}"
        if job.get("status") not in ("Queued", "Processing"):
            return f"POST /noop -> {code} {body[:200]!r}"
        job_id = job["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.005)
            code, body = http("POST", f"{base}/status?job_id={job_id}", b"")
            job = json.loads(body) if code == 200 else {}
            if job.get("status") == "Finished":
                return None if job.get("result") == "ok" else f"result {job.get('result')!r}"
            if job.get("status") not in ("Queued", "Processing"):
                return f"POST /status -> {code} {body[:200]!r}"
        return "job not Finished within 30 s"


# ----------------------------------------------------------------------------- server


class Server:
    def __init__(self, system: System, prefix: list[str], logdir: Path, tag: str) -> None:
        self.system = system
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log_path = logdir / f"server-{tag}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            prefix + system.command(self.port),
            cwd=ROOT,
            env=system.env(self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() ends exactly what we started
        )

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                code, _ = http("GET", self.base + "/health", timeout=2)
                if code == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready on {self.base} after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()


# ----------------------------------------------------------------------------- drivers


def run_wrk(
    system: System, base: str, duration: float, conns: int, poll_ms: float, prefix: list[str]
) -> tuple[dict[str, Any], str]:
    # one connection per wrk thread: the Lua chain state is per thread (see wrk/common.lua)
    cmd = [
        *prefix,
        "wrk",
        "-t",
        str(conns),
        "-c",
        str(conns),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "70s",
        "-s",
        str(BENCH / "wrk" / system.wrk_script),
        base,
    ]
    if system.name == "peer":
        cmd += ["--", str(poll_ms)]
    elif isinstance(system, FastTask) and system.mode != "plain":
        cmd += ["--", "/noop", system.mode]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if r.returncode != 0:
        raise RuntimeError(f"wrk exited {r.returncode}: {r.stderr[-1000:]}")
    return parse_result(r.stdout), r.stdout + r.stderr


def client_python() -> Path:
    for py in (MAIN_PY, PEER_PY):
        if py.exists():
            return py
    return Path(sys.executable)


def run_python(
    system: System, base: str, duration: float, conns: int, poll_ms: float, prefix: list[str]
) -> tuple[dict[str, Any], str]:
    cmd = [
        *prefix,
        str(client_python()),
        str(BENCH / "pyclient.py"),
        "--system",
        system.name,
        "--url",
        base,
        "--duration",
        str(duration),
        "--connections",
        str(conns),
        "--poll-ms",
        str(poll_ms),
    ]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"pyclient exited {r.returncode}: {r.stderr[-1500:]}")
    return parse_result(r.stdout), r.stdout + r.stderr


DRIVERS = {"wrk": run_wrk, "python": run_python}


# ----------------------------------------------------------------------------- main


@dataclass
class Row:
    system: str
    driver: str
    result: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def measure(
    system: System,
    driver: str,
    args: argparse.Namespace,
    server_prefix: list[str],
    driver_prefix: list[str],
    logdir: Path,
) -> Row:
    row = Row(system.name, driver)
    server = Server(system, server_prefix, logdir, f"{system.name}-{driver}")
    try:
        t0 = time.monotonic()
        server.wait_ready()
        row.extra["startup_s"] = round(time.monotonic() - t0, 2)
        why = system.smoke(server.base)
        if why:
            row.error = f"smoke job failed: {why}"
            return row
        fn = DRIVERS[driver]
        if args.warmup > 0:
            fn(system, server.base, args.warmup, args.connections, args.poll_ms, driver_prefix)
        cpu_before = sum(cpu_times(server.proc.pid))
        res, out = fn(system, server.base, args.duration, args.connections, args.poll_ms, driver_prefix)
        if res.get("jobs"):  # the server's own CPU per job: far steadier than jobs/s on a busy machine
            res["server_cpu_us_per_job"] = round((sum(cpu_times(server.proc.pid)) - cpu_before) * 1e6 / res["jobs"], 1)
        (logdir / f"driver-{system.name}-{driver}.txt").write_text(out)
        res["server_rss_mb"] = rss_mb(server.proc.pid)
        alive = server.proc.poll() is None
        if not alive:
            res["server_died"] = True
        row.result = res
    except Exception as e:  # a broken system is reported, the other still measured
        row.error = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return row


def median_row(rows: list[Row]) -> Row:
    """The run with the median jobs/s (a failed run, if any, is reported instead: it must be seen)."""
    failed = [r for r in rows if not r.result]
    if failed:
        return failed[0]
    ranked = sorted(rows, key=lambda r: r.result["jobs_per_s"] if r.result else 0.0)
    return ranked[len(ranked) // 2]


def fmt(v: float) -> str:
    return f"{v:,.1f}" if v >= 100 else f"{v:.2f}"


def notes(res: dict[str, Any]) -> str:
    keys = ("lost", "failed", "rejected", "bad_reads", "socket_errors", "http_errors", "done_at_submit")
    bad = [f"{k}={res[k]}" for k in keys if res.get(k)]
    if res.get("server_died"):
        bad.append("server died")
    if res.get("jobs"):
        bad.append(f"{res.get('polls', 0) / res['jobs']:.1f} reads/job")
    return ", ".join(bad)


def render(rows: list[Row], runs: dict[tuple[str, str], list[Row]], args: argparse.Namespace, pin_note: str) -> str:
    lines = [
        f"Core benchmark: no-op task, {args.connections} connections, {args.duration:g} s per run "
        f"(+{args.warmup:g} s warm-up, median of {args.repeat} interleaved runs), "
        f"peer polls every {args.poll_ms:g} ms, "
        f"peer access log {args.peer_access_log}.",
        f"CPU: {pin_note}.",
        "",
        "| system | driver | jobs/s | p50 ms | p99 ms | server CPU µs/job | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.result:
            res = r.result
            lines.append(
                f"| {r.system} | {r.driver} | {fmt(res['jobs_per_s'])} | {res['p50_ms']:.2f} "
                f"| {res['p99_ms']:.2f} | {res.get('server_cpu_us_per_job', '-')} | {notes(res)} |"
            )
        else:
            lines.append(f"| {r.system} | {r.driver} | - | - | - | - | {(r.error or '?').splitlines()[0][:160]} |")
    lines.append("")
    by = {(r.system, r.driver): r.result for r in rows if r.result}
    for driver in args.drivers:
        ft, pe = by.get(("fasttask", driver)), by.get(("peer", driver))
        if ft and pe and pe["jobs_per_s"] > 0:
            lines.append(f"ratio fasttask/peer jobs/s ({driver}): **{ft['jobs_per_s'] / pe['jobs_per_s']:.1f}x**")
        else:
            lines.append(f"ratio fasttask/peer jobs/s ({driver}): n/a")
    for name, what in (
        ("fasttask+prefer", "one request per job (Prefer: wait=30) / submit then wait"),
        ("fasttask+key", "an Idempotency-Key on every submit / none"),
    ):
        pairs = [
            (v.result, p.result)
            for v, p in zip(runs.get((name, "wrk"), []), runs.get(("fasttask", "wrk"), []), strict=False)
            if v.result and p.result and p.result["jobs_per_s"] > 0
        ]
        if not pairs:
            continue
        # each round's variant against the plain run of the same round: a busy spell cancels out
        speed = sorted(v["jobs_per_s"] / p["jobs_per_s"] for v, p in pairs)
        cpu = sorted(
            v["server_cpu_us_per_job"] / p["server_cpu_us_per_job"]
            for v, p in pairs
            if v.get("server_cpu_us_per_job") and p.get("server_cpu_us_per_job")
        )
        line = f"ratio {what} (wrk, median of {len(speed)} rounds): jobs/s **{speed[len(speed) // 2]:.2f}x**"
        line += f" (rounds {', '.join(f'{x:.2f}' for x in speed)})"
        if cpu:
            line += f"; server CPU per job {cpu[len(cpu) // 2]:.2f}x (rounds {', '.join(f'{x:.2f}' for x in cpu)})"
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent job chains (default 32)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured warm-up (default 2)")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="peer poll interval (default 5)")
    ap.add_argument("--systems", default="fasttask,fasttask+prefer,fasttask+key,peer")
    ap.add_argument("--drivers", default="wrk,python")
    ap.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds over all systems; each row is its median run (default 1)"
    )
    ap.add_argument(
        "--peer-access-log",
        choices=["on", "off"],
        default="on",
        help="peer's uvicorn access log: on as shipped (default), off to compare like with "
        "like (fasttask serve logs no requests unless --access-log)",
    )
    ap.add_argument("--out", type=Path, default=None, help="results dir (default bench/results/<time>)")
    args = ap.parse_args()
    args.systems = [s for s in args.systems.split(",") if s]
    args.drivers = [d for d in args.drivers.split(",") if d]
    for d in args.drivers:
        if d not in DRIVERS:
            ap.error(f"unknown driver {d}")
    if "wrk" in args.drivers and not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk (skipping the wrk driver)", file=sys.stderr)
        args.drivers = [d for d in args.drivers if d != "wrk"]

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = args.out or BENCH / "results" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    server_prefix, driver_prefix, pin_note = cpu_plan(args.no_pin)
    print(f"CPU: {pin_note}", flush=True)

    known: dict[str, Any] = {
        "fasttask": FastTask,
        "fasttask+prefer": lambda: FastTask("prefer"),
        "fasttask+key": lambda: FastTask("key"),
        "peer": Peer,
    }
    runs: dict[tuple[str, str], list[Row]] = {}
    for round_ in range(args.repeat):  # rounds interleave the systems: a busy spell hits all of them alike
        for name in args.systems:
            system = known[name]()
            if isinstance(system, Peer):
                system.access_log = args.peer_access_log == "on"
            why = system.available()
            for driver in args.drivers:
                if isinstance(system, FastTask) and system.mode != "plain" and driver != "wrk":
                    continue  # the variants are wrk scripts
                done = runs.setdefault((name, driver), [])
                if why:
                    if round_ == 0:
                        done.append(Row(name, driver, error=f"unavailable: {why}"))
                        print(f"[{name}/{driver}] unavailable: {why}", flush=True)
                    continue
                what = f"{args.duration:g}s with {args.connections} connections"
                print(f"[{name}/{driver}] running {what} ...", flush=True)
                row = measure(system, driver, args, server_prefix, driver_prefix, logdir)
                done.append(row)
                if row.result:
                    print(f"[{name}/{driver}] {json.dumps(row.result)}", flush=True)
                else:
                    print(f"[{name}/{driver}] ERROR {row.error}", flush=True)
    rows = [median_row(done) for done in runs.values()]

    table = render(rows, runs, args, pin_note)
    (logdir / "results.md").write_text(table + "\n")
    (logdir / "results.json").write_text(
        json.dumps(
            {
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "cpu": pin_note,
                "rows": [r.__dict__ for r in rows],
            },
            indent=2,
        )
    )
    print()
    print(table)
    print(f"\n(logs and raw results in {logdir})")
    return 0 if all(r.result for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

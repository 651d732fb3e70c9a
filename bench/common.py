"""Helpers shared by the bench commands (core.py, distributed.py). Standard library only.

Everything binds and connects to 127.0.0.1: HOST is the only address used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"  # never anything else: the machine's network watches other addresses

MAIN_PY = ROOT / ".venv" / "bin" / "python"

# urllib must not pick up *_proxy env vars: loopback traffic goes direct
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def parse_result(out: str) -> dict[str, Any]:
    """The `BENCH_RESULT {json}` line every driver prints."""
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            res: dict[str, Any] = json.loads(line[len("BENCH_RESULT ") :])
            return res
    raise RuntimeError("driver printed no BENCH_RESULT line:\n" + out[-2000:])


def fasttask_smoke(base: str, path: str = "/noop", wait_s: float = 30.0) -> str | None:
    """Run one fasttask job end to end; None if it finished with "ok", else what went wrong."""
    code, body = http("POST", base + path, b"", FORM)
    if code != 202:
        return f"POST {path} -> {code} {body[:200]!r}"
    job_id = json.loads(body)["id"]
    code, body = http("GET", f"{base}/jobs/{job_id}?wait={wait_s:g}", timeout=wait_s + 10)
    job = json.loads(body) if code == 200 else {}
    if job.get("status") != "finished" or job.get("result") != "ok":
        return f"GET /jobs/{job_id}?wait={wait_s:g} -> {code} {body[:200]!r}"
    return None


# ----------------------------------------------------------------------------- processes


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without FTAPI_* and proxy variables, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTAPI_") and not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Proc:
    """A subprocess in its own session (so stop() ends exactly it and its children), output to a log file."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        stdin: int | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env if env is not None else clean_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, first: signal.Signals = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((first, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.proc.stdin:
            self.proc.stdin.close()
        self._log.close()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc/<pid>/task/*/children)."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(parts[:8])  # user nice system idle iowait irq softirq steal
    idle = parts[3] + parts[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


# ----------------------------------------------------------------------------- a minimal Redis client


class RedisError(Exception):
    pass


class MiniRedis:
    """RESP2 over one socket, enough for INFO and a few counters; counts the commands it sends (`sent`)
    so a measurement can take its own look-ups out of Redis's command statistics."""

    def __init__(self, port: int, db: int = 0, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self._file = self.sock.makefile("rb")
        self.sent: Counter[str] = Counter()
        if db:
            self.call("SELECT", db)

    @property
    def addr(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def send(self, *args: Any) -> None:
        self.sent[str(args[0]).lower()] += 1
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))

    def call(self, *args: Any) -> Any:
        self.send(*args)
        return self.read()

    def read(self) -> Any:
        line = self._file.readline()
        if not line:
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._file.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:80]!r}")

    def readline(self) -> bytes:
        return self._file.readline()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def commandstats(r: MiniRedis) -> tuple[Counter[str], Counter[str]]:
    """(calls per command from INFO commandstats, commands `r` sent before this INFO)."""
    own = Counter(r.sent)
    raw = r.call("INFO", "commandstats").decode()
    calls: Counter[str] = Counter()
    for line in raw.splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line[len("cmdstat_") :].partition(":")
            calls[name] = int(stats.split(",")[0].split("=")[1])
    return calls, own


def commands_between(
    before: tuple[Counter[str], Counter[str]], after: tuple[Counter[str], Counter[str]]
) -> Counter[str]:
    """Commands Redis ran between two `commandstats` snapshots, less INFO and what the measuring client sent."""
    delta = after[0] - before[0]
    delta -= after[1] - before[1]
    delta.pop("info", None)
    return +delta


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)

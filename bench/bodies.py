"""What one oversized JSON body costs the API process: peak memory and /health latency meanwhile.

    python bench/bodies.py                       # this checkout
    python bench/bodies.py --tree ../other/tree  # another checkout of fasttask (e.g. an older one)
    python bench/bodies.py --mb 200 --mode chunked
    python bench/bodies.py --endpoint files      # a base64 file in JSON, to an endpoint that takes files

Starts `python -m fasttask serve bench.apps.fasttask_noop:app` (embedded queue) with the chosen tree
first on PYTHONPATH, sends one JSON body of `--mb` MB (`{"text": "aaaa…"}`) to `/noop`, an endpoint
without file parameters, and meanwhile asks `/health` every 20 ms. With `--endpoint files` it serves
`bench.apps.fasttask_files:app` and sends `{"file": "aaaa…"}` (valid base64) to `/echo_file`.
The body goes with a Content-Length (`--mode length`) or chunked, with no length announced
(`--mode chunked`), so the server can only tell its size by reading it. Prints the answer's status and
size, the process's peak RSS (VmHWM) before and after, and the slowest /health answer. Standard
library only; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HOST, MAIN_PY, ROOT, Proc, clean_env, free_port, http

CHUNK = 1024 * 1024


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM")


def send_body(port: int, mb: int, chunked: bool, path: str, field: str) -> tuple[int | None, int, float]:
    """Send the body; (status or None, answer bytes, seconds). Stops sending once the server answers."""
    size = mb * CHUNK
    prefix, suffix = b'{"%b": "' % field.encode(), b'"}'
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n"
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=120) as sock:
        sock.sendall((head + "\r\n").encode())
        filler = b"a" * CHUNK
        sent = 0
        try:
            for piece in [prefix, *([filler] * (mb - 1)), filler[: CHUNK - len(prefix) - len(suffix)], suffix]:
                data = b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece
                sock.sendall(data)
                sent += len(piece)
                if _answered(sock):  # a server that refuses early answers before the body is all sent
                    break
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or len(answer) < _expected(answer):
                part = sock.recv(CHUNK)
                if not part:
                    break
                answer += part
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, len(answer), time.monotonic() - started


def _answered(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def _expected(answer: bytes) -> int:
    head, _, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":", 1)[1])
    return len(answer) + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the fasttask checkout to serve")
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--mode", choices=["length", "chunked"], default="length")
    parser.add_argument("--endpoint", choices=["plain", "files"], default="plain")
    args = parser.parse_args()
    port = free_port()
    env = clean_env(PYTHONPATH=f"{args.tree.resolve()}:{ROOT}", FTAPI_QUEUE="local")
    python = MAIN_PY if MAIN_PY.exists() else Path(sys.executable)
    app, path, field = {
        "plain": ("bench.apps.fasttask_noop:app", "/noop", "text"),
        "files": ("bench.apps.fasttask_files:app", "/echo_file", "file"),
    }[args.endpoint]
    argv = [str(python), "-m", "fasttask", "serve", app, "--host", HOST, "--port", str(port)]
    log = Path("/tmp") / f"fasttask-bodies-{port}.log"
    server = Proc(argv, log, env=env)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", base + "/health", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or not server.alive():
                print("the server did not start:\n" + server.log_tail(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        before = peak_rss_mb(server.pid)
        latencies: list[float] = []
        done = threading.Event()

        def poll_health() -> None:
            while not done.is_set():
                started = time.monotonic()
                with contextlib.suppress(OSError):
                    http("GET", base + "/health", timeout=30)
                latencies.append(time.monotonic() - started)
                time.sleep(0.02)

        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        status, answer_bytes, seconds = send_body(port, args.mb, args.mode == "chunked", path, field)
        time.sleep(0.5)
        done.set()
        poller.join(35)
        after = peak_rss_mb(server.pid)
        result = {
            "tree": str(args.tree),
            "mode": args.mode,
            "endpoint": path,
            "body_mb": args.mb,
            "status": status,
            "answer_bytes": answer_bytes,
            "seconds": round(seconds, 2),
            "peak_rss_mb_before": before,
            "peak_rss_mb_after": after,
            "peak_rss_growth_mb": round(after - before, 1),
            "health_max_ms": round(max(latencies) * 1000, 1),
            "health_p50_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
            "health_requests": len(latencies),
        }
        print(json.dumps(result))
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

"""A large file through the distributed mode with object storage: upload into the bucket through an API
process, out again through the download route; MB/s each way, the API process's peak RSS growth and
Redis's memory growth.

    .venv/bin/python bench/files.py [--size-mb 1024]

Starts its own redis-server, moto's S3 server (in-memory), one API process and one worker, all on
127.0.0.1. Targets: API peak RSS growth <= 64 MiB, Redis used_memory growth <= 1 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HOST, ROOT, free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.1)


def redis_memory(port: int) -> dict[str, int]:
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {"used": int(fields["used_memory"]), "peak": int(fields["used_memory_peak"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fasttask-files-bench-"))
    processes: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], env: dict[str, str] | None = None, log: str = "log") -> subprocess.Popen[bytes]:
        with (work / f"{log}.log").open("wb") as out:
            process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        redis_port, s3_port, api_port = free_port(), free_port(), free_port()
        start(
            ["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "", "--appendonly", "no"], log="redis"
        )
        s3 = start([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(s3_port)], log="s3")
        s3_url = f"http://{HOST}:{s3_port}"
        wait_http(s3_url, s3)
        env = {
            **os.environ,
            **CREDENTIALS,
            "FTAPI_REDIS_URL": f"redis://{HOST}:{redis_port}/0",
            "FTAPI_S3_BUCKET": "bench",
            "FTAPI_S3_ENDPOINT_URL": s3_url,
            "FTAPI_MAX_FILE_MB": str(args.size_mb * 2),
        }
        boto3.client(
            "s3", endpoint_url=s3_url, **{k.lower(): v for k, v in CREDENTIALS.items() if "KEY" in k}
        ).create_bucket(Bucket="bench")
        app = "bench.apps.fasttask_files:app"
        fasttask = [sys.executable, "-m", "fasttask"]
        api = start([*fasttask, "serve", app, "--port", str(api_port), "--log-level", "warning"], env, "api")
        start([*fasttask, "worker", app, "--log-level", "warning"], env, "worker")
        base = f"http://{HOST}:{api_port}"
        wait_http(f"{base}/health", api)

        payload = work / "payload.bin"
        with payload.open("wb") as out:
            for _ in range(args.size_mb):
                out.write(os.urandom(1024 * 1024))
        size = payload.stat().st_size

        with httpx.Client(base_url=base, timeout=600) as client:
            warm = client.post("/echo_file", files={"file": ("warm.bin", b"w" * 600_000)})  # code paths loaded
            client.get(f"/jobs/{warm.json()['id']}", params={"wait": 60})
            rss_before = status_kb(api.pid, "VmRSS")
            redis_before = redis_memory(redis_port)

            started = time.monotonic()
            with payload.open("rb") as stream:
                submitted = client.post(
                    "/echo_file", files={"file": ("payload.bin", stream, "application/octet-stream")}
                )
            upload_s = time.monotonic() - started
            if submitted.status_code != 202:
                print((work / "api.log").read_text()[-3000:], file=sys.stderr)
                raise RuntimeError(f"the upload answered {submitted.status_code}: {submitted.text}")
            job_id = submitted.json()["id"]
            job = client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
            while job["status"] not in ("finished", "failed", "cancelled", "timeout"):
                job = client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
            assert job["status"] == "finished", job
            received = 0
            started = time.monotonic()
            with client.stream("GET", job["result"]["url"]) as download:
                for chunk in download.iter_bytes(1024 * 1024):
                    received += len(chunk)
            download_s = time.monotonic() - started
            assert received == size, (received, size)
            rss_peak = status_kb(api.pid, "VmHWM")
            redis_after = redis_memory(redis_port)

        mb = size / (1024 * 1024)
        growth_mib = (rss_peak - rss_before) / 1024
        redis_growth = max(redis_after["peak"], redis_after["used"]) - redis_before["used"]
        print("| file | upload MB/s | download MB/s | API peak RSS growth | Redis memory growth |")
        print("|---|---:|---:|---:|---:|")
        print(
            f"| {mb:,.0f} MiB | {mb / upload_s:,.1f} | {mb / download_s:,.1f} | {growth_mib:,.1f} MiB "
            f"(target <= 64) | {redis_growth / 1024:,.1f} KiB (target <= 1024) |"
        )
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""The Redis queue with real processes: `fasttask serve` and `fasttask worker` subprocesses sharing a
real redis-server, and each failure done for real (kill -9, SIGTERM, Redis stopped and restarted)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support import ROOT
from tests.support.cluster import APP, Cluster, final, running, submit, wait_until
from tests.support.servers import free_port

# these tests start processes and wait out leases (a killed worker's job takes up to ~30 s to come back)
pytestmark = pytest.mark.timeout(180)


def test_queue_limit_holds_across_api_processes(cluster: Cluster) -> None:
    urls = [cluster.api(), cluster.api()]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [client.post(f"{urls[i % 2]}/limited", json={}) for i in range(30)]
            return [response.status_code for response in await asyncio.gather(*calls)]

    codes = asyncio.run(burst())
    assert codes.count(202) == 3
    assert codes.count(429) == 27
    queues = httpx.get(f"{urls[1]}/queues").json()["queues"]
    assert next(q for q in queues if q["endpoint"] == "/limited")["queued"] == 3


def two_free_ports_in_a_row() -> int:
    """A port that is free, and the next one too (the script gives its API processes consecutive ports)."""
    while True:
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base


def other_free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def test_cluster_script_runs_500_jobs_exactly_once(tmp_path: Path) -> None:
    base = two_free_ports_in_a_row()
    redis_port, s3_port = other_free_ports(2, taken={base, base + 1})
    script = subprocess.Popen(
        [
            sys.executable, str(ROOT / "scripts" / "cluster"), "--app", APP, "--apis", "2", "--workers", "3",
            "--port", str(base), "--redis-port", str(redis_port), "--dir", str(tmp_path / "cluster"),
            "--s3-port", str(s3_port),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert script.stdout is not None
        urls = []
        while len(urls) < 2:
            line = script.stdout.readline()
            assert line, script.stderr.read() if script.stderr else "the cluster script stopped"
            if line.startswith("api: "):
                urls.append(line.split(" ", 1)[1].strip())
        connection = redis.Redis(port=redis_port)
        wait_until(lambda: connection.scard("rq:workers") == 3, 30, "three workers")

        async def run_all() -> list[dict[str, Any]]:
            limits = asyncio.Semaphore(32)
            async with httpx.AsyncClient(timeout=60) as client:

                async def one(n: int) -> dict[str, Any]:
                    async with limits:
                        url = urls[n % 2]
                        job = (await client.post(f"{url}/echo", json={"n": n})).json()
                        # read it back through the other API process
                        other = urls[(n + 1) % 2]
                        done = await client.get(f"{other}/jobs/{job['id']}", params={"wait": 50})
                        result: dict[str, Any] = done.json()
                        return result

                return await asyncio.gather(*(one(n) for n in range(500)))

        jobs = asyncio.run(run_all())
        assert [job["status"] for job in jobs] == ["finished"] * 500
        assert [job["result"] for job in jobs] == [n * 2 for n in range(500)]
        runs = {key.decode(): int(count) for key, count in connection.hgetall("test:runs").items()}
        assert runs == {f"echo:{n}": 1 for n in range(500)}
        assert len(set(connection.hvals("test:ran_on"))) > 1, "the jobs should spread over the workers"
        connection.close()
        # the cluster's object storage carries a file too large to travel inside Redis
        big = os.urandom(400_000)
        stored = httpx.post(f"{urls[0]}/echo_file", files={"file": ("big.bin", big)}, timeout=30).json()
        result = httpx.get(f"{urls[1]}/jobs/{stored['id']}", params={"wait": 30}, timeout=40).json()["result"]
        assert httpx.get(urls[0] + result["url"], timeout=30).content == big
    finally:
        script.send_signal(signal.SIGTERM)
        _, errors = script.communicate(timeout=90)
    assert script.returncode == 0, errors
    # every process it started is gone: nothing answers on its ports any more
    for port in (base, base + 1, redis_port, s3_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "cluster")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left behind: {leftovers.stdout}"


def test_kill_9_of_a_worker_mid_job_runs_the_job_again_elsewhere(cluster: Cluster) -> None:
    url = cluster.api()
    first, second = cluster.worker(), cluster.worker()
    job = submit(url, "/sleep", key="k9", seconds=2)
    wait_until(lambda: running(url, job["id"]), 20, "the job to start")
    with cluster.client() as connection:
        pid = int(wait_until(lambda: connection.hget("test:ran_on", "sleep:k9"), 10, "the run record"))
    victim = first if first.pid == pid else second
    survivor = second if victim is first else first
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    done = final(url, job["id"], timeout_s=60)
    assert done["status"] == "finished", done
    assert done["result"] == "slept k9"
    with cluster.client() as connection:
        assert int(connection.hget("test:runs", "sleep:k9") or 0) == 2
        assert int(connection.hget("test:ran_on", "sleep:k9") or 0) == survivor.pid


def test_a_job_whose_workers_all_die_ends_failed_not_running(cluster: Cluster) -> None:
    url = cluster.api()
    job_id = submit(url, "/sleep", key="lost", seconds=30)["id"]
    with cluster.client() as connection:
        for attempt in (1, 2):  # re-queued once by default, then given up
            worker = cluster.worker()
            ran_here = str(worker.pid).encode()
            wait_until(lambda pid=ran_here: connection.hget("test:ran_on", "sleep:lost") == pid, 60, f"run {attempt}")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
    done = final(url, job_id, timeout_s=60)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "AbandonedJobError"
    assert "worker" in done["error"]["message"]


def test_sigterm_lets_the_current_job_finish_then_exits_0(cluster: Cluster) -> None:
    url = cluster.api()
    worker = cluster.worker()
    job = submit(url, "/sleep", key="term", seconds=1.5)
    wait_until(lambda: running(url, job["id"]), 20, "the job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert final(url, job["id"])["result"] == "slept term"
    assert cluster.worker_count() == 0


def test_a_job_cut_off_by_the_grace_period_is_requeued(cluster: Cluster) -> None:
    url = cluster.api()
    worker = cluster.worker("--grace", "0.5")
    job = submit(url, "/sleep", key="cut", seconds=4)
    wait_until(lambda: running(url, job["id"]), 20, "the job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert httpx.get(f"{url}/jobs/{job['id']}").json()["status"] == "queued"
    cluster.worker()
    done = final(url, job["id"])
    assert done["status"] == "finished"
    with cluster.client() as connection:
        assert int(connection.hget("test:runs", "sleep:cut") or 0) == 2


def test_redis_outage_answers_503_and_everything_recovers_with_aof(cluster: Cluster) -> None:
    url = cluster.api()
    echo_worker = cluster.worker("--endpoints", "/echo")
    before = submit(url, "/echo", n=21)
    assert final(url, before["id"])["result"] == 42
    waiting = submit(url, "/limited")  # nobody serves /limited yet: it stays queued

    cluster.redis.stop()
    outage = httpx.post(f"{url}/echo", json={"n": 1})
    assert outage.status_code == 503
    assert "Redis" in outage.json()["detail"]
    assert httpx.get(f"{url}/jobs/{before['id']}").status_code == 503
    assert httpx.get(f"{url}/ready").status_code == 503
    assert httpx.get(f"{url}/health").status_code == 200
    time.sleep(1.5)  # the worker meets the outage too
    cluster.redis.start()

    wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200, 30, "the API to see Redis again")
    assert httpx.get(f"{url}/jobs/{before['id']}").json()["result"] == 42  # finished results survive
    assert httpx.get(f"{url}/jobs/{waiting['id']}").json()["status"] == "queued"  # queued jobs survive
    after = submit(url, "/echo", n=5)
    assert final(url, after["id"])["result"] == 10  # the same worker process, reconnected
    assert echo_worker.poll() is None
    cluster.worker("--endpoints", "/limited")
    assert final(url, waiting["id"])["result"] == "ran"


def test_a_task_that_cannot_be_interrupted_gets_its_process_replaced(cluster: Cluster) -> None:
    url = cluster.api()
    worker = cluster.worker("--endpoints", "/stubborn,/echo")
    with cluster.client() as connection:
        name_before = {member.decode() for member in connection.smembers("rq:workers")}
    job = submit(url, "/stubborn", key="s")
    done = final(url, job["id"], timeout_s=30)
    assert done["status"] == "timeout"
    # until the process is replaced, its slot shows as stopping, not as a running job
    stubborn = next(q for q in httpx.get(f"{url}/queues").json()["queues"] if q["endpoint"] == "/stubborn")
    assert (stubborn["running"], stubborn["stopping"]) == (0, 1)
    # the worker replaces itself (same pid, new RQ worker), then goes on with the next job
    later = submit(url, "/echo", n=4)
    assert final(url, later["id"], timeout_s=60)["result"] == 8
    assert worker.poll() is None
    stubborn = next(q for q in httpx.get(f"{url}/queues").json()["queues"] if q["endpoint"] == "/stubborn")
    assert (stubborn["running"], stubborn["stopping"]) == (0, 0)
    with cluster.client() as connection:
        names_after = {member.decode() for member in connection.smembers("rq:workers")}
    assert names_after and names_after.isdisjoint(name_before)


def test_a_worker_process_with_concurrency_runs_jobs_side_by_side(cluster: Cluster) -> None:
    url = cluster.api()
    worker = cluster.spawn("worker", APP, "--concurrency", "3", name="lanes")
    wait_until(lambda: cluster.worker_count() == 3, 30, "three lanes to register as RQ workers")
    jobs = [submit(url, "/sleep", key=f"lane{i}", seconds=2) for i in range(3)]
    wait_until(lambda: all(running(url, job["id"]) for job in jobs), 20, "all three jobs running at once")
    with cluster.client() as connection:
        assert {connection.hget("test:ran_on", f"sleep:lane{i}") for i in range(3)} == {str(worker.pid).encode()}
    assert [final(url, job["id"])["result"] for job in jobs] == [f"slept lane{i}" for i in range(3)]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert cluster.worker_count() == 0


def test_a_full_redis_answers_503_not_500(cluster: Cluster) -> None:
    url = cluster.api()
    with cluster.client() as connection:
        connection.config_set("maxmemory-policy", "noeviction")
        connection.config_set("maxmemory", "1")  # below what is in use: every write is refused
        try:
            refused = httpx.post(f"{url}/echo", json={"n": 1})
        finally:
            connection.config_set("maxmemory", "0")
    assert refused.status_code == 503
    assert "cannot take writes" in refused.json()["detail"]
    assert submit(url, "/echo", n=2)["status"] == "queued"


def cluster_script(tmp_path: Path, *options: str, python: list[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(python or [sys.executable]),
            str(ROOT / "scripts" / "cluster"),
            "--dir",
            str(tmp_path / "cluster"),
            *options,
        ],
        cwd=ROOT,
        # where the README's install is missing (a test run from another virtualenv), the active one serves
        env={**os.environ, "PYTHONPATH": str(ROOT), "VIRTUAL_ENV": sys.prefix},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cluster_script_runs_under_a_python3_without_fasttask_and_shows_why_a_process_died(tmp_path: Path) -> None:
    # `scripts/cluster` runs under whatever python3 is first on PATH, which the README's install leaves without
    # fasttask: -S hides every installed package from this one
    bare = [os.path.join(sys.base_prefix, "bin", "python3"), "-S"]
    port, redis_port = other_free_ports(2, taken=set())
    script = cluster_script(
        tmp_path, "--app", APP, "--apis", "1", "--workers", "1", "--port", str(port), "--redis-port", str(redis_port),
        python=bare,
    )  # fmt: skip
    try:
        assert script.stdout is not None
        while not (line := script.stdout.readline()).startswith("api: "):
            assert line, script.stderr.read() if script.stderr else "the cluster script stopped"
        url = line.split(" ", 1)[1].strip()
        assert final(url, submit(url, "/echo", n=4)["id"])["result"] == 8
        with redis.Redis(port=redis_port) as connection:
            (worker_key,) = connection.smembers("rq:workers")
            worker_pid = int(connection.hget(worker_key, "pid") or 0)
        os.kill(worker_pid, signal.SIGTERM)  # it says it is stopping in its log, and exits 0
        log = tmp_path / "cluster" / "worker-0.log"
        wait_until(lambda: "stopping" in log.read_text(), 30, "the worker to stop")
        time.sleep(1)  # the script checks its processes every 0.2 s
    finally:
        script.send_signal(signal.SIGTERM)
        _, errors = script.communicate(timeout=90)
    assert script.returncode == 0, errors
    assert "cluster: worker-0 exited with status 0" in errors
    assert log.read_text().strip().splitlines()[-1] in errors  # the end of its log, not only its status


def test_cluster_script_prints_the_log_of_a_process_that_dies_at_start(tmp_path: Path) -> None:
    api_port, redis_port = other_free_ports(2, taken=set())
    script = cluster_script(
        tmp_path, "--app", "tests.support.cluster_app:nosuch", "--apis", "1", "--workers", "0",
        *("--port", str(api_port), "--redis-port", str(redis_port)),
    )  # fmt: skip
    _, errors = script.communicate(timeout=90)
    assert script.returncode == 1
    assert "cluster: API process 0 exited with status 2" in errors
    last = (tmp_path / "cluster" / "api-0.log").read_text().strip().splitlines()[-1]
    assert "nosuch" in last
    assert last in errors

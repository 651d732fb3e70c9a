"""Behaviour that needs a real server: long polls, server-sent events, concurrency, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fasttask import FastTaskAPI
from tests.support import ROOT
from tests.support.apps import Probe, make_app
from tests.support.servers import LiveServer, free_port

StartServer = Callable[[FastTaskAPI], LiveServer]
WithWorkers = Callable[[FastTaskAPI], FastTaskAPI]


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    kind = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            assert kind is not None
            yield kind, json.loads(line[len("data: ") :])
            kind = None


def test_wait_answers_the_moment_the_job_ends(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    probe = Probe()
    server = live_server(make_app(probe, **queue_settings))
    with_workers(server.app)
    with server.client() as client:
        job_id = client.post("/block", json={"tag": "w"}).json()["id"]
        assert probe.started.wait(5)
        answer: dict[str, Any] = {}

        def long_poll() -> None:
            answer["job"] = client.get(f"/jobs/{job_id}", params={"wait": 30}).json()
            answer["at"] = time.monotonic()

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(0.3)
        assert "job" not in answer, "?wait answered before the job ended"
        released_at = time.monotonic()
        probe.release.set()
        poller.join(10)
        assert answer["job"]["status"] == "finished"
        assert answer["job"]["result"] == "released w"
        # a 30 s wait came back right after the release, not at its deadline
        assert answer["at"] - released_at < 5


def test_wait_returns_the_current_state_at_its_deadline(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    probe = Probe()
    server = live_server(make_app(probe, **queue_settings))
    with_workers(server.app)
    with server.client() as client:
        job_id = client.post("/block", json={}).json()["id"]
        job = client.get(f"/jobs/{job_id}", params={"wait": 0.2}).json()
        assert job["status"] == "running"
        probe.release.set()


def test_stream_sends_progress_output_and_end_events(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    probe = Probe()
    server = live_server(make_app(probe, **queue_settings))
    with_workers(server.app)
    with server.client() as client:
        job_id = client.post("/stream_slowly", json={"n": 3}).json()["id"]
        with client.stream("GET", f"/jobs/{job_id}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = []
            for kind, data in sse_events(response):
                events.append((kind, data))
                if len(events) == 1:
                    assert kind == "progress" and data["status"] in ("queued", "running")
                    probe.release.set()  # the task yields only once someone watches
        kinds = [kind for kind, _ in events]
        assert [data for kind, data in events if kind == "output"] == ["part 0", "part 1", "part 2"]
        assert kinds[-1] == "end"
        end = events[-1][1]
        assert end["status"] == "finished"
        assert end["result"] == ["part 0", "part 1", "part 2"]
        progress = [data for kind, data in events if kind == "progress"]
        assert all(p["id"] == job_id for p in progress)
        assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
        # a late subscriber gets the outputs so far, then the end event
        with client.stream("GET", f"/jobs/{job_id}/stream") as again:
            assert [kind for kind, _ in sse_events(again)] == ["output", "output", "output", "end"]


def test_stream_of_a_failing_job_ends_with_the_error(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    server = live_server(make_app(**queue_settings))
    with_workers(server.app)
    with server.client() as client:
        job_id = client.post("/fail", json={"message": "nope"}).json()["id"]
        with client.stream("GET", f"/jobs/{job_id}/stream") as response:
            events = list(sse_events(response))
        assert events[-1][0] == "end"
        assert events[-1][1]["error"] == {"type": "ValueError", "message": "nope"}


def test_a_full_queue_accepts_exactly_queue_size_and_refuses_the_rest_with_429(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    probe = Probe()
    server = live_server(make_app(probe, concurrency=1, **queue_settings))
    with_workers(server.app)
    with server.client() as client:
        holder = client.post("/deaf").json()["id"]  # holds the only runner slot
        assert probe.started.wait(5)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/block", json={"tag": str(i)}) for i in range(100)))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert sorted(set(codes)) == [202, 429], [r.text for r in responses if r.status_code not in (202, 429)]
    assert codes.count(202) == 10
    assert codes.count(429) == 90
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "full" in refused.json()["detail"]
    with server.client() as client:
        queue = next(q for q in client.get("/queues").json()["queues"] if q["endpoint"] == "/block")
        assert (queue["queued"], queue["running"], queue["queue_size"]) == (10, 0, 10)
        probe.release.set()
        assert client.get(f"/jobs/{holder}", params={"wait": 10}).json()["result"] == "late result"
        accepted = [r.json()["id"] for r in responses if r.status_code == 202]
        results = [client.get(f"/jobs/{i}", params={"wait": 10}).json()["status"] for i in accepted]
        assert results == ["finished"] * 10


def test_jobs_run_a_bounded_number_at_once_and_sync_tasks_never_block_the_server(live_server: StartServer) -> None:
    probe = Probe()
    server = live_server(make_app(probe, concurrency=2))
    with server.client() as client:
        ids = [client.post("/block", json={"tag": str(i)}).json()["id"] for i in range(5)]
        assert probe.started.wait(5)
        # two threads are busy in blocking tasks; the event loop still answers
        for _ in range(20):
            assert client.get("/health").status_code == 200
        queue = next(q for q in client.get("/queues").json()["queues"] if q["endpoint"] == "/block")
        assert (queue["running"], queue["queued"]) == (2, 3)
        statuses = [client.get(f"/jobs/{i}").json()["status"] for i in ids]
        assert statuses == ["running", "running", "queued", "queued", "queued"]
        job_threads = [t.name for t in threading.enumerate() if t.name.startswith("fasttask-job")]
        assert len(job_threads) == 2
        probe.release.set()
        assert all(client.get(f"/jobs/{i}", params={"wait": 10}).json()["status"] == "finished" for i in ids)
        assert len([t for t in threading.enumerate() if t.name.startswith("fasttask-job")]) <= 2


def test_cli_serve_runs_an_app_module(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples"), "FTAPI_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fasttask", "serve", "fries:app", "--host", "127.0.0.1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        job = httpx.post(f"{url}/make_fries", data={"fries_name": "curly"}).json()
        done = httpx.get(f"{url}/jobs/{job['id']}", params={"wait": 20}, timeout=30).json()
        assert done["result"] == "1 x curly, golden"
        assert httpx.get(f"{url}/ping").json() == {"pong": "ok"}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status tells how it ended
    assert process.returncode in (0, -signal.SIGTERM), stderr.decode()
    assert "Application shutdown complete" in stderr.decode()


def test_cli_reports_a_bad_target() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fasttask", "serve", "no_colon"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "MODULE:APP" in result.stderr


def test_a_reconnecting_stream_resumes_after_the_outputs_it_had(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    server = live_server(make_app(**queue_settings))
    with_workers(server.app)
    with server.client() as client:
        job_id = client.post("/count", json={"n": 3}).json()["id"]
        assert client.get(f"/jobs/{job_id}", params={"wait": 20}).json()["status"] == "finished"
        with client.stream("GET", f"/jobs/{job_id}/stream") as response:
            ids = [line[len("id: ") :] for line in response.iter_lines() if line.startswith("id: ")]
        assert ids == ["1", "2", "3", "3"]  # three outputs, then the end event
        resumed_from = {"Last-Event-ID": "2"}
        with client.stream("GET", f"/jobs/{job_id}/stream", headers=resumed_from) as response:
            events = list(sse_events(response))
        assert events[0] == ("output", 2)
        assert [kind for kind, _ in events] == ["output", "end"]
        with client.stream("GET", f"/jobs/{job_id}/stream", headers={"Last-Event-ID": "9" * 5000}) as response:
            assert response.status_code == 200  # a nonsense id starts from the beginning
            assert [kind for kind, _ in sse_events(response)] == ["output", "output", "output", "end"]


@pytest.mark.parametrize("path", ["/stream_slowly", "/async_stream_slowly", "/async_count"])
def test_every_output_reaches_the_stream_even_those_yielded_as_the_job_ends(
    path: str, live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> None:
    probe = Probe()
    server = live_server(make_app(probe, **queue_settings))
    with_workers(server.app)
    with server.client() as client:
        job_id = client.post(path, json={"n": 3}).json()["id"]
        live = []
        with client.stream("GET", f"/jobs/{job_id}/stream") as response:
            for event in sse_events(response):
                live.append(event)
                probe.release.set()  # the stream/slowly tasks yield only once someone watches
        result = client.get(f"/jobs/{job_id}").json()["result"]
        assert len(result) == 3
        assert [data for kind, data in live if kind == "output"] == result
        assert live[-1][0] == "end"
        with client.stream("GET", f"/jobs/{job_id}/stream") as response:  # replayed from the start
            assert [data for kind, data in sse_events(response) if kind == "output"] == result
        with client.stream("GET", f"/jobs/{job_id}/stream", headers={"Last-Event-ID": "2"}) as response:
            assert [kind for kind, _ in sse_events(response)] == ["output", "end"]
        with client.stream("GET", f"/jobs/{job_id}/stream", headers={"Last-Event-ID": "2"}) as response:
            assert next(sse_events(response)) == ("output", result[2])

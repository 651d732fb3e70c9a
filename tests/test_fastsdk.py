"""fastSDK, unchanged, against a fasttask service: 0.4 (APIPod's job protocol: `job_id`, `links`, `/status/{id}`,
`/cancel/{id}`, `/stream/{id}`) and 0.2 (FastTaskAPI's: `refresh_job_url`, `/status?job_id=`). Each release
runs in a virtualenv of its own (`tests/support/client_venvs.py`), as a program of its users would, on a real server."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fasttask import FastTaskAPI
from tests.support.apps import Probe, make_app
from tests.support.client_venvs import client_python, run_driver
from tests.support.servers import LiveServer

pytestmark = pytest.mark.timeout(600)  # the first test of a release makes its virtualenv

RELEASES = ["fastsdk==0.4.26", "fastsdk==0.2.16"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sdk_python(release: str) -> Path:
    return client_python(release)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def server(
    probe: Probe,
    queue_settings: dict[str, Any],
    with_workers: Callable[[FastTaskAPI], FastTaskAPI],
    live_server: Callable[[FastTaskAPI], LiveServer],
) -> LiveServer:
    return live_server(with_workers(make_app(probe, **queue_settings)))


def job_json(server: LiveServer, job_id: str, wait: float = 0) -> dict[str, Any]:
    with server.client() as http:
        answer = http.get(f"/jobs/{job_id}", params={"wait": wait})
        answer.raise_for_status()
        job: dict[str, Any] = answer.json()
        return job


def test_a_result(server: LiveServer, sdk_python: Path, tmp_path: Path) -> None:
    params = {"fries_name": "cheesy", "amount": 2}
    report = run_driver(sdk_python, server.url, "result", tmp_path, endpoint="make_fries", params=params)
    assert report == {"result": "2 x cheesy"}


def test_a_failure(server: LiveServer, sdk_python: Path, tmp_path: Path) -> None:
    report = run_driver(sdk_python, server.url, "failure", tmp_path, endpoint="fail", params={"message": "boom"})
    assert "ValueError: boom" in report["error"]


def test_a_file_in_and_a_file_result(server: LiveServer, sdk_python: Path, tmp_path: Path) -> None:
    (tmp_path / "in.png").write_bytes(PNG)
    args = {"endpoint": "thumbnail", "param": "image", "path": str(tmp_path / "in.png")}
    report = run_driver(sdk_python, server.url, "file", tmp_path, **args)
    assert base64.b64decode(report["result"]["file_bytes_b64"]) == PNG[::-1]


def test_following_a_job_submitted_elsewhere(server: LiveServer, sdk_python: Path, tmp_path: Path) -> None:
    with server.client() as http:
        job_id = http.post("/make_fries", json={"fries_name": "salted", "amount": 3}).json()["id"]
    report = run_driver(sdk_python, server.url, "follow", tmp_path, job_id=job_id)
    assert report == {"result": "3 x salted"}


def test_following_a_failed_job(server: LiveServer, sdk_python: Path, tmp_path: Path) -> None:
    with server.client() as http:
        job_id = http.post("/fail", json={"message": "no salt"}).json()["id"]
    assert job_json(server, job_id, wait=30)["status"] == "failed"
    report = run_driver(sdk_python, server.url, "follow", tmp_path, job_id=job_id)
    assert "ValueError: no salt" in report["error"]


@pytest.mark.parametrize("release", ["fastsdk==0.4.26"], indirect=True)
def test_fastsdk_04_cancels_the_job_on_the_service(
    server: LiveServer, probe: Probe, sdk_python: Path, tmp_path: Path
) -> None:
    report = run_driver(sdk_python, server.url, "cancel", tmp_path, endpoint="block", params={"tag": "x"})
    assert report["answer_status"] == "cancelled", report  # what cancel() returned: /cancel/{id}'s answer
    assert job_json(server, report["job_id"], wait=30)["status"] == "cancelled"


@pytest.mark.parametrize("release", ["fastsdk==0.2.16"], indirect=True)
def test_fastsdk_02_cancels_its_own_wait_and_sends_nothing(
    server: LiveServer, probe: Probe, sdk_python: Path, tmp_path: Path
) -> None:
    # fastSDK 0.2's cancel() ends the client's own handle (it has no cancel request; whether the handle then
    # reads as cancelled races with the client's own job thread, so only the service's side is checked):
    # the call works against the service, and the job runs on
    report = run_driver(sdk_python, server.url, "cancel", tmp_path, endpoint="block", params={"tag": "x"})
    assert job_json(server, report["job_id"])["status"] in ("queued", "running")
    probe.release.set()
    assert job_json(server, report["job_id"], wait=30)["status"] == "finished"


@pytest.mark.parametrize("release", ["fastsdk==0.4.26"], indirect=True)
def test_fastsdk_04_streams_a_generators_outputs(server: LiveServer, sdk_python: Path, tmp_path: Path) -> None:
    with server.client() as http:
        job_id = http.post("/async_count", json={"n": 3}).json()["id"]
    report = run_driver(sdk_python, server.url, "stream", tmp_path, job_id=job_id)
    assert report == {"outputs": [{"i": 0}, {"i": 1}, {"i": 2}]}


@pytest.mark.parametrize("release", ["fastsdk==0.4.26"], indirect=True)
def test_fastsdk_04_sends_the_api_key_on_every_route(
    queue_settings: dict[str, Any],
    with_workers: Callable[[FastTaskAPI], FastTaskAPI],
    live_server: Callable[[FastTaskAPI], LiveServer],
    sdk_python: Path,
    tmp_path: Path,
) -> None:
    key = "fastsdk-key-0123456789"
    server = live_server(with_workers(make_app(Probe(), api_key=key, **queue_settings)))
    args = {"endpoint": "make_fries", "params": {"fries_name": "keyed"}, "api_key": key}
    assert run_driver(sdk_python, server.url, "result", tmp_path, **args) == {"result": "1 x keyed"}
    args = {"endpoint": "block", "params": {}, "api_key": key}
    assert run_driver(sdk_python, server.url, "cancel", tmp_path, **args)["answer_status"] == "cancelled"

"""`fasttask call`, run as a subprocess against a real server (uvicorn on loopback in the test process)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fasttask import FastTaskAPI, JobProgress, MediaFile
from tests.support.apps import Probe, make_app
from tests.support.client_app import PNG, Recorder, client_app
from tests.support.receiver import Receiver
from tests.support.servers import LiveServer, free_port

StartServer = Callable[[FastTaskAPI], LiveServer]


def fasttask_call(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "FTAPI_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "fasttask", "call", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )


@pytest.fixture
def probe() -> Probe:
    probe = Probe()
    probe.release.set()
    return probe


@pytest.fixture
def url(live_server: StartServer, probe: Probe) -> Iterator[str]:
    yield live_server(make_app(probe)).url


def test_call_prints_the_result_and_plain_progress_lines(url: str, tmp_path: Path) -> None:
    run = fasttask_call(url, "/make_fries", "-p", "fries_name=curly", "-p", "amount=3", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "3 x curly\n"
    lines = run.stderr.splitlines()
    assert lines[0].startswith("fasttask: job ") and lines[0].endswith(" submitted to /make_fries")
    assert lines[-1] == "finished 100% frying"  # stderr is no terminal: plain lines, no bar


def test_json_prints_exactly_the_result(url: str, tmp_path: Path) -> None:
    run = fasttask_call(url, "make_fries", "-p", "fries_name=curly", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == "1 x curly"
    run = fasttask_call(url, "/shape", "-p", 'point={"x": 2}', "-p", "tags=a", "-p", "tags=b", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"x": 2.0, "y": 0.0, "tags": ["a", "b"]}
    run = fasttask_call(url, "/count", "-p", "n=3", "--json", cwd=tmp_path)
    assert json.loads(run.stdout) == [0, 1, 2]


def test_files_go_up_and_result_files_are_saved(url: str, tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(PNG)
    out = tmp_path / "results"
    run = fasttask_call(url, "/thumbnail", "-f", "image=@cat.png", "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    saved = Path(run.stdout.strip())
    assert saved == out / "reversed-cat.png"
    assert saved.read_bytes() == PNG[::-1]
    # a second run never writes over the first one's file
    again = fasttask_call(url, "/thumbnail", "-f", "image=@cat.png", "--out", str(out), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["file_name"] == "reversed-cat.png" and result["url"].startswith("/jobs/")
    assert (out / "reversed-cat-1.png").read_bytes() == PNG[::-1]
    assert f"fasttask: saved {out / 'reversed-cat-1.png'}" in again.stderr
    # repeated -f: a list of files; result files land in the current directory by default
    (tmp_path / "b.txt").write_bytes(b"bb")
    run = fasttask_call(url, "/sizes", "-f", "files=@cat.png", "-f", "files=b.txt", cwd=tmp_path)
    assert json.loads(run.stdout) == {"cat.png": len(PNG), "b.txt": 2}


def test_nested_file_results_print_as_their_saved_paths(live_server: StartServer, tmp_path: Path) -> None:
    server = live_server(client_app(Probe()))
    run = fasttask_call(server.url, "/pair", "-p", "name=hi", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"one": "hi.txt", "more": ["escape.txt"], "n": 2}
    assert (tmp_path / "hi.txt").read_bytes() == b"first"
    assert (tmp_path / "escape.txt").read_bytes() == b"second"


def test_a_failed_cancelled_or_timed_out_job_exits_1(live_server: StartServer, url: str, tmp_path: Path) -> None:
    run = fasttask_call(url, "/fail", "-p", "message=no oil", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "failed: ValueError: no oil" in run.stderr
    run = fasttask_call(url, "/sleepy_async", "--json", cwd=tmp_path)
    assert (run.returncode, run.stdout) == (1, "")
    assert "timed out: TimeoutError" in run.stderr

    probe = Probe()
    server = live_server(make_app(probe))
    process = subprocess.Popen(
        [sys.executable, "-m", "fasttask", "call", server.url, "/block"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    job_id = first.split()[2]
    assert probe.started.wait(20)
    with httpx.Client(base_url=server.url) as http:
        assert http.post(f"/jobs/{job_id}/cancel").status_code == 200
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"job {job_id} was cancelled" in stderr


def test_usage_and_connection_errors_exit_2(url: str, tmp_path: Path) -> None:
    for args, message in (
        ([url, "/make_fries", "-p", "fries_name"], "-p expects KEY=VALUE"),
        ([url, "/thumbnail", "-f", "image=@missing.png"], "no such file: missing.png"),
        ([url, "/thumbnail", "-f", "image"], "-f expects NAME=@PATH"),
        (["ftp://127.0.0.1", "/make_fries"], "base_url must be an http(s) URL"),
        ([f"http://127.0.0.1:{free_port()}", "/make_fries", "-p", "fries_name=x"], "failed"),
        ([url, "/make_fries", "-p", "amount=x"], "422"),
        ([url, "/no_such_task"], "404"),
    ):
        run = fasttask_call(*args, cwd=tmp_path)
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)
        assert run.stdout == ""
    run = fasttask_call(url, cwd=tmp_path)  # PATH missing: argparse's usage error
    assert run.returncode == 2 and "usage:" in run.stderr


def test_the_api_key_comes_from_the_option_or_the_environment(live_server: StartServer, tmp_path: Path) -> None:
    server = live_server(make_app(api_key="s3cret"))
    (tmp_path / "cat.png").write_bytes(PNG)
    run = fasttask_call(server.url, "/make_fries", "-p", "fries_name=x", cwd=tmp_path)
    assert run.returncode == 2 and "401" in run.stderr
    run = fasttask_call(server.url, "/thumbnail", "-f", "image=@cat.png", "--api-key", "s3cret", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert Path(tmp_path / run.stdout.strip()).read_bytes() == PNG[::-1]  # the download was authenticated too
    run = fasttask_call(server.url, "/make_fries", "-p", "fries_name=x", cwd=tmp_path, env={"FTAPI_API_KEY": "s3cret"})
    assert (run.returncode, run.stdout) == (0, "1 x x\n")


def test_on_a_terminal_stderr_shows_a_progress_bar(live_server: StartServer, tmp_path: Path) -> None:
    server = live_server(client_app(Probe()))
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    process = subprocess.Popen(
        [sys.executable, "-m", "fasttask", "call", server.url, "/steps", "-p", "n=4", "-p", "pause=0.2"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    drawn = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the process closed its end
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    stdout, _ = process.communicate(timeout=40)
    reader.join(10)
    os.close(primary)
    assert process.returncode == 0
    assert stdout == b"stepped\n"
    terminal = drawn.decode()
    assert "\r/steps:" in terminal  # tqdm redraws its line in place
    assert " 25%|" in terminal and " 50%|" in terminal and "100%|" in terminal
    assert "step 4" in terminal
    assert "finished 100%" not in terminal  # no plain lines on a terminal


def test_ctrl_c_cancels_the_job(live_server: StartServer, tmp_path: Path) -> None:
    probe = Probe()
    server = live_server(make_app(probe))
    process = subprocess.Popen(
        [sys.executable, "-m", "fasttask", "call", server.url, "/block"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert probe.started.wait(20)
    time.sleep(0.3)  # let the CLI start waiting
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "cancelled" in stderr
    assert probe.stopped.wait(5), "the job was not cancelled"


def streaming_app(probe: Probe) -> FastTaskAPI:
    app = FastTaskAPI(title="streams", queue="local")

    @app.task_endpoint("/parts")
    def parts(job_progress: JobProgress) -> Iterator[Any]:
        yield "first part"
        probe.started.set()
        assert probe.release.wait(20)
        job_progress.set_status(0.5, "halfway")
        yield {"n": 2, "text": "zwei"}
        yield MediaFile.from_bytes(b"third", file_name="third.txt")

    @app.task_endpoint("/nothing")
    def nothing() -> Iterator[int]:
        yield from ()

    return app


def test_a_generators_outputs_print_as_they_come(live_server: StartServer, tmp_path: Path) -> None:
    probe = Probe()
    server = live_server(streaming_app(probe))
    env = {k: v for k, v in os.environ.items() if k != "FTAPI_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fasttask", "call", server.url, "/parts", "--out", "results"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "first part\n"  # printed while the job still runs
        assert probe.started.wait(20) and not probe.release.is_set()
        probe.release.set()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        probe.release.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    saved = Path("results") / "third.txt"
    assert stdout == f'{{"n": 2, "text": "zwei"}}\n{saved}\n'  # each output once, not the list at the end
    assert (tmp_path / saved).read_bytes() == b"third"
    assert "halfway" in stderr and stderr.splitlines()[-1].startswith("finished 100%")
    empty = fasttask_call(server.url, "/nothing", cwd=tmp_path)
    assert (empty.returncode, empty.stdout) == (0, "[]\n")


def test_a_submit_whose_answer_was_lost_is_sent_again_with_its_key(probe: Probe, tmp_path: Path) -> None:
    recorder = Recorder(make_app(probe), fail_submits=1)
    with LiveServer(recorder) as server:  # type: ignore[arg-type]
        run = fasttask_call(server.url, "/make_fries", "-p", "fries_name=once", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == "1 x once"
    first, second = recorder.submits()
    assert first["idempotency-key"] == second["idempotency-key"]
    assert recorder.hidden_jobs[0] in run.stderr  # the job the lost answer was about is the one it followed


def test_webhook_and_idempotency_key_options(live_server: StartServer, probe: Probe, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        server = live_server(make_app(probe, allow_private_urls=True))
        (tmp_path / "cat.png").write_bytes(PNG)
        options = ("--webhook", receiver.url, "--webhook-event", "start", "--webhook-event", "completed")
        params = ("-p", "fries_name=curly", "-p", "amount=3", "--json")  # text, read as the form reads it
        run = fasttask_call(server.url, "/make_fries", *params, *options, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == "3 x curly"
        events = {item.event["type"]: item.event for item in receiver.wait_for(2)}
        assert set(events) == {"job.start", "job.completed"}
        assert events["job.completed"]["data"]["result"] == "3 x curly"
        run = fasttask_call(
            server.url, "/shape", "-p", 'point={"x": 2}', "-p", 'tags=["a"]', "--json", *options[:2], cwd=tmp_path
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == {"x": 2.0, "y": 0.0, "tags": ["a"]}  # JSON text: a model, a list

        first = fasttask_call(server.url, "/make_fries", *params, "--idempotency-key", "order-7", cwd=tmp_path)
        again = fasttask_call(server.url, "/make_fries", *params, "--idempotency-key", "order-7", cwd=tmp_path)
        assert first.returncode == again.returncode == 0, first.stderr + again.stderr
        job_line = first.stderr.splitlines()[0]
        assert again.stderr.splitlines()[0] == job_line, "the same key: the same job"
        other = fasttask_call(
            server.url, "/make_fries", "-p", "fries_name=x", "--idempotency-key", "order-7", cwd=tmp_path
        )
        assert other.returncode == 2, other.stderr
        assert "422" in other.stderr and "with other parameters" in other.stderr

        lone = fasttask_call(server.url, "/make_fries", "--webhook-event", "start", cwd=tmp_path)
        assert lone.returncode == 2 and "--webhook-event needs --webhook" in lone.stderr
    finally:
        receiver.close()

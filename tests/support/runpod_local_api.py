"""runpod's local test API serving tests/support/runpod_app.py in a subprocess on loopback, for the client's tests.

`python tests/support/runpod_app.py --rp_serve_api --rp_api_port P --rp_api_host 127.0.0.1` with FTAPI_BACKEND=runpod
and FASTTASK_TEST_NET_GUARD=1 (the app refuses, and reports, any connection or name lookup beyond loopback),
as tests/runpod/test_mode.py starts it; here with extra environment variables (streaming, a bucket)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support import ROOT
from tests.support.runpod_app import NET_GUARD_MARK
from tests.support.servers import free_port

APP_SCRIPT = Path(__file__).resolve().parent / "runpod_app.py"


class LocalRunpodApi:
    """One `--rp_serve_api` process; `url` is where its /run, /status/{id} and /stream/{id} are."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="runpod-local-api-", suffix=".log", delete=False)  # noqa: SIM115
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "FTAPI_"))}
        environment.update(
            FTAPI_BACKEND="runpod",
            FASTTASK_TEST_NET_GUARD="1",
            RUNPOD_LOG_LEVEL="INFO",
            UVICORN_LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        environment.update(env or {})
        command = [sys.executable, str(APP_SCRIPT), "--rp_serve_api", "--rp_api_port", str(self.port)]
        command += ["--rp_api_host", "127.0.0.1"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 40
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            if self.process.poll() is not None:
                self.close()
                raise RuntimeError(f"the local API exited:\n{self.output()}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the local API did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def assert_loopback_only(self) -> None:
        assert NET_GUARD_MARK not in self.output(), self.output()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log.name)

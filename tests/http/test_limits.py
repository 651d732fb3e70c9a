"""What a request may bring: body caps per endpoint, field and value counts, bodies under any content
type, and the memory an oversized body costs a real API process."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import UploadFile
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from fasttask.errors import ConfigError, size_text
from fasttask.settings import Settings
from tests.support import ROOT
from tests.support.apps import make_app
from tests.support.servers import free_port

ClientFor = Callable[[FastTaskAPI], TestClient]
MB = 1024 * 1024


def final(client: TestClient, job_id: str) -> dict[str, object]:
    job: dict[str, object] = client.get(f"/jobs/{job_id}", params={"wait": 10}).json()
    return job


# -- the cap of bodies without files -------------------------------------------------------------------


@pytest.fixture
def small(client_for: ClientFor) -> TestClient:
    """FTAPI_MAX_BODY_MB of 50 KB, FTAPI_MAX_FILE_MB of 200 KB."""
    return client_for(make_app(max_body_mb=50 / 1024, max_file_mb=200 / 1024))


def test_bodies_without_files_are_capped_by_max_body_mb(small: TestClient) -> None:
    over, under = "a" * 52_000, "a" * 40_000
    refused = [
        small.post("/make_fries", json={"fries_name": over}),
        small.post("/make_fries", data={"fries_name": over}),
        small.post("/make_fries", files={"fries_name": (None, over)}),
        small.post("/make_fries", files={"fries_name": ("name.txt", over.encode())}),  # a file for a plain field
        small.post("/make_fries", content=json.dumps({"fries_name": over}), headers={"content-type": "text/plain"}),
        small.post("/make_fries", params={"fries_name": over}),
    ]
    for response in refused:
        assert response.status_code == 413, response.text
        assert "50 KB" in response.json()["detail"] and "FTAPI_MAX_BODY_MB" in response.json()["detail"]
    accepted = small.post("/make_fries", json={"fries_name": under})
    assert accepted.status_code == 202
    assert final(small, accepted.json()["id"])["result"] == f"1 x {under}"


def test_endpoints_with_files_take_one_base64_file_of_max_file_mb_on_top(small: TestClient) -> None:
    data = os.urandom(200 * 1024)
    inline = small.post("/echo_file", json={"file": base64.b64encode(data).decode()})  # 273 KB of JSON
    assert inline.status_code == 202, inline.text
    assert final(small, inline.json()["id"])["status"] == "finished"
    as_field = small.post("/echo_file", files={"file": (None, base64.b64encode(data))})
    assert as_field.status_code == 202, as_field.text
    padded = small.post("/echo_file", json={"file": base64.b64encode(data).decode(), "pad": "x" * 60_000})
    assert padded.status_code == 413
    assert all(word in padded.json()["detail"] for word in ("FTAPI_MAX_BODY_MB", "FTAPI_MAX_FILE_MB", "multipart"))
    assert small.post("/echo_file", files={"file": ("a.bin", data)}).status_code == 202
    too_big = small.post("/echo_file", files={"file": ("a.bin", data + b"x")})
    assert too_big.status_code == 413 and "larger than 200 KB" in too_big.json()["detail"]


def test_a_limit_under_one_megabyte_is_printed_as_such(client_for: ClientFor) -> None:
    client = client_for(make_app(max_file_mb=0.5))
    refused = client.post("/echo_file", files={"file": ("a.bin", b"x" * 600_000)})
    assert refused.status_code == 413
    assert "larger than 512 KB" in refused.json()["detail"]
    assert [size_text(n) for n in (16 * MB, 1536 * 1024, 1024, 100)] == ["16 MB", "1.5 MB", "1 KB", "100 bytes"]


def test_field_counts_are_capped(client_for: ClientFor) -> None:
    client = client_for(make_app())
    fields = {f"f{i}": "1" for i in range(1001)}
    refused = [
        client.post("/make_fries", data=fields),
        client.post("/make_fries", json=fields),
        client.post("/make_fries", params=fields),
        client.post("/make_fries", files={name: (None, value) for name, value in fields.items()}),
    ]
    for response in refused:
        assert response.status_code == 413, response.text
        assert "more than 1000 fields" in response.json()["detail"]
    del fields["f0"]
    assert client.post("/make_fries", data=fields).status_code == 422  # 1000 fields: unknown ones, not too many


def test_json_values_are_capped_over_the_whole_request(client_for: ClientFor) -> None:
    client = client_for(make_app())
    accepted = client.post("/shape", json={"point": {"x": 1}, "tags": ["a"] * 99_000})
    assert accepted.status_code == 202
    assert client.post("/shape", json={"point": {"x": 1}, "tags": ["a"] * 100_001}).status_code == 413
    in_query = {"z": json.dumps([0] * 10_000, separators=(",", ":"))}
    split = client.post("/shape", params=in_query, json={"point": {"x": 1}, "y": [0] * 95_000})
    assert split.status_code == 413 and "100000 JSON values" in split.json()["detail"]


def test_nesting_is_capped(client_for: ClientFor) -> None:
    client = client_for(make_app())

    def nested(depth: int) -> object:
        value: object = 1
        for _ in range(depth - 1):
            value = [value]
        return {"x": 1, "y": value}

    too_deep = client.post("/shape", json={"point": nested(32)})  # 33 levels with the body's own
    assert too_deep.status_code == 422
    assert too_deep.json()["detail"][0]["msg"] == "JSON decode error: nested deeper than 32 levels"
    fits = client.post("/shape", json={"point": nested(31)})
    assert fits.json()["detail"][0]["type"] == "int_type"  # parsed; the model refuses a list for y


def test_plain_endpoints_are_capped_alike(client_for: ClientFor) -> None:
    app = FastTaskAPI(title="plain", queue="local", max_body_mb=1 / 1024, max_file_mb=10 / 1024)

    @app.endpoint("/count", methods=["POST"])
    def count(body: dict[str, str]) -> int:
        return len(body)

    @app.endpoint("/upload", methods=["POST"])
    async def upload(file: UploadFile) -> int:
        return len(await file.read())

    client = client_for(app)
    assert client.post("/count", json={"a": "x" * 900}).json() == 1
    streamed = (part for part in [b'{"a": "', b"x" * 2000, b'"}'])  # no Content-Length: caught while read
    for response in (
        client.post("/count", json={"a": "x" * 2000}),
        client.post("/count", content=streamed, headers={"content-type": "application/json"}),
        client.post("/upload", files={"file": ("a.bin", b"x" * 20_000)}),
    ):
        assert response.status_code == 413, response.text
        assert "FTAPI_MAX_BODY_MB" in response.json()["detail"]
    assert client.post("/upload", files={"file": ("a.bin", b"x" * 10_000)}).json() == 10_000


# -- a body is never ignored -----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", None, "application/octet-stream"])
def test_a_json_object_is_read_whatever_the_declared_type(client_for: ClientFor, content_type: str | None) -> None:
    client = client_for(make_app())
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/make_fries", content=b'{"fries_name": "plain", "amount": 2}', headers=headers)
    assert response.status_code == 202, response.text
    assert final(client, response.json()["id"])["result"] == "2 x plain"


@pytest.mark.parametrize("body", [b"fries_name=plain", b'["plain"]', b'"plain"', b"\x89PNG\r\n"])
def test_any_other_body_is_refused_with_415(client_for: ClientFor, body: bytes) -> None:
    client = client_for(make_app())
    response = client.post("/make_fries", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    empty = client.post("/make_fries?fries_name=q", content=b" ", headers={"content-type": "text/plain"})
    assert empty.status_code == 202  # no body at all: the query string is the parameters


# -- the setting -------------------------------------------------------------------------------------


def test_max_body_mb_is_read_and_validated_at_start() -> None:
    assert Settings.from_env({}).max_body_mb == 8.0
    assert Settings.from_env({"FTAPI_MAX_BODY_MB": "0.5"}).max_body_mb == 0.5
    for bad in ("abc", "0", "-1", "inf", "nan"):
        with pytest.raises(ConfigError, match="FTAPI_MAX_BODY_MB"):
            Settings.from_env({"FTAPI_MAX_BODY_MB": bad})


# -- a real API process --------------------------------------------------------------------------------


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """`fasttask serve` on the embedded queue in a subprocess: (its pid, its port)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTAPI_")}
    env.update(PYTHONPATH=str(ROOT), FTAPI_QUEUE="local")
    argv = [sys.executable, "-m", "fasttask", "serve", "tests.support.observability_app:app", "--port", str(port)]
    with (tmp_path / "api.log").open("wb") as log:
        process = subprocess.Popen([*argv, "--log-level", "warning"], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield process.pid, port
    finally:
        process.kill()
        process.wait(10)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def send_json_body(port: int, megabytes: int, chunked: bool) -> bytes:
    """POST a JSON body of `megabytes` to /echo (no file parameters); the answer, once the server gives it."""
    head = "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {megabytes * MB}\r\n\r\n"
    pieces = [b'{"n": "' + b"1" * (MB - 7), *([b"1" * MB] * (megabytes - 2)), b"1" * (MB - 2) + b'"}']
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        try:
            for piece in pieces:
                sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                sock.setblocking(False)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # answered before the body was all sent
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            else:
                sock.sendall(b"0\r\n\r\n" if chunked else b"")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while not answer.endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    return answer


@pytest.mark.timeout(120)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_json_body_costs_the_api_process_little_memory(api_process: tuple[int, int], chunked: bool) -> None:
    pid, port = api_process
    before = peak_rss_mb(pid)
    answer = send_json_body(port, 200, chunked)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    detail = json.loads(answer.partition(b"\r\n\r\n")[2])["detail"]
    assert "8 MB (FTAPI_MAX_BODY_MB)" in detail
    growth = peak_rss_mb(pid) - before
    assert growth < 100, f"the API process grew by {growth:.0f} MB for a refused body"
    assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}

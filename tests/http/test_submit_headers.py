"""A task submit's `Prefer: wait=S` and `Idempotency-Key` (docs/http-api.md), on both queues, against a real
uvicorn server (and a worker thread on the Redis queue)."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from fasttask import FastTaskAPI, MediaFile
from tests.support.servers import LiveServer

StartServer = Callable[[FastTaskAPI], LiveServer]
WithWorkers = Callable[[FastTaskAPI], FastTaskAPI]

RUNS: list[str] = []
"""One entry per run of /echo: how many jobs the submits really made (the worker thread shares it)."""
GATE = threading.Event()
"""/gated waits for this."""


def make_app(**settings: Any) -> FastTaskAPI:
    app = FastTaskAPI(title="submit headers", **settings)

    @app.task_endpoint("/echo")
    def echo(n: int, tag: str = "x") -> str:
        RUNS.append(f"{n}{tag}")
        return f"{n}{tag}"

    @app.task_endpoint("/other")
    def other(n: int, tag: str = "x") -> str:
        return "other"

    @app.task_endpoint("/gated")
    def gated() -> str:
        GATE.wait(30)
        return "open"

    @app.task_endpoint("/size")
    def size(file: MediaFile, label: str = "") -> int:
        return file.size

    return app


@pytest.fixture
def server(
    live_server: StartServer, queue_settings: dict[str, Any], with_workers: WithWorkers
) -> Iterator[httpx.Client]:
    RUNS.clear()
    GATE.clear()
    live = live_server(make_app(allow_private_urls=True, **queue_settings))
    with_workers(live.app)
    with live.client() as client:
        yield client
    GATE.set()


# -- Prefer: wait -------------------------------------------------------------------------------------------
def test_prefer_wait_answers_200_with_the_final_job(server: httpx.Client) -> None:
    response = server.post("/echo", json={"n": 1}, headers={"Prefer": "respond-async, wait=30"})
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=30"
    job = response.json()
    assert (job["status"], job["result"]) == ("finished", "1x")
    assert response.headers["location"] == f"/jobs/{job['id']}"


def test_prefer_wait_answers_202_when_the_job_is_not_final_in_time(server: httpx.Client) -> None:
    response = server.post("/gated", json={}, headers={"Prefer": "wait=0.2"})
    assert response.status_code == 202
    assert "preference-applied" not in response.headers
    assert response.json()["status"] in ("queued", "running")


def test_prefer_wait_above_60_counts_as_60(server: httpx.Client) -> None:
    response = server.post("/echo", json={"n": 2}, headers={"Prefer": "wait=3600"})
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=60"


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-1", "wait=nan", "respond-async", "wait"])
def test_an_unreadable_or_absent_wait_is_ignored(server: httpx.Client, prefer: str) -> None:
    response = server.post("/gated", json={}, headers={"Prefer": prefer})
    assert response.status_code == 202
    assert "preference-applied" not in response.headers


# -- Idempotency-Key ----------------------------------------------------------------------------------------
def keyed(client: httpx.Client, path: str, key: str, **kwargs: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key, **kwargs.pop("headers", {})}
    return client.post(path, headers=headers, **kwargs)


def test_a_repeat_with_the_same_key_makes_no_new_job(server: httpx.Client) -> None:
    first = keyed(server, "/echo", "order-1", json={"n": 5, "tag": "y"})
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    job_id = first.json()["id"]
    # another encoding, other key order, the key quoted, waiting this time: the same request
    again = keyed(server, "/echo", '"order-1"', data={"tag": "y", "n": "5"}, headers={"Prefer": "wait=30"})
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == job_id
    assert again.json()["result"] == "5y"
    assert server.get(f"/jobs/{job_id}", params={"wait": 30}).json()["status"] == "finished"
    assert RUNS == ["5y"]


def test_defaults_are_filled_in_before_comparing(server: httpx.Client) -> None:
    first = keyed(server, "/echo", "defaults", json={"n": 1})
    again = keyed(server, "/echo", "defaults", json={"n": 1, "tag": "x"})
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]


def test_the_same_key_with_other_parameters_is_422(server: httpx.Client) -> None:
    first = keyed(server, "/echo", "order-2", json={"n": 1})
    assert first.status_code == 202
    other = keyed(server, "/echo", "order-2", json={"n": 2})
    assert other.status_code == 422
    assert first.json()["id"] in other.json()["detail"]


def test_keys_of_different_endpoints_never_collide(server: httpx.Client) -> None:
    first = keyed(server, "/echo", "shared", json={"n": 1})
    second = keyed(server, "/other", "shared", json={"n": 1})
    assert second.status_code == 202
    assert "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("key", ["", "two words", "x" * 256, "tab\there", "é"])
def test_a_malformed_key_is_400(server: httpx.Client, key: str) -> None:
    response = server.post("/echo", json={"n": 1}, headers=[("Idempotency-Key", key.encode("utf-8"))])
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"]


def test_a_key_of_255_visible_characters_is_taken(server: httpx.Client) -> None:
    assert keyed(server, "/echo", "~" * 255, json={"n": 1}).status_code == 202


def test_a_request_that_made_no_job_leaves_its_key_free(server: httpx.Client) -> None:
    assert keyed(server, "/echo", "retry-me", json={"n": "not a number"}).status_code == 422
    response = keyed(server, "/echo", "retry-me", json={"n": 1})
    assert response.status_code == 202
    assert "idempotent-replayed" not in response.headers


def test_files_are_compared_by_their_bytes(server: httpx.Client) -> None:
    content = b"\x00image bytes\xff"
    first = keyed(server, "/size", "upload", files={"file": ("a.png", content, "image/png")}, data={"label": "l"})
    assert first.status_code == 202, first.text
    as_base64 = {"file": base64.b64encode(content).decode(), "label": "l"}
    again = keyed(server, "/size", "upload", json=as_base64)
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    changed = keyed(server, "/size", "upload", files={"file": ("a.png", content + b"!", "image/png")})
    assert changed.status_code == 422


class _SlowFile:
    """A loopback file server whose one file is sent only once the test allows it."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.send = threading.Event()
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gate.asked.set()
                gate.send.wait(30)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"data")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/file.bin"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.send.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_repeat_while_the_first_is_handled_is_409_with_retry_after(server: httpx.Client) -> None:
    slow = _SlowFile()
    try:
        with ThreadPoolExecutor(1) as pool:
            # the first request is reading its parameters (the file URL is being fetched): it has no job yet
            first = pool.submit(keyed, server, "/size", "in-flight", json={"file": slow.url})
            assert slow.asked.wait(30)
            repeat = keyed(server, "/size", "in-flight", json={"file": slow.url})
            assert repeat.status_code == 409
            assert int(repeat.headers["retry-after"]) >= 1
            slow.send.set()
            assert first.result(30).status_code == 202
        after = keyed(server, "/size", "in-flight", json={"file": slow.url})
        assert after.status_code == 202
        assert after.headers["idempotent-replayed"] == "true"
        assert after.json()["id"] == first.result().json()["id"]
    finally:
        slow.close()


def test_openapi_documents_both_headers_and_the_200(server: httpx.Client) -> None:
    operation = server.get("/openapi.json").json()["paths"]["/echo"]["post"]
    names = {parameter["name"] for parameter in operation["parameters"] if parameter["in"] == "header"}
    assert {"Prefer", "Idempotency-Key"} <= names
    assert {"200", "202", "400", "409", "422"} <= set(operation["responses"])
    assert "Preference-Applied" in operation["responses"]["200"]["headers"]
    assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]

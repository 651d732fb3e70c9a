"""File parameters and results, on both queues: every input form, size limits, downloads with Range."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from tests.support.apps import make_app

ClientFor = Callable[[FastTaskAPI], TestClient]
Serve = Callable[..., TestClient]
CONTENT = bytes(range(256)) * 40 + os.urandom(3000)  # every byte value, and some noise: 13,240 bytes


@pytest.fixture
def serve(
    client_for: ClientFor, queue_settings: dict[str, Any], with_workers: Callable[[FastTaskAPI], FastTaskAPI]
) -> Serve:
    def make(**settings: Any) -> TestClient:
        app = make_app(**{**queue_settings, **settings})
        client = client_for(app)
        with_workers(app)
        return client

    return make


def result_of(client: TestClient, response: Any) -> Any:
    assert response.status_code == 202, response.text
    job = client.get(f"/jobs/{response.json()['id']}", params={"wait": 20}).json()
    assert job["status"] == "finished", job
    return job["result"]


@pytest.mark.parametrize(
    "how",
    [
        {"files": {"file": ("blob.bin", CONTENT, "application/x-test")}},
        {"json": {"file": base64.b64encode(CONTENT).decode()}},
        {"json": {"file": "data:application/x-test;base64," + base64.b64encode(CONTENT).decode()}},
        {"json": {"file": {"file_name": "blob.bin", "content_type": "application/x-test",
                           "content": base64.b64encode(CONTENT).decode()}}},
        {"data": {"file": base64.b64encode(CONTENT).decode()}},
        {"json": {"file": base64.urlsafe_b64encode(CONTENT).decode().rstrip("=")}},
    ],
    ids=["multipart", "base64", "data-uri", "dict", "base64-form-field", "urlsafe-unpadded"],
)  # fmt: skip
def test_every_input_form_round_trips_byte_exact(serve: Serve, how: dict[str, Any]) -> None:
    client = serve()
    result = result_of(client, client.post("/echo_file", **how))
    assert set(result) == {"file_name", "content_type", "size", "url"}
    assert result["size"] == len(CONTENT)
    download = client.get(result["url"])
    assert download.status_code == 200
    assert download.content == CONTENT
    assert download.headers["content-length"] == str(len(CONTENT))
    if "files" in how or "file_name" in str(how):
        assert result["file_name"] == "blob.bin"
        assert result["content_type"] == "application/x-test"
        assert "blob.bin" in download.headers["content-disposition"]


def test_files_larger_than_the_memory_spool_round_trip(serve: Serve) -> None:
    client = serve()
    big = os.urandom(3 * 1024 * 1024 + 17)  # past the 1 MiB kept in memory: spooled to disk
    result = result_of(client, client.post("/echo_file", files={"file": ("big.bin", big)}))
    assert client.get(result["url"]).content == big
    part = client.get(result["url"], headers={"Range": "bytes=2000000-2000099"})
    assert part.content == big[2_000_000:2_000_100]
    as_json = client.post("/echo_file", json={"file": base64.b64encode(big).decode()})
    assert client.get(result_of(client, as_json)["url"]).content == big


def test_downloads_honour_range(serve: Serve) -> None:
    client = serve()
    url = result_of(client, client.post("/echo_file", files={"file": ("r.bin", CONTENT)}))["url"]
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == CONTENT[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(CONTENT)}"
    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert (tail.status_code, tail.content) == (206, CONTENT[-10:])
    rest = client.get(url, headers={"Range": "bytes=13000-"})
    assert rest.content == CONTENT[13000:]
    outside = client.get(url, headers={"Range": f"bytes={len(CONTENT)}-"})
    assert outside.status_code == 416
    assert "outside" in outside.json()["detail"]
    assert client.get(url, headers={"Range": "bytes=0-1,5-6"}).content == CONTENT  # several ranges: whole file


def test_optional_and_list_file_parameters(serve: Serve) -> None:
    client = serve()
    assert result_of(client, client.post("/maybe_image", json={})) == {"image": None, "images": []}
    many = client.post(
        "/maybe_image",
        files=[("images", ("a.png", b"1", "image/png")), ("images", ("b.png", b"22", "image/png")),
               ("image", ("c.png", b"333", "image/png"))],
    )  # fmt: skip
    assert result_of(client, many) == {"image": 3, "images": ["a.png", "b.png"]}
    as_json = client.post("/maybe_image", json={"images": [base64.b64encode(b"x").decode()]})
    assert result_of(client, as_json) == {"image": None, "images": ["file"]}


@pytest.mark.parametrize(
    "how",
    [
        {"files": {"file": ("big.bin", b"x" * 20_000)}},
        {"json": {"file": base64.b64encode(b"x" * 20_000).decode()}},
        {"data": {"file": base64.b64encode(b"x" * 20_000).decode()}},
        {"json": {"file": {"content": base64.b64encode(b"x" * 20_000).decode()}}},
    ],
    ids=["multipart", "base64-json", "base64-form", "dict"],
)
def test_files_past_the_limit_are_refused_with_413(serve: Serve, how: dict[str, Any]) -> None:
    client = serve(max_file_mb=0.01)  # 10,485 bytes
    response = client.post("/echo_file", **how)
    assert response.status_code == 413, response.text
    assert "larger than" in response.json()["detail"]
    assert client.post("/echo_file", files={"file": ("ok.bin", b"y" * 10_000)}).status_code == 202


def test_an_oversized_body_is_refused_before_it_is_read(serve: Serve) -> None:
    client = serve(max_file_mb=0.01)
    huge = b'{"file": "' + b"A" * 2_000_000 + b'"}'
    response = client.post("/echo_file", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_file_result_downloads_through_the_legacy_status_as_an_absolute_url(serve: Serve) -> None:
    client = serve()
    response = client.post("/echo_file", files={"file": ("l.bin", b"legacy")})
    result_of(client, response)
    legacy = client.post("/status", params={"job_id": response.json()["id"]}).json()["result"]
    assert legacy["file_name"] == "l.bin"
    assert legacy["content"].startswith("http://testserver/jobs/")
    assert client.get(legacy["content"]).content == b"legacy"


def test_bad_file_inputs_are_422(serve: Serve) -> None:
    client = serve()
    for bad in ("%%%not-base64%%%", 42, {"file_name": "x"}, "ftp://example.invalid/file", "file:///etc/passwd"):
        response = client.post("/echo_file", json={"file": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "file"]
    # a string that looks like a path is never read from disk: it is (valid) base64 here
    result = result_of(client, client.post("/echo_file", json={"file": "/etc/passwd"}))
    assert client.get(result["url"]).content == base64.b64decode("/etc/passwd=")


def test_files_decoded_before_another_field_fails_are_released(serve: Serve) -> None:
    client = serve()
    body = {"file": base64.b64encode(b"decoded first").decode(), "unexpected": 1}
    response = client.post("/echo_file", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "unexpected"]
    # with warnings as errors, a file left for the garbage collector would fail this test
    import gc

    gc.collect()

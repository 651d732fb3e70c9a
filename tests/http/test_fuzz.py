"""Malformed and hostile requests: each gets a 4xx with a JSON `detail` (never a 500, never a large echo of
the input), and the keep-alive connection it came on serves the next request.

Every shape runs on a real uvicorn server on loopback, on both queues (the Redis one with a worker).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

import pytest

from fasttask import FastTaskAPI
from tests.support.apps import make_app
from tests.support.servers import LiveServer

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
TEXT = {"content-type": "text/plain"}
MULTIPART_X = {"content-type": "multipart/form-data; boundary=x"}
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_FORM_VALUE = b"[" * 2000 + b"]" * 2000
NESTED_33 = b'{"x": 1, "y": ' + b"[" * 32 + b"]" * 32 + b"}"
MAX_ANSWER_BYTES = 20_000

# (id, method, path, body, headers, statuses it may get)
SHAPES: list[tuple[str, str, str, bytes | None, dict[str, str], set[int]]] = [
    ("bad-json", "POST", "/make_fries", b"{not json", JSON, {422}),
    ("json-array", "POST", "/make_fries", b"[1, 2]", JSON, {422}),
    ("bad-utf8", "POST", "/make_fries", b"\xff\xfe", JSON, {422}),
    ("bad-multipart", "POST", "/make_fries", b"--x\r\nbroken", MULTIPART_X, {422}),
    ("no-boundary", "POST", "/make_fries", b"--x\r\nbroken", {"content-type": "multipart/form-data"}, {422}),
    ("bad-percent", "POST", "/make_fries", b"a=%ZZ&fries_name=q", FORM, {202, 422}),
    ("nan", "POST", "/make_fries", b'{"x": NaN}', JSON, {422}),
    ("nan-in-field", "POST", "/make_fries", b'{"fries_name": "a", "amount": NaN}', JSON, {422}),
    ("infinity", "POST", "/make_fries", b'{"fries_name": "a", "amount": -Infinity}', JSON, {422}),
    ("1e400", "POST", "/make_fries", b'{"x": 1e400}', JSON, {422}),
    ("1e400-in-field", "POST", "/shape", b'{"point": {"x": 1e400}}', JSON, {422}),
    ("huge-int", "POST", "/make_fries", b'{"fries_name": "a", "amount": ' + b"9" * 5000 + b"}", JSON, {422}),
    ("lone-surrogate", "POST", "/make_fries", b'{"fries_name": "\\ud800"}', JSON, {422}),
    ("deep", "POST", "/make_fries", DEEP, JSON, {413, 422}),
    ("deep-in-field", "POST", "/make_fries", b'{"fries_name": ' + DEEP + b"}", JSON, {413, 422}),
    ("deep-33", "POST", "/shape", b'{"point": ' + NESTED_33 + b"}", JSON, {422}),
    ("deep-text-plain", "POST", "/make_fries", b'{"fries_name": ' + DEEP + b"}", TEXT, {413, 415}),
    ("deep-status", "POST", "/status", DEEP, JSON, {413, 422}),
    ("deep-status-field", "POST", "/status", b'{"job_id": ' + DEEP + b"}", JSON, {413, 422}),
    ("nan-status", "POST", "/status", b'{"job_id": NaN}', JSON, {422}),
    ("deep-form-value", "POST", "/shape", b"point=" + DEEP_FORM_VALUE, FORM, {422}),
    ("deep-query-value", "POST", "/shape?point=" + DEEP_FORM_VALUE.decode(), None, {}, {422}),
    ("deep-multipart-value", "POST", "/shape", None, {}, {422}),  # body built below
    ("many-form-fields", "POST", "/make_fries", b"&".join(b"f%d=1" % i for i in range(700_000)), FORM, {413}),
    ("many-json-keys", "POST", "/make_fries", json.dumps({f"k{i}": 1 for i in range(2000)}).encode(), JSON, {413}),
    ("many-values", "POST", "/shape", b'{"tags": [' + b",".join([b'"a"'] * 200_000) + b"]}", JSON, {413}),
    ("many-bad-items", "POST", "/shape", b'{"point": {"x": 1}, "tags": [' + b"1," * 4999 + b"1]}", JSON, {422}),
    ("long-key", "POST", "/make_fries", b'{"' + b"k" * 100_000 + b'": 1, "fries_name": "a"}', JSON, {422}),
    ("long-value", "POST", "/make_fries", b'{"fries_name": "a", "amount": "' + b"9x" * 100_000 + b'"}', JSON, {422}),
    ("big-list-echo", "POST", "/make_fries", b'{"fries_name": [' + b'"aaaa",' * 49_999 + b'"a"]}', JSON, {422}),
    ("text-plain-text", "POST", "/make_fries", b"fries_name is cheesy", TEXT, {415}),
    ("text-plain-array", "POST", "/make_fries", b'["a"]', TEXT, {415}),
    ("octet-stream", "POST", "/make_fries", b"\x00\x01\x02", {"content-type": "application/octet-stream"}, {415}),
    ("huge-cursor", "GET", "/jobs?cursor=" + "9" * 4000 + "~abc", None, {}, {422}),
    ("huge-cursor-digits", "GET", "/jobs?cursor=" + "9" * 5000 + "~abc", None, {}, {422}),
    ("negative-cursor", "GET", "/jobs?cursor=-1~abc", None, {}, {422}),
    ("huge-limit", "GET", "/jobs?limit=" + "9" * 5000, None, {}, {422}),
    ("long-endpoint", "GET", "/jobs?endpoint=" + "e" * 10_000, None, {}, {422}),
    ("huge-wait", "GET", "/jobs/abc?wait=1e400", None, {}, {422}),
    ("nan-wait", "GET", "/jobs/abc?wait=nan", None, {}, {422}),
    ("long-job-id", "GET", "/jobs/" + "x" * 10_000, None, {}, {404}),
    ("long-status-id", "GET", "/status?job_id=" + "x" * 10_000, None, {}, {404}),
]


def _multipart_deep_value() -> tuple[bytes, dict[str, str]]:
    body = b'--b\r\nContent-Disposition: form-data; name="point"\r\n\r\n' + DEEP_FORM_VALUE + b"\r\n--b--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=b"}


@pytest.fixture
def live(
    live_server: Callable[[FastTaskAPI], LiveServer],
    queue_settings: dict[str, Any],
    with_workers: Callable[[FastTaskAPI], FastTaskAPI],
) -> LiveServer:
    return live_server(with_workers(make_app(**queue_settings)))


def exchange(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "statuses"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES]
)
def test_bad_input_gets_a_json_4xx_and_the_connection_stays_usable(
    live: LiveServer, method: str, path: str, body: bytes | None, headers: dict[str, str], statuses: set[int]
) -> None:
    if path == "/shape" and body is None and not headers:
        body, headers = _multipart_deep_value()
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        status, answer = exchange(connection, method, path, body, headers)
        assert status in statuses, answer[:500]
        assert len(answer) < MAX_ANSWER_BYTES, "the answer echoes the input"
        payload = json.loads(answer)
        assert status == 202 or payload["detail"], payload
        sock = connection.sock
        assert sock is not None, "the server closed the connection"
        again, health = exchange(connection, "GET", "/health", None, {})
        assert (again, json.loads(health)) == (200, {"status": "ok"})
        assert connection.sock is sock, "the next request needed a new connection"
    finally:
        connection.close()


def test_field_errors_are_bounded_and_never_echo_large_inputs(live: LiveServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        many = json.dumps({"point": {"x": 1}, "tags": list(range(5000))}).encode()
        status, answer = exchange(connection, "POST", "/shape", many, JSON)
        assert status == 422
        errors = json.loads(answer)["detail"]
        assert len(errors) == 51 and errors[-1] == {"type": "too_many_errors", "loc": [], "msg": "and 4950 more errors"}
        large = json.dumps({"point": {"x": 1}, "tags": [7], "scale": "9x" * 1000, "k" * 1000: 1}).encode()
        status, answer = exchange(connection, "POST", "/shape", large, JSON)
    finally:
        connection.close()
    assert status == 422
    by_field = {error["loc"][1]: error for error in json.loads(answer)["detail"]}
    assert by_field["scale"]["input"] == ("9x" * 100) + "…"  # long strings are cut
    assert ("k" * 200) + "…" in by_field  # so are long field names
    assert by_field["tags"]["input"] == 7  # small inputs come back as they were

"""APIPod's job protocol beside FastTaskAPI's (the contract's section 8), on both queues: `/status/{id}`,
`/cancel/{id}`, `/stream/{id}`, and query parameters a body leaves out. fastSDK 0.4 itself runs against them in
`tests/test_fastsdk.py`; these pin the shapes and the edges it does not reach."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from tests.support.apps import Probe, make_app
from tests.support.jobs import final, submit
from tests.support.metrics import scrape, value

KEY = "apipod-key-0123456789"


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def client(
    client_for: Callable[[FastTaskAPI], TestClient],
    queue_settings: dict[str, Any],
    with_workers: Callable[[FastTaskAPI], FastTaskAPI],
    probe: Probe,
) -> TestClient:
    app = make_app(probe, **queue_settings)
    client = client_for(app)
    with_workers(app)
    return client


def status(client: TestClient, job_id: str) -> dict[str, Any]:
    answer = client.get(f"/status/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def links(job_id: str) -> dict[str, str]:
    return {"status": f"/status/{job_id}", "cancel": f"/cancel/{job_id}", "stream": f"/stream/{job_id}"}


def test_the_job_json_links_apipods_status_route(client: TestClient) -> None:
    job = submit(client, "/make_fries", json={"fries_name": "cheesy"})
    assert job["job_id"] == job["id"]
    assert job["links"]["status"] == f"/status/{job['id']}"
    assert final(client, job["id"])["job_id"] == job["id"]


def test_status_in_apipods_shape_finished_failed_and_files(client: TestClient) -> None:
    fries = submit(client, "/make_fries", json={"fries_name": "cheesy", "amount": 2})["id"]
    final(client, fries)
    assert status(client, fries) == {
        "job_id": fries,
        "status": "finished",
        "progress": 1.0,
        "message": "frying",
        "result": "2 x cheesy",
        "error": None,
        "links": links(fries),
    }
    failed = submit(client, "/fail", json={"message": "boom"})["id"]
    final(client, failed)
    assert {k: v for k, v in status(client, failed).items() if k in ("status", "error", "result")} == {
        "status": "failed",
        "error": "ValueError: boom",
        "result": None,
    }
    echoed = submit(client, "/echo_file", files={"file": ("a.bin", b"abc", "application/octet-stream")})["id"]
    final(client, echoed)
    result = status(client, echoed)["result"]
    assert result == {
        "file_name": "a.bin",
        "content_type": "application/octet-stream",
        "content": f"http://testserver/jobs/{echoed}/files/0",
    }
    assert client.get(result["content"]).content == b"abc"


def test_status_says_processing_while_a_job_runs_and_404_for_an_unknown_id(client: TestClient, probe: Probe) -> None:
    job_id = submit(client, "/block", json={})["id"]
    assert probe.started.wait(10)
    assert status(client, job_id)["status"] == "processing"
    probe.release.set()
    final(client, job_id)
    missing = client.get("/status/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and "detail" in missing.json()


def test_cancel_ignores_action_and_answers_apipods_shape_then_409(client: TestClient, probe: Probe) -> None:
    job_id = submit(client, "/block", json={})["id"]
    assert probe.started.wait(10)
    answer = client.post(f"/cancel/{job_id}", params={"action": "interrupt"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled" and answer.json()["links"] == links(job_id)
    assert final(client, job_id)["status"] == "cancelled"
    assert client.post(f"/cancel/{job_id}").status_code == 409
    assert client.post("/cancel/0123456789abcdef0123456789abcdef").status_code == 404


def sse_records(client: TestClient, job_id: str, **headers: str) -> list[str]:
    with client.stream("GET", f"/stream/{job_id}", headers=headers) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())  # the whole stream: it closes when the job ends
    return [record for record in text.split("\n\n") if record and not record.startswith(":")]


def test_stream_sends_each_output_unnamed_then_closes(client: TestClient, probe: Probe) -> None:
    job_id = submit(client, "/stream_slowly", json={"n": 3})["id"]
    probe.release.set()
    assert sse_records(client, job_id) == [f'id: {i + 1}\ndata: "part {i}"' for i in range(3)]
    # a client that reconnects after the first output gets the rest
    assert sse_records(client, job_id, **{"Last-Event-ID": "1"}) == ['id: 2\ndata: "part 1"', 'id: 3\ndata: "part 2"']
    assert client.get("/stream/0123456789abcdef0123456789abcdef").status_code == 404


def test_a_job_without_outputs_streams_nothing_and_closes(client: TestClient) -> None:
    job_id = submit(client, "/make_fries", json={"fries_name": "plain"})["id"]
    assert sse_records(client, job_id) == []
    assert final(client, job_id)["status"] == "finished"


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"fries_name": "cheesy"}},
        {"data": {"fries_name": "cheesy"}},
        {"files": {"fries_name": (None, "cheesy")}},
    ],
    ids=["json", "form", "multipart"],
)
def test_query_parameters_naming_no_parameter_are_ignored_beside_a_body(
    client: TestClient, body: dict[str, Any]
) -> None:
    job = submit(client, "/make_fries?details_id=abc&amount=3", **body)
    assert final(client, job["id"])["result"] == "3 x cheesy"  # a query parameter of the task still counts


def test_without_a_body_an_unknown_query_parameter_is_still_refused(client: TestClient) -> None:
    answer = client.post("/make_fries?fries_name=cheesy&details_id=abc")
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [["query", "details_id"]]


def test_a_body_naming_no_parameter_is_still_refused(client: TestClient) -> None:
    answer = client.post("/make_fries?details_id=abc", json={"fries_name": "cheesy", "colour": "gold"})
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [["body", "colour"]]


def test_the_routes_need_the_api_key_and_are_documented_and_labelled(
    client_for: Callable[[FastTaskAPI], TestClient],
) -> None:
    client = client_for(make_app(api_key=KEY))  # the embedded queue: these routes are the HTTP layer's
    job_id = "0123456789abcdef0123456789abcdef"
    for method, path in (("GET", f"/status/{job_id}"), ("POST", f"/cancel/{job_id}"), ("GET", f"/stream/{job_id}")):
        assert client.request(method, path).status_code == 401
        assert client.request(method, path, headers={"X-API-Key": KEY}).status_code == 404
    paths = client.get("/openapi.json", headers={"X-API-Key": KEY}).json()["paths"]
    assert set(paths["/status/{job_id}"]) == {"get"} and set(paths["/stream/{job_id}"]) == {"get"}
    assert "action" in {parameter["name"] for parameter in paths["/cancel/{job_id}"]["post"]["parameters"]}
    samples = scrape(client.get("/metrics", headers={"X-API-Key": KEY}).text)
    for route, method in (("/status/{id}", "GET"), ("/cancel/{id}", "POST"), ("/stream/{id}", "GET")):
        assert value(samples, "fasttask_http_requests_total", route=route, method=method, code="404") == 1
        assert value(samples, "fasttask_http_requests_total", route=route, method=method, code="401") == 1

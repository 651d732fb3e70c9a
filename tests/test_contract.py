"""The HTTP API (docs/http-api.md), on both queues, through FastAPI's TestClient.

Every test runs twice: on the embedded queue, and on the Redis queue with a worker in a thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI
from tests.support.apps import Probe, make_app
from tests.support.jobs import final, submit

ClientFor = Callable[[FastTaskAPI], TestClient]
Serve = Callable[..., TestClient]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def serve(
    client_for: ClientFor, queue_settings: dict[str, Any], with_workers: Callable[[FastTaskAPI], FastTaskAPI]
) -> Serve:
    """A client of a fresh test app on the queue under test (with a worker when that queue needs one)."""

    def make(probe: Probe | None = None, **settings: Any) -> TestClient:
        app = make_app(probe, **{**queue_settings, **settings})
        client = client_for(app)
        with_workers(app)
        return client

    return make


@pytest.fixture
def client(serve: Serve, probe: Probe) -> TestClient:
    return serve(probe)


def test_submit_answers_202_with_the_job_json(client: TestClient) -> None:
    job = submit(client, "/make_fries", json={"fries_name": "cheesy", "amount": 2})
    assert set(job) == {
        "id", "job_id", "endpoint", "status", "progress", "message", "result", "error", "created_at", "started_at",
        "finished_at", "links", "refresh_job_url", "endpoint_protocol",
    }  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{32}", job["id"])
    assert job["endpoint"] == "/make_fries"
    assert job["status"] in ("queued", "running")
    assert job["links"] == {
        "self": f"/jobs/{job['id']}",
        "cancel": f"/jobs/{job['id']}/cancel",
        "stream": f"/jobs/{job['id']}/stream",
        "status": f"/status/{job['id']}",
    }
    assert job["job_id"] == job["id"]
    assert job["refresh_job_url"] == f"/status?job_id={job['id']}"
    assert job["endpoint_protocol"] == "socaity"
    assert ISO_UTC.match(job["created_at"])

    done = final(client, job["id"])
    assert done["status"] == "finished"
    assert done["result"] == "2 x cheesy"
    assert done["progress"] == 1.0
    assert done["message"] == "frying"
    assert done["error"] is None
    assert ISO_UTC.match(done["started_at"]) and ISO_UTC.match(done["finished_at"])
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


@pytest.mark.parametrize(
    "how",
    [
        {"json": {"fries_name": "a", "amount": 3}},
        {"data": {"fries_name": "a", "amount": "3"}},
        {"files": {"fries_name": (None, "a"), "amount": (None, "3")}},
        {"params": {"fries_name": "a", "amount": "3"}},
    ],
    ids=["json", "urlencoded", "multipart", "query"],
)
def test_parameters_validate_alike_from_json_form_multipart_and_query(client: TestClient, how: Any) -> None:
    job = submit(client, "/make_fries", **how)
    assert final(client, job["id"])["result"] == "3 x a"


def test_defaults_make_parameters_optional(client: TestClient) -> None:
    assert final(client, submit(client, "/make_fries", data={"fries_name": "b"})["id"])["result"] == "1 x b"


def test_pydantic_models_and_lists_from_json_and_forms(client: TestClient) -> None:
    job = submit(client, "/shape", json={"point": {"x": 2, "y": 3}, "tags": ["a", "b"], "scale": 2})
    assert final(client, job["id"])["result"] == {"x": 4.0, "y": 6.0, "tags": ["a", "b"]}
    form = submit(client, "/shape", data={"point": '{"x": 1}', "tags": ["p", "q"]})
    assert final(client, form["id"])["result"] == {"x": 1.0, "y": 0.0, "tags": ["p", "q"]}


@pytest.mark.parametrize(
    ("kwargs", "field_loc"),
    [
        ({"json": {"amount": 1}}, ["body", "fries_name"]),
        ({"json": {"fries_name": "a", "amount": "many"}}, ["body", "amount"]),
        ({"data": {"fries_name": "a", "amount": "many"}}, ["body", "amount"]),
        ({"params": {"amount": "1"}}, ["query", "fries_name"]),
        ({"json": {"fries_name": "a", "colour": "red"}}, ["body", "colour"]),
    ],
    ids=["missing", "bad-int-json", "bad-int-form", "missing-query", "unknown-field"],
)
def test_invalid_parameters_give_422_with_field_errors(client: TestClient, kwargs: Any, field_loc: list[str]) -> None:
    response = client.post("/make_fries", **kwargs)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(error["loc"] == field_loc for error in errors), errors
    assert all({"type", "loc", "msg"} <= set(error) for error in errors)


def test_unknown_and_expired_jobs_give_404(client: TestClient) -> None:
    for route in ("/jobs/nope", "/jobs/nope/stream", "/status?job_id=nope"):
        response = client.get(route)
        assert response.status_code == 404, route
        assert "not found" in response.json()["detail"]
    assert client.post("/jobs/nope/cancel").status_code == 404
    job = submit(client, "/short_lived")
    assert final(client, job["id"])["result"] == "soon gone"
    # result_ttl is 0.3 s (the Redis queue rounds it up to 1 s): readable now, purged soon after
    assert client.get(f"/jobs/{job['id']}").status_code == 200
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{job['id']}").status_code != 404:
        assert time.monotonic() < deadline, "the job was not purged after its result_ttl"
        time.sleep(0.1)
    assert client.get("/status", params={"job_id": job["id"]}).status_code == 404


def test_a_final_job_is_readable_many_times(client: TestClient) -> None:
    job_id = submit(client, "/make_fries", json={"fries_name": "x"})["id"]
    first = final(client, job_id)
    assert [client.get(f"/jobs/{job_id}").json() for _ in range(3)] == [first] * 3


def test_wait_is_bounded(client: TestClient) -> None:
    job_id = submit(client, "/make_fries", json={"fries_name": "x"})["id"]
    for bad in ("61", "-1", "soon"):
        response = client.get(f"/jobs/{job_id}", params={"wait": bad})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "wait"]


def test_a_raising_task_fails_the_job_without_a_traceback(client: TestClient) -> None:
    job = final(client, submit(client, "/fail", json={"message": "no fries left"})["id"])
    assert job["status"] == "failed"
    assert job["error"] == {"type": "ValueError", "message": "no fries left"}
    assert job["result"] is None


def test_debug_adds_the_traceback(serve: Serve) -> None:
    client = serve(debug=True)
    job = final(client, submit(client, "/fail", json={})["id"])
    assert job["error"]["type"] == "ValueError"
    assert "Traceback" in job["error"]["traceback"]
    assert "raise ValueError(message)" in job["error"]["traceback"]


def test_retries_run_a_failing_task_again(client: TestClient, probe: Probe) -> None:
    job = final(client, submit(client, "/flaky")["id"])
    assert job["status"] == "finished"
    assert job["result"] == 3
    assert probe.calls.count("flaky") == 3


def test_generators_stream_and_return_the_list_of_their_yields(client: TestClient) -> None:
    assert final(client, submit(client, "/count", json={"n": 4})["id"])["result"] == [0, 1, 2, 3]
    result = final(client, submit(client, "/async_count", json={"n": 2})["id"])["result"]
    assert result == [{"i": 0}, {"i": 1}]


def test_async_tasks_run_on_the_event_loop_not_a_thread_each(client: TestClient, probe: Probe) -> None:
    ids = [submit(client, "/async_echo", json={"text": f"t{i}"})["id"] for i in range(8)]
    assert [final(client, i)["result"] for i in ids] == [f"t{i}" for i in range(8)]
    assert not any(name.startswith("fasttask-job") for name in probe.threads)


def test_cancel_a_queued_job_at_once(serve: Serve, probe: Probe) -> None:
    client = serve(probe, concurrency=1)
    running = submit(client, "/block", json={"tag": "first"})
    assert probe.started.wait(5)
    queued = submit(client, "/block", json={"tag": "second"})
    assert queued["status"] == "queued"
    block = next(q for q in client.get("/queues").json()["queues"] if q["endpoint"] == "/block")
    assert (block["queued"], block["running"], block["queue_size"]) == (1, 1, 10)
    assert len(block["workers"]) == 1
    cancelled = client.post(f"/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert client.post(f"/jobs/{queued['id']}/cancel").status_code == 409
    probe.release.set()
    assert final(client, running["id"])["result"] == "released first"
    assert client.get(f"/jobs/{queued['id']}").json()["status"] == "cancelled"


def test_cancel_a_running_job_stops_it_at_its_next_report(client: TestClient, probe: Probe) -> None:
    job = submit(client, "/block", json={})
    assert probe.started.wait(5)
    response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert probe.stopped.wait(5), "the task's next set_status did not raise"
    assert final(client, job["id"])["status"] == "cancelled"
    conflict = client.post(f"/jobs/{job['id']}/cancel")
    assert conflict.status_code == 409
    assert "cancelled" in conflict.json()["detail"]


def test_a_cancelled_job_discards_its_late_result(client: TestClient, probe: Probe) -> None:
    job = submit(client, "/deaf")
    assert probe.started.wait(5)
    assert client.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    probe.release.set()
    # the task returns "late result" now; a later job proves the runner moved on
    later = final(client, submit(client, "/make_fries", json={"fries_name": "z"})["id"])
    assert later["status"] == "finished"
    stays = client.get(f"/jobs/{job['id']}").json()
    assert stays["status"] == "cancelled"
    assert stays["result"] is None


def test_a_job_past_its_timeout_is_marked_timeout(client: TestClient, probe: Probe) -> None:
    job = final(client, submit(client, "/slow")["id"])
    assert job["status"] == "timeout"
    assert job["error"]["type"] == "TimeoutError"
    assert probe.stopped.wait(5)
    async_job = final(client, submit(client, "/sleepy_async")["id"])
    assert async_job["status"] == "timeout"


def test_queues_show_a_stopped_job_whose_code_still_runs_as_stopping(client_for: ClientFor, probe: Probe) -> None:
    client = client_for(make_app(probe, concurrency=2))  # the embedded queue: its runner threads are visible

    def queue(path: str) -> tuple[int, int, int]:
        info = next(q for q in client.get("/queues").json()["queues"] if q["endpoint"] == path)
        return info["queued"], info["running"], info["stopping"]

    timed_out = final(client, submit(client, "/stubborn")["id"])
    assert timed_out["status"] == "timeout"
    assert queue("/stubborn") == (0, 0, 1)  # its thread has not returned: not a running job, not a free slot
    deaf = submit(client, "/deaf")
    assert client.post(f"/jobs/{deaf['id']}/cancel").json()["status"] == "cancelled"
    assert queue("/deaf") == (0, 0, 1)
    assert 'fasttask_queue_jobs{endpoint="/deaf",state="stopping"} 1.0' in client.get("/metrics").text
    waiting = submit(client, "/make_fries", json={"fries_name": "w"})
    assert waiting["status"] == "queued"  # both slots are still taken by the stopping jobs
    assert queue("/make_fries") == (1, 0, 0)
    probe.release.set()
    assert final(client, waiting["id"])["status"] == "finished"
    deadline = time.monotonic() + 10
    while (queue("/stubborn"), queue("/deaf")) != ((0, 0, 0), (0, 0, 0)):
        assert time.monotonic() < deadline, "the stopped jobs' slots were never released"
        time.sleep(0.01)
    assert client.get(f"/jobs/{deaf['id']}").json()["status"] == "cancelled"


def test_legacy_status_route_in_the_fasttaskapi_shape(client: TestClient) -> None:
    job_id = submit(client, "/make_fries", data={"fries_name": "q"})["id"]
    final(client, job_id)
    for response in (
        client.get("/status", params={"job_id": job_id}),
        client.post("/status", params={"job_id": job_id}),
        client.post("/status", data={"job_id": job_id}),
    ):
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "Finished"
        assert body["progress"] == {"progress": 1.0, "message": "frying"}
        assert body["result"] == "1 x q"
        assert body["endpoint_protocol"] == "socaity"
        assert body["refresh_job_url"] == f"/status?job_id={job_id}"
        assert body["cancel_job_url"] == f"/jobs/{job_id}/cancel"
        assert {"created_at", "queued_at", "execution_started_at", "execution_finished_at"} <= set(body)
    failed_id = submit(client, "/fail", json={"message": "boom"})["id"]
    final(client, failed_id)
    failed = client.post("/status", params={"job_id": failed_id}).json()
    assert failed["status"] == "Failed"
    assert failed["error"] == "ValueError: boom"
    missing = client.post("/status")
    assert missing.status_code == 422


def test_probes_and_queues(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    queues = {q["endpoint"]: q for q in client.get("/queues").json()["queues"]}
    assert queues["/block"]["queue_size"] == 10
    assert queues["/make_fries"] | {"workers": []} == {
        "endpoint": "/make_fries", "queued": 0, "running": 0, "stopping": 0, "queue_size": 100, "workers": [],
    }  # fmt: skip


def test_plain_endpoint_answers_directly_and_gets_a_progress_handle(client: TestClient) -> None:
    assert client.get("/ping").json() == {"pong": "ok"}


def test_get_task_endpoints_take_query_parameters(client: TestClient) -> None:
    response = client.get("/lookup", params={"key": "abc"})
    assert response.status_code == 202
    assert final(client, response.json()["id"])["result"] == "ABC"
    assert client.delete("/lookup").status_code == 405


def test_setup_hook_runs_once_before_jobs(client: TestClient, probe: Probe) -> None:
    final(client, submit(client, "/make_fries", json={"fries_name": "a"})["id"])
    final(client, submit(client, "/make_fries", json={"fries_name": "b"})["id"])
    assert probe.calls.count("setup") == 1


def test_file_parameters_and_results(client: TestClient) -> None:
    upload = submit(client, "/thumbnail", files={"image": ("cat.png", b"\x89PNGdata", "image/png")})
    job = final(client, upload["id"])
    assert job["status"] == "finished", job
    result = job["result"]
    assert result["file_name"] == "reversed-cat.png"
    assert result["content_type"] == "image/png"
    assert result["size"] == 8
    download = client.get(result["url"])
    assert download.status_code == 200
    assert download.content == b"\x89PNGdata"[::-1]
    assert download.headers["content-type"] == "image/png"
    legacy = client.get("/status", params={"job_id": upload["id"]}).json()["result"]
    assert legacy["content"] == "http://testserver" + result["url"]

    as_json = submit(client, "/thumbnail", json={"image": {"file_name": "a.png", "content": "AAEC"}})
    assert client.get(final(client, as_json["id"])["result"]["url"]).content == b"\x02\x01\x00"
    data_uri = submit(client, "/thumbnail", json={"image": "data:image/png;base64,AAEC"})
    assert final(client, data_uri["id"])["result"]["size"] == 3
    many = submit(client, "/sizes", files=[("files", ("a.bin", b"12", "x/y")), ("files", ("b.bin", b"123", "x/y"))])
    assert final(client, many["id"])["result"] == {"a.bin": 2, "b.bin": 3}


def test_bad_base64_is_a_422(client: TestClient) -> None:
    response = client.post("/thumbnail", json={"image": "not base64 at all!"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "image"]
    assert client.get("/jobs/x/files/0").status_code == 404


def test_api_key_guards_every_route_but_the_probes(serve: Serve) -> None:
    client = serve(api_key="s3cret")
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    for method, route in (("post", "/make_fries"), ("get", "/jobs/x"), ("get", "/queues"), ("get", "/openapi.json")):
        response = getattr(client, method)(route)
        assert response.status_code == 401, route
        assert "API key" in response.json()["detail"]
    assert client.get("/queues", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/queues", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/queues", headers={"X-API-Key": "s3cret"}).status_code == 200
    job = client.post("/make_fries", json={"fries_name": "k"}, headers={"Authorization": "Bearer s3cret"})
    assert job.status_code == 202


def test_unknown_routes_answer_json(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}

"""`/openapi.json` that tools accept, and `/docs` that works without internet access."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from fasttask import FastTaskAPI
from fasttask._version import __version__
from tests.support import ROOT
from tests.support.apps import make_app
from tests.support.browser import CHROMEDRIVER, CHROMIUM, cell, click, read, wait
from tests.support.jobs import final, submit
from tests.support.receiver import Receiver
from tests.support.servers import LiveServer

EXAMPLES = sorted(path.stem for path in (ROOT / "examples").glob("*.py"))
KEY = "docs-" + "7" * 27


@pytest.fixture
def example_apps() -> Iterator[Callable[[str], FastTaskAPI]]:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        yield lambda name: importlib.import_module(name).app
    finally:
        sys.path.remove(str(ROOT / "examples"))


def spec_of(client: TestClient, **headers: str) -> dict[str, Any]:
    response = client.get("/openapi.json", headers=headers)
    assert response.status_code == 200, response.text
    spec: dict[str, Any] = response.json()
    return spec


def check_spec(spec: dict[str, Any]) -> None:
    """openapi-spec-validator passes on everything but the one key fastSDK 0.2 needs under `info`."""
    assert spec["info"]["fast-task-api"] == spec["info"]["x-fast-task-api"] == __version__
    without = {**spec, "info": {k: v for k, v in spec["info"].items() if k != "fast-task-api"}}
    validate(without)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_apps_document_validates(
    name: str, example_apps: Callable[[str], FastTaskAPI], client_for: Callable[[FastTaskAPI], TestClient]
) -> None:
    check_spec(spec_of(client_for(example_apps(name))))


@pytest.mark.parametrize("api_key", [None, KEY])
def test_the_test_apps_document_validates_with_files_models_and_a_key(
    api_key: str | None, client_for: Callable[[FastTaskAPI], TestClient]
) -> None:
    client = client_for(make_app(api_key=api_key))
    check_spec(spec_of(client, **({"X-API-Key": KEY} if api_key else {})))


def test_a_task_documents_its_parameters_and_one_body_kind(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    spec = spec_of(client_for(make_app()))
    schemas = spec["components"]["schemas"]
    fries = spec["paths"]["/make_fries"]["post"]
    assert list(fries["requestBody"]["content"]) == ["application/json"]  # no files: a JSON body only
    params = schemas[fries["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(params["properties"]) == {"fries_name", "amount"}
    assert params["required"] == ["fries_name"]
    assert params["properties"]["amount"]["default"] == 1
    assert "Point" in schemas

    upload = spec["paths"]["/thumbnail"]["post"]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]  # files: the multipart form only
    form = schemas[upload["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert form["properties"]["image"]["type"] == "string"
    assert form["properties"]["image"]["format"] == "binary"
    assert form["properties"]["note"]["type"] == "string"
    many_ref = spec["paths"]["/sizes"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    many = schemas[many_ref.rsplit("/", 1)[1]]
    assert many["properties"]["files"] == {**many["properties"]["files"], "type": "array"}
    assert many["properties"]["files"]["items"] == {"type": "string", "format": "binary"}

    accepted = fries["responses"]["202"]
    assert accepted["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Job"}
    assert "Location" in accepted["headers"]
    assert {"413", "422", "429", "503"} <= set(fries["responses"])
    full = spec["components"]["responses"]["QueueFull"]
    assert "Retry-After" in full["headers"]

    lookup = spec["paths"]["/lookup"]["get"]  # a GET task takes its parameters from the query string
    assert lookup["parameters"][0]["name"] == "key" and lookup["parameters"][0]["in"] == "query"


def test_job_routes_have_real_schemas_and_their_errors(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    spec = spec_of(client_for(make_app()))
    paths = spec["paths"]
    job = {"$ref": "#/components/schemas/Job"}
    assert paths["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == job
    assert {"404", "422", "503"} <= set(paths["/jobs/{job_id}"]["get"]["responses"])
    cancel = paths["/jobs/{job_id}/cancel"]["post"]["responses"]
    assert cancel["200"]["content"]["application/json"]["schema"] == job
    assert {"404", "409"} <= set(cancel)
    assert "text/event-stream" in paths["/jobs/{job_id}/stream"]["get"]["responses"]["200"]["content"]
    page = paths["/jobs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/JobPage"}
    legacy = paths["/status"]["get"]
    assert legacy["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/LegacyJob")
    assert legacy["parameters"][0]["name"] == "job_id"
    for code, name in (("401", "Unauthorized"), ("404", "NotFound"), ("409", "AlreadyFinal"), ("413", "TooLarge")):
        assert spec["components"]["responses"][name]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/Error"
        ), code
    assert "401" not in paths["/jobs/{job_id}"]["get"]["responses"]  # no key set: nothing to refuse
    assert "securitySchemes" not in spec["components"]


def test_the_schemas_match_what_the_service_answers(
    client_for: Callable[[FastTaskAPI], TestClient], queue_settings: dict[str, Any], with_workers: Any
) -> None:
    app = make_app(**queue_settings)
    client = client_for(app)
    with_workers(app)
    spec = spec_of(client)

    def check(payload: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        errors = [error.message for error in Draft202012Validator(schema).iter_errors(payload)]
        assert not errors, (name, payload, errors)

    job = submit(client, "/make_fries", json={"fries_name": "schema"})
    check(job, "Job")
    check(final(client, job["id"]), "Job")
    failed = final(client, submit(client, "/fail", json={})["id"])
    check(failed, "Job")
    check(client.get("/jobs").json(), "JobPage")
    check(client.get("/queues").json(), "QueueList")
    check(client.get("/status", params={"job_id": job["id"]}).json(), "LegacyJob")
    check(client.get("/jobs/nope").json(), "Error")
    check(client.post(f"/jobs/{job['id']}/cancel").json(), "Error")
    check(client.post("/make_fries", json={}).json(), "InvalidParameters")
    check(client.post("/thumbnail", json={"image": "not base64 at all!"}).json(), "InvalidParameters")


def test_the_webhook_envelope_and_its_deliveries_are_documented(
    live_server: Callable[[FastTaskAPI], LiveServer],
) -> None:
    server = live_server(make_app(allow_private_urls=True))
    spec = httpx.get(f"{server.url}/openapi.json").json()
    fries = spec["paths"]["/make_fries"]["post"]
    assert "WebhookSubmit" in fries["requestBody"]["description"]
    callback = fries["callbacks"]["webhook"]["{$request.body#/webhook}"]["post"]
    assert {param["name"] for param in callback["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert callback["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WebhookEvent"
    }

    def check(payload: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        errors = [error.message for error in Draft202012Validator(schema).iter_errors(payload)]
        assert not errors, (name, payload, errors)

    receiver = Receiver()
    try:
        envelope = {
            "input": {"fries_name": "hooked"},
            "webhook": receiver.url,
            "webhook_events_filter": ["start", "completed"],
        }
        check(envelope, "WebhookSubmit")
        answer = httpx.post(f"{server.url}/make_fries", json=envelope)
        assert answer.status_code == 202, answer.text
        received = receiver.wait_for(2)
        for delivery in received:  # what the service sends is what its document says
            check(delivery.event, "WebhookEvent")
            assert {"webhook-id", "webhook-timestamp"} <= set(delivery.headers)
        assert sorted(delivery.event["type"] for delivery in received) == ["job.completed", "job.start"]
    finally:
        receiver.close()
    bad = {"input": {}, "webhook": "https://example.com/h", "webhook_events_filter": ["ended"]}
    assert list(
        Draft202012Validator(
            {"$ref": "#/components/schemas/WebhookSubmit", "components": spec["components"]}
        ).iter_errors(bad)
    ), "an unknown event is outside the schema"


def test_the_api_key_is_declared_for_swaggers_authorize_button(client_for: Callable[[FastTaskAPI], TestClient]) -> None:
    client = client_for(make_app(api_key=KEY))
    assert client.get("/openapi.json").status_code == 401
    spec = spec_of(client, Authorization=f"Bearer {KEY}")
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["security"] == [{"bearer": []}, {"apiKey": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/ready"]["get"]["security"] == []
    assert "401" in spec["paths"]["/jobs/{job_id}"]["get"]["responses"]
    assert "401" in spec["paths"]["/make_fries"]["post"]["responses"]
    # the schemes work as documented
    assert client.get("/queues", headers={"X-API-Key": KEY}).status_code == 200


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("api_key", [None, KEY])
def test_docs_page_loads_only_files_this_service_serves(
    api_key: str | None, client_for: Callable[[FastTaskAPI], TestClient]
) -> None:
    client = client_for(make_app(api_key=api_key))
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    parser = _Links()
    parser.feed(page.text)
    assert len(parser.urls) >= 4  # favicon, Swagger UI's script and styles, the page's own script and styles
    base = "http://testserver/docs"
    for url in parser.urls:
        absolute = urljoin(base, url)
        assert urlsplit(absolute).netloc == "testserver", url  # nothing from another host
        answer = client.get(absolute)  # no key: the page's files hold no data
        assert answer.status_code == 200, (url, answer.status_code)
        assert len(answer.content) > 100
    script = client.get("/docs/docs.js").text
    assert "http://" not in script and "https://" not in script
    assert client.get("/redoc").status_code in (401, 404)  # ReDoc would load from a CDN: not served


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="Chromium is not installed (scripts/test does it)")
def test_docs_render_in_a_browser_offline_and_ask_for_the_key(
    browser: Any, live_server: Callable[[FastTaskAPI], LiveServer]
) -> None:
    server = live_server(make_app(api_key=KEY))
    browser.get(f"{server.url}/docs")
    wait(browser, lambda d: (f := cell(d, "#key-form")) is not None and f.is_displayed(), what="the key form")
    cell(browser, "#key-input").send_keys(KEY)
    cell(browser, '#key-form button[type="submit"]').click()
    wait(browser, lambda d: cell(d, "#operations-tasks-make_fries_post"), what="the task's operation")
    assert cell(browser, ".btn.authorize") is not None  # the declared scheme gives the Authorize button
    # "Try it out" sends the key: the submit is accepted, not refused with 401
    cell(browser, "#operations-tasks-make_fries_post .opblock-summary").click()
    wait(browser, lambda d: click(d, "#operations-tasks-make_fries_post .try-out__btn"), what="Try it out")
    wait(browser, lambda d: click(d, "#operations-tasks-make_fries_post .execute"), what="Execute")
    answer = "#operations-tasks-make_fries_post .live-responses-table tr.response .response-col_status"
    code = wait(browser, lambda d: read(d, answer), what="the answer")
    assert code.strip() == "202"
    # a task with files documents a multipart form: Swagger UI offers a file chooser for it
    cell(browser, "#operations-tasks-thumbnail_post .opblock-summary").click()
    wait(browser, lambda d: click(d, "#operations-tasks-thumbnail_post .try-out__btn"), what="Try it out (files)")
    wait(browser, lambda d: cell(d, '#operations-tasks-thumbnail_post input[type="file"]'), what="a file chooser")
    assert not cell(browser, "#key-form").is_displayed()
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert any(url.endswith("/docs/swagger-ui-bundle.js") for url in loaded)
    assert all(url.startswith(server.url + "/") for url in loaded), loaded  # nothing from elsewhere

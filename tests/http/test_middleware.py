"""Middleware a service adds wraps every route, and FTAPI_CORS_ORIGINS serves browser front ends: on real servers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import Request, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fasttask import FastTaskAPI
from fasttask.errors import ConfigError
from fasttask.settings import Settings
from tests.support.apps import make_app
from tests.support.servers import LiveServer

StartServer = Callable[[FastTaskAPI], LiveServer]
FRONT = "https://front.example"


class Tracer:
    """Records each request it sees and marks its response, as tracing middleware does."""

    def __init__(self, app: ASGIApp, seen: list[str], name: str) -> None:
        self.app = app
        self.seen = seen
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append(f"{self.name} {scope['method']} {scope['path']}")

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-traced-by", self.name.encode())]
            await send(message)

        await self.app(scope, receive, marked)


def traced_calls(client: httpx.Client) -> list[httpx.Response]:
    """A submit, a job read, a long poll, a stream, a cancel, /queues and an unknown path."""
    submitted = client.post("/make_fries", json={"fries_name": "traced"})
    job = f"/jobs/{submitted.json()['id']}"
    return [
        submitted,
        client.get(job),
        client.get(job, params={"wait": 10}),
        client.get(f"{job}/stream"),
        client.post(f"{job}/cancel"),
        client.get("/queues"),
        client.get("/nosuch"),
    ]


@pytest.mark.parametrize("how", ["app.fastapi.add_middleware", "app.add_middleware"])
def test_added_middleware_wraps_submits_and_job_reads_once_each(live_server: StartServer, how: str) -> None:
    app = make_app()
    seen: list[str] = []
    adder = app.fastapi.add_middleware if how == "app.fastapi.add_middleware" else app.add_middleware
    adder(Tracer, seen=seen, name="t")
    server = live_server(app)
    with server.client() as client:
        responses = traced_calls(client)
    assert [r.status_code for r in responses] == [202, 200, 200, 200, 409, 200, 404]
    assert all(r.headers.get("x-traced-by") == "t" for r in responses)
    job = f"/jobs/{responses[0].json()['id']}"
    assert seen == [  # each request once: the routes FastAPI serves are not wrapped a second time
        "t POST /make_fries",
        f"t GET {job}",
        f"t GET {job}",
        f"t GET {job}/stream",
        f"t POST {job}/cancel",
        "t GET /queues",
        "t GET /nosuch",
    ]


def test_middleware_order_request_app_and_refused_requests(live_server: StartServer) -> None:
    app = make_app(api_key="k")
    seen: list[str] = []
    app.fastapi.add_middleware(Tracer, seen=seen, name="inner")
    app.add_middleware(Tracer, seen=seen, name="outer")

    @app.fastapi.middleware("http")
    async def title_header(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers["x-service"] = request.app.title  # `request.app` is the FastAPI application
        return response

    server = live_server(app)
    with server.client() as client:
        refused = client.post("/make_fries", json={"fries_name": "x"})
        accepted = client.post("/make_fries", json={"fries_name": "x"}, headers={"X-API-Key": "k"})
    assert (refused.status_code, accepted.status_code) == (401, 202)
    for response in (refused, accepted):  # the API-key check is inside the service's middleware
        assert response.headers["x-service"] == "test service"
        assert response.headers.get_list("x-traced-by") == ["inner", "outer"]
    assert seen == ["outer POST /make_fries", "inner POST /make_fries"] * 2
    with pytest.raises(ConfigError, match="before the app starts serving"):
        app.add_middleware(Tracer, seen=seen, name="late")


def test_a_cors_middleware_answers_on_the_routes_a_front_end_calls(live_server: StartServer) -> None:
    app = make_app(api_key="k")
    app.fastapi.add_middleware(CORSMiddleware, allow_origins=[FRONT], allow_methods=["*"], allow_headers=["*"])
    server = live_server(app)
    with server.client(headers={"Origin": FRONT, "X-API-Key": "k"}) as client:
        for response in traced_calls(client):
            assert response.headers.get("access-control-allow-origin") == FRONT, response.request.url
    with server.client() as client:  # it wraps the API-key check: preflights (which carry no key) pass
        answer = preflight(client, "/make_fries")
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == FRONT


class Broken:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/make_fries":
            raise RuntimeError("middleware bug")
        await self.app(scope, receive, send)


def test_a_middleware_that_raises_gives_the_json_500(live_server: StartServer) -> None:
    app = make_app()
    app.add_middleware(Broken)
    server = live_server(app)
    with server.client() as client:
        response = client.post("/make_fries", json={"fries_name": "x"})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}
        assert client.get("/queues").status_code == 200


def preflight(client: httpx.Client, path: str, method: str = "POST", origin: str = FRONT) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, last-event-id",
    }
    return client.options(path, headers=headers)


def test_cors_origins_setting_with_an_api_key(live_server: StartServer) -> None:
    server = live_server(make_app(api_key="k", cors_origins=(FRONT, "http://localhost:5173")))
    key = {"Authorization": "Bearer k"}
    with server.client() as client:
        job_id = client.post("/make_fries", json={"fries_name": "c"}, headers=key).json()["id"]
        # preflights carry no key: they are answered before the key is checked
        for path, method in [
            ("/make_fries", "POST"),
            (f"/jobs/{job_id}", "GET"),
            (f"/jobs/{job_id}/cancel", "POST"),
            (f"/jobs/{job_id}/stream", "GET"),
            ("/queues", "GET"),
        ]:
            answer = preflight(client, path, method)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.headers["access-control-allow-origin"] == FRONT
            assert method in answer.headers["access-control-allow-methods"]
            allowed = answer.headers["access-control-allow-headers"].lower()
            assert {"authorization", "content-type", "last-event-id"} <= {h.strip() for h in allowed.split(",")}
        front = {"Origin": FRONT}
        submitted = client.post("/make_fries", json={"fries_name": "c"}, headers={**front, **key})
        assert submitted.status_code == 202
        assert submitted.headers["access-control-allow-origin"] == FRONT
        exposed = submitted.headers["access-control-expose-headers"].lower()
        assert "location" in exposed and "retry-after" in exposed
        read = client.get(submitted.headers["location"], params={"wait": 10}, headers={**front, **key})
        assert read.headers["access-control-allow-origin"] == FRONT
        assert read.json()["status"] == "finished"
        refused = client.get(f"/jobs/{job_id}", headers=front)  # the page can read why: a 401 it may see
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == FRONT
        assert client.get("/queues", headers={**key, "Origin": "http://localhost:5173"}).headers[
            "access-control-allow-origin"
        ] == ("http://localhost:5173")
        # an origin not in the list gets no CORS headers, and its preflight is refused
        stranger = client.post(
            "/make_fries", json={"fries_name": "c"}, headers={**key, "Origin": "https://evil.example"}
        )
        assert stranger.status_code == 202
        assert "access-control-allow-origin" not in stranger.headers
        assert preflight(client, "/make_fries", origin="https://evil.example").status_code == 400
        # preflights count under their route, not as paths no route serves
        metrics = client.get("/metrics", headers=key).text
        assert 'fasttask_http_requests_total{code="200",method="OPTIONS",route="/make_fries"} 1.0' in metrics
        assert 'fasttask_http_requests_total{code="200",method="OPTIONS",route="/jobs/{id}/cancel"} 1.0' in metrics


def test_cors_for_any_origin_from_the_environment(live_server: StartServer) -> None:
    settings = Settings.from_env({"FTAPI_CORS_ORIGINS": "*"})
    assert settings.cors_origins == ("*",)
    server = live_server(make_app(settings=settings))
    with server.client() as client:
        assert preflight(client, "/make_fries", origin="https://anyone.example").headers[
            "access-control-allow-origin"
        ] == ("*")
        submitted = client.post("/make_fries", json={"fries_name": "c"}, headers={"Origin": "https://a.example"})
        assert submitted.headers["access-control-allow-origin"] == "*"


def test_without_cors_origins_no_cors_headers_and_a_preflight_is_no_500(live_server: StartServer) -> None:
    server = live_server(make_app())
    with server.client() as client:
        submitted = client.post("/make_fries", json={"fries_name": "c"}, headers={"Origin": FRONT})
        assert submitted.status_code == 202
        assert "access-control-allow-origin" not in submitted.headers
        answer = preflight(client, "/make_fries")
        assert answer.status_code == 405
        assert "detail" in answer.json()


def test_cors_origins_are_read_as_a_comma_list_and_checked() -> None:
    settings = Settings.from_env({"FTAPI_CORS_ORIGINS": " https://a.example, http://127.0.0.1:5173 ,"})
    assert settings.cors_origins == ("https://a.example", "http://127.0.0.1:5173")
    for wrong in ("https://a.example/", "a.example", "https://a.example/app"):
        with pytest.raises(ConfigError, match="FTAPI_CORS_ORIGINS"):
            Settings.from_env({"FTAPI_CORS_ORIGINS": wrong})

"""The two seams of a queue: the broker (what a queue does with jobs) and its read-only views, and the words
that name them (one per idea).

The service routes must answer from the views, on both queues: each view method is replaced here by one that
answers something no queue would, and the routes must show exactly that.
"""

from __future__ import annotations

import ast
import asyncio
import re
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import fasttask
from fasttask import FastTaskAPI
from fasttask.brokers import Broker, JobViews
from fasttask.brokers.views import JobPage, QueueInfo, WorkerInfo
from fasttask.errors import BackendUnavailable, QueueUnavailable, StorageUnavailable
from fasttask.jobs import JobRecord, JobStatus
from fasttask.series import MinuteStats

from ..support.servers import free_port

PACKAGE_DIR = Path(fasttask.__file__).parent


def test_the_broker_seam_holds_what_a_queue_does_and_the_views_what_it_shows() -> None:
    assert Broker.__abstractmethods__ == {
        "submit", "get", "wait", "cancel", "open_stream", "result_file", "hold_key", "submit_keyed", "release_key"
    }  # fmt: skip
    assert JobViews.__abstractmethods__ == {"queues", "list_jobs", "workers", "recent"}
    for name in ("queues", "list_jobs", "workers", "recent", "history"):
        assert not hasattr(Broker, name), f"Broker.{name} belongs to the views"
    assert not set(vars(JobViews)) & {"submit", "get", "wait", "cancel", "open_stream", "result_file"}


def _app(queue_settings: dict[str, Any]) -> FastTaskAPI:
    app = FastTaskAPI(title="views seam", **queue_settings)

    @app.task_endpoint("/echo", queue_size=5)
    def echo(n: int) -> int:
        return n

    return app


def _stub_views(views: JobViews, asked: list[str]) -> None:
    """Each view method answers a marker and notes that it was asked."""
    page = JobPage([JobRecord("marked-job", "/echo", JobStatus.FINISHED)], "marked-cursor")
    stats = MinuteStats(finished=7, failed=0, cancelled=0, wait_p50=None, wait_p95=None, run_p50=None, run_p95=None)
    answers: dict[str, Any] = {
        "queues": [QueueInfo("/echo", 41, 3, 5, [{"name": "marked-worker"}], 2)],
        "list_jobs": page,
        "workers": [WorkerInfo("marked-worker", ["/echo"], "busy", ["marked-job"])],
        "recent": {"/echo": {"finished": 17}},
        "history": {"/echo": [stats]},
    }

    def answering(name: str) -> Callable[..., Any]:
        async def answer(*args: Any) -> Any:
            asked.append(name)
            return answers[name]

        return answer

    for name in answers:
        setattr(views, name, answering(name))


def test_the_service_routes_answer_from_the_views_on_both_queues(
    queue_settings: dict[str, Any], client_for: Callable[[FastTaskAPI], TestClient]
) -> None:
    app = _app(queue_settings)
    client = client_for(app)
    broker, views = app.fastapi.state.broker, app.fastapi.state.views
    assert isinstance(broker, Broker) and isinstance(views, JobViews)
    assert views is broker.views
    assert not isinstance(broker, JobViews)
    asked: list[str] = []
    _stub_views(views, asked)

    queues = client.get("/queues").json()["queues"]
    assert [(q["endpoint"], q["queued"], q["running"], q["stopping"]) for q in queues] == [("/echo", 41, 3, 2)]

    page = client.get("/jobs", params={"endpoint": "/echo"}).json()
    assert [job["id"] for job in page["jobs"]] == ["marked-job"] and page["next_cursor"] == "marked-cursor"

    state = client.get("/dashboard/state").json()
    assert state["queues"][0]["queued"] == 41 and state["queues"][0]["recent"] == {"finished": 17}
    assert [worker["name"] for worker in state["workers"]] == ["marked-worker"]

    series = client.get("/dashboard/series")
    assert series.status_code == 200
    metrics = client.get("/metrics").text
    assert 'fasttask_queue_jobs{endpoint="/echo",state="queued"} 41.0' in metrics
    assert {"queues", "list_jobs", "workers", "recent", "history"} <= set(asked)

    # the job routes still go to the broker: a real job, which the stubbed views know nothing of
    submitted = client.post("/echo", json={"n": 3})
    assert submitted.status_code == 202
    assert client.get(f"/jobs/{submitted.json()['id']}").status_code == 200


def test_each_queue_hands_out_its_own_views() -> None:
    from fasttask.brokers.local import LocalBroker
    from fasttask.brokers.local_views import LocalViews
    from fasttask.redis.broker import RedisBroker
    from fasttask.redis.views import RedisViews
    from fasttask.settings import Settings

    app = _app({"queue": "local"})
    local = LocalBroker(app.tasks, Settings(queue="local"))
    assert isinstance(local.views, LocalViews)
    redis_settings = Settings(queue="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    remote = RedisBroker(app.tasks, redis_settings)
    assert isinstance(remote.views, RedisViews)
    asyncio.run(remote.close())


def test_redis_being_away_is_a_queue_unavailable_which_clients_catch_as_backend_unavailable() -> None:
    from fasttask.redis.broker import RedisBroker
    from fasttask.settings import Settings

    app = _app({"queue": "local"})
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a loopback port nothing listens on
    broker = RedisBroker(app.tasks, Settings(queue="redis", redis_url=nobody))

    async def read() -> None:
        try:
            await broker.get("f" * 32)
        finally:
            await broker.close()

    with pytest.raises(QueueUnavailable, match="the Redis queue is unreachable") as away:
        asyncio.run(read())
    assert isinstance(away.value, fasttask.BackendUnavailable) and away.value.status_code == 503
    assert issubclass(StorageUnavailable, BackendUnavailable)
    assert fasttask.BackendUnavailable is BackendUnavailable


def test_one_job_failed_class_and_backend_means_the_serving_runtime() -> None:
    defined: dict[str, list[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, []).append(str(path.relative_to(PACKAGE_DIR)))
    assert defined["JobFailed"] == ["client/_errors.py"]
    assert issubclass(fasttask.JobFailed, fasttask.ClientError)
    # "backend" in the package's prose (strings and comments) is the serving runtime's setting, or the 503
    # error's name that clients catch; the code's own names for the setting are not prose
    stray = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        with path.open("rb") as source:
            for token in tokenize.tokenize(source.readline):
                if token.type not in PROSE or token.string.strip("\"'").lower() == "backend":
                    continue
                text = re.sub(r"\{[^}]*\}", "", token.string)  # an f-string's fields are code
                text = text.replace("FTAPI_BACKEND", "").replace("BackendUnavailable", "")
                if "backend" in text.lower():
                    stray.append(f"{path.relative_to(PACKAGE_DIR)}:{token.start[0]}: {token.string.strip()[:80]}")
    assert not stray, "\n".join(stray)


PROSE = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}

"""The dashboard in a real browser: headless Chromium from the system packages, driven by selenium through the
system chromedriver (no browser download). Skipped only when Chromium is not installed (scripts/test installs it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fasttask import FastTaskAPI
from tests.support.browser import CHROMEDRIVER, CHROMIUM, cell, click, read, wait
from tests.support.observability_app import build
from tests.support.servers import LiveServer

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium is not installed (apt-get install -y chromium chromium-driver; scripts/test does it)",
)


def progress_of(driver: Any, job_id: str) -> float | None:
    found = read(driver, f'tr[data-job-id="{job_id}"] td.progress', "data-progress")
    return float(found) if found is not None else None


def current_jobs(driver: Any) -> list[str]:
    """The job ids the worker row shows, as a person reads them (innerText follows the layout)."""
    text: str | None = driver.execute_script(
        "const e = document.querySelector('#workers td.current-jobs'); return e ? e.innerText : null;"
    )
    return (text or "").split()


def series_values(driver: Any, chart: str, endpoint: str, series: str) -> list[float | None] | None:
    """The values a chart was drawn from (its `data-values`), oldest minute first."""
    raw = read(driver, f'svg[data-chart="{chart}"][data-endpoint="{endpoint}"] [data-series="{series}"]', "data-values")
    if raw is None:
        return None
    return [float(v) if v else None for v in raw.split(",")]


def status_of(driver: Any, job_id: str) -> str | None:
    return read(driver, f'tr[data-job-id="{job_id}"]', "data-status")


def test_dashboard_shows_endpoints_moving_progress_and_cancels(
    browser: Any, live_server: Callable[[FastTaskAPI], LiveServer]
) -> None:
    server = live_server(build(queue="local", concurrency=2))
    with server.client() as client:
        check_dashboard(browser, server, client)


def check_dashboard(browser: Any, server: LiveServer, client: httpx.Client) -> None:
    done = [client.post("/echo", json={"n": n}).json()["id"] for n in range(3)]
    failed = client.post("/fail", json={"message": "shown in the table"}).json()["id"]
    slow = client.post("/sleep", json={"seconds": 8, "steps": 80}).json()["id"]
    doomed = client.post("/sleep", json={"seconds": 60, "steps": 600}).json()["id"]

    browser.get(f"{server.url}/dashboard")
    for endpoint in ("/echo", "/fail", "/sleep", "/limited"):
        wait(browser, lambda d, e=endpoint: cell(d, f'#endpoints tr[data-endpoint="{e}"]'), what=f"the {endpoint} row")
    assert read(browser, '#endpoints tr[data-endpoint="/limited"] td.limit') == "2"
    wait(browser, lambda d: status_of(d, done[0]) == "finished", what="a finished job")
    wait(browser, lambda d: status_of(d, failed) == "failed", what="the failed job")
    assert "ValueError: shown in the table" in (read(browser, f'tr[data-job-id="{failed}"] td.message') or "")
    assert cell(browser, '#workers tr[data-worker^="embedded-"]') is not None

    # a running job's progress moves on the page
    first = wait(browser, lambda d: (p := progress_of(d, slow)) is not None and p > 0 and p, what="progress")
    wait(browser, lambda d: (progress_of(d, slow) or 0) > first + 0.05, what="the progress to move")
    assert (read(browser, f'tr[data-job-id="{slow}"] td.message') or "").startswith("step ")
    wait(browser, lambda d: read(d, '#endpoints tr[data-endpoint="/sleep"] td.running') == "2", what="two running")
    # the one embedded worker runs both: each job is its own link, not one long id
    shown = wait(browser, lambda d: len(ids := current_jobs(d)) == 2 and ids, what="two current jobs")
    assert set(shown) == {slow[:12], doomed[:12]}

    # cancel from the page
    wait(browser, lambda d: click(d, f'tr[data-job-id="{doomed}"] button.cancel'), what="the cancel button")
    wait(browser, lambda d: status_of(d, doomed) == "cancelled", what="the cancel to show")
    assert client.get(f"/jobs/{doomed}").json()["status"] == "cancelled"
    assert cell(browser, f'tr[data-job-id="{doomed}"] button.cancel') is None
    assert cell(browser, f'tr[data-job-id="{done[0]}"] button.cancel') is None  # final jobs have none
    client.post(f"/jobs/{slow}/cancel")


def test_dashboard_asks_for_the_api_key_and_sends_it_as_a_header(
    browser: Any, live_server: Callable[[FastTaskAPI], LiveServer]
) -> None:
    key = "dash-" + "3" * 27
    server = live_server(build(queue="local", api_key=key))
    job = httpx.post(f"{server.url}/echo", json={"n": 21}, headers={"X-API-Key": key}).json()["id"]
    assert httpx.get(f"{server.url}/dashboard").status_code == 200  # the page itself holds no data
    assert httpx.get(f"{server.url}/dashboard/state").status_code == 401

    browser.get(f"{server.url}/dashboard")
    form = wait(browser, lambda d: (f := cell(d, "#key-form")) is not None and f.is_displayed() and f, what="form")
    cell(browser, "#key-input").send_keys("wrong-key")
    cell(browser, '#key-form button[type="submit"]').click()
    wait(browser, lambda d: "refused" in (read(d, "#status") or ""), what="the refusal")
    cell(browser, "#key-input").send_keys(key)
    cell(browser, '#key-form button[type="submit"]').click()
    wait(browser, lambda d: status_of(d, job) == "finished", what="the job, read with the key")
    assert not form.is_displayed()
    charted = wait(browser, lambda d: series_values(d, "jobs", "/echo", "finished"), what="the charts, with the key")
    assert sum(v or 0 for v in charted) == 1
    assert key not in browser.current_url
    # the job's JSON, fetched with the key and shown on the page
    wait(browser, lambda d: click(d, f'tr[data-job-id="{job}"] a.job-link'), what="the job link")
    panel = wait(browser, lambda d: read(d, "#job-panel-json"), what="the job's JSON")
    assert '"result": 42' in panel


def test_dashboard_charts_the_last_minutes_and_pages_past_the_newest_30(
    browser: Any, live_server: Callable[[FastTaskAPI], LiveServer]
) -> None:
    server = live_server(build(queue="local", concurrency=2))
    with server.client() as client:
        jobs = [client.post("/echo", json={"n": n}).json()["id"] for n in range(35)]
        jobs.append(client.post("/sleep", json={"seconds": 0.3, "steps": 3}).json()["id"])
        jobs.append(client.post("/fail", json={}).json()["id"])
        for job_id in jobs:
            assert client.get(f"/jobs/{job_id}", params={"wait": 20}).json()["status"] in ("finished", "failed")
        listed = client.get("/jobs", params={"limit": 30}).json()
        newest = [job["id"] for job in listed["jobs"]]
        rest = client.get("/jobs", params={"limit": 30, "cursor": listed["next_cursor"]}).json()
        older = [job["id"] for job in rest["jobs"]]
    assert len(newest) == 30 and set(newest) | set(older) == set(jobs) and len(older) == 7

    browser.get(f"{server.url}/dashboard")
    finished = wait(browser, lambda d: series_values(d, "jobs", "/echo", "finished"), what="the /echo chart")
    assert len(finished) == 15
    assert sum(v or 0 for v in finished) == 35
    assert sum(v or 0 for v in series_values(browser, "jobs", "/fail", "failed") or []) == 1
    run = [v for v in series_values(browser, "run", "/sleep", "p95") or [] if v is not None]
    assert run and 0.25 <= run[-1] <= 1.0  # the 0.3 s job
    assert series_values(browser, "depth", "/echo", "queued") is not None
    assert series_values(browser, "wait", "/echo", "p50") is not None
    drawn = read(browser, 'svg[data-chart="jobs"][data-endpoint="/echo"] g[data-series="finished"] rect', "height")
    assert drawn is not None and float(drawn) > 0

    def shown_ids(d: Any) -> list[str]:
        ids: list[str] = d.execute_script(
            "return [...document.querySelectorAll('#jobs tbody tr')].map((r) => r.dataset.jobId);"
        )
        return ids

    first = wait(browser, lambda d: len(ids := shown_ids(d)) == 30 and ids, what="the newest 30 jobs")
    assert first == newest
    assert read(browser, "#newer", "disabled") is not None
    wait(browser, lambda d: click(d, "#older:not([disabled])"), what="the older button")
    second = wait(browser, lambda d: (ids := shown_ids(d)) and set(ids) != set(first) and ids, what="the next page")
    assert second == older  # the 7 older ones, none shown twice
    assert read(browser, "#older", "disabled") is not None  # nothing older
    time.sleep(1.5)  # a refresh or two later, the page stays where it was turned to
    assert shown_ids(browser) == older
    click(browser, "#newer")
    wait(browser, lambda d: shown_ids(d) == newest, what="the newest page again")

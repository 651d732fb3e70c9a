"""Submitting a job and reading it once final, through an in-process client, checking the answers' shape."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def submit(client: TestClient, path: str, **kwargs: Any) -> dict[str, Any]:
    response = client.post(path, **kwargs)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    return job


def final(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}", params={"wait": 10})
    assert response.status_code == 200
    job: dict[str, Any] = response.json()
    assert job["status"] in ("finished", "failed", "cancelled", "timeout"), job
    return job

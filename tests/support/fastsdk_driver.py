"""Runs one scenario of a released fastSDK (0.2 or 0.4) against a fasttask service; started by the tests in
the client's own virtualenv (see `client_venvs.py`), never imported by them.

    python fastsdk_driver.py BASE_URL SCENARIO '{"endpoint": "...", ...}'

The last line it prints is `REPORT <json>`: what the client gave back.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from importlib.metadata import version
from typing import Any

WAIT_S = 60.0
MAJOR_MINOR = tuple(int(part) for part in version("fastsdk").split(".")[:2])


def connect(base_url: str, api_key: str | None = None) -> Any:
    """A client of the service, the way each line documents it."""
    if MAJOR_MINOR >= (0, 4):
        import fastsdk

        if api_key is None:
            return fastsdk.connect(base_url)
        # 0.4 reads a service's OpenAPI document without its key: a keyed service's is handed over
        import httpx2

        spec = httpx2.get(f"{base_url}/openapi.json", headers={"X-API-Key": api_key}).raise_for_status().json()
        return fastsdk.connect(spec, api_key=api_key, service_address=base_url)
    if api_key is not None:
        raise SystemExit("this driver runs fastSDK 0.2 without a key only")
    from fastsdk import FastSDK
    from fastsdk.fastClient import FastClient

    return FastClient(FastSDK().add_service(base_url).id)


def describe(value: Any) -> Any:
    """A result as JSON: files by their bytes."""
    if hasattr(value, "to_bytes") and hasattr(value, "content_type"):
        return {"file_bytes_b64": base64.b64encode(value.to_bytes()).decode()}
    if isinstance(value, list):
        return [describe(item) for item in value]
    if isinstance(value, dict):
        return {key: describe(item) for key, item in value.items()}
    return value


def job_id_of(job: Any) -> str | None:
    """The service's id of a submitted job, once the client has the submit's answer."""
    if MAJOR_MINOR >= (0, 4):
        return job.platform_job_id  # type: ignore[no-any-return]
    response = job.response
    return getattr(response, "id", None)


def follow(client: Any, base_url: str, job_id: str) -> Any:
    """A handle on a job submitted elsewhere."""
    if MAJOR_MINOR >= (0, 4):
        return client.track_job(job_id)
    # fastSDK 0.2 has no call for it: a job whose polling starts from the job's status in FastTaskAPI's
    # shape (what 0.2 polls), as a submit would have left it
    import httpx
    from fastsdk.service_interaction.api_job_manager import APISeex
    from fastsdk.service_interaction.response.response_parser import ResponseParser

    manager = client.fsdk.api_job_manager
    service = client.service_definition
    answer = httpx.post(f"{base_url}/status", params={"job_id": job_id})
    envelope = ResponseParser().parse_response(answer, parse_media=False)
    job = APISeex(service, service.endpoints[0], tasks=["Polling", "Processing result"], name=f"follow {job_id}")
    job.task_outputs[-1] = envelope
    return manager.meseex_box.summon_meseex(job)


def run(base_url: str, scenario: str, args: dict[str, Any]) -> dict[str, Any]:
    client = connect(base_url, args.get("api_key"))
    params = args.get("params", {})
    if scenario == "result":
        job = client.submit_job(args["endpoint"], **params)
        return {"result": describe(job.wait_for_result(timeout_s=WAIT_S))}
    if scenario == "failure":
        job = client.submit_job(args["endpoint"], **params)
        try:
            outcome = job.wait_for_result(timeout_s=WAIT_S)
        except Exception as exc:
            return {"error": str(exc)}
        return {"unexpected_result": describe(outcome)}
    if scenario == "file":
        from fastsdk import ImageFile

        image = ImageFile().from_file(args["path"])
        job = client.submit_job(args["endpoint"], **{args["param"]: image}, **params)
        return {"result": describe(job.wait_for_result(timeout_s=WAIT_S))}
    if scenario == "cancel":
        job = client.submit_job(args["endpoint"], **params)
        deadline = time.monotonic() + WAIT_S
        while job_id_of(job) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        answer = job.cancel()
        status = getattr(answer, "status", None)
        return {"job_id": job_id_of(job), "answer_status": str(getattr(status, "name", status))}
    if scenario == "follow":
        job = follow(client, base_url, args["job_id"])
        try:
            return {"result": describe(job.wait_for_result(timeout_s=WAIT_S))}
        except Exception as exc:
            return {"error": str(exc)}
    if scenario == "stream":
        job = follow(client, base_url, args["job_id"])
        return {"outputs": [describe(item) for item in job.stream()]}
    raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    report = run(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
    print("REPORT " + json.dumps(report), flush=True)
    # the client's job threads are not daemons, and one may still wait on its next poll: the report is out
    os._exit(0)

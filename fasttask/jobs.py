"""The job record and the JSON shapes clients read it in."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any


class JobStatus(str, Enum):
    """Where a job is in its lifecycle."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMEOUT})

# FastTaskAPI 1.x spelled statuses in title case and called running "Processing".
_LEGACY_STATUS = {
    JobStatus.QUEUED: "Queued",
    JobStatus.RUNNING: "Processing",
    JobStatus.FINISHED: "Finished",
    JobStatus.FAILED: "Failed",
    JobStatus.CANCELLED: "Cancelled",
    JobStatus.TIMEOUT: "Timeout",
}

# APIPod's job protocol (fastSDK 0.4) spells statuses in lower case and calls running "processing".
_APIPOD_STATUS = {status: "processing" if status is JobStatus.RUNNING else status.value for status in JobStatus}


def new_job_id() -> str:
    """128 random bits, hex: unguessable, and safe in URLs and Redis keys."""
    return secrets.token_hex(16)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def isoformat(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is timezone.utc:  # what fasttask's own times hold: isoformat is faster than strftime
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class JobRecord:
    """A job's state as every queue keeps it. `result` is already JSON-ready."""

    id: str
    endpoint: str
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    message: str | None = None
    result: Any = None
    error: dict[str, str] | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    webhook: dict[str, Any] | None = None
    """How the `completed` webhook delivery went, for jobs submitted with a webhook."""

    def to_json(self) -> dict[str, Any]:
        """The job JSON (docs/http-api.md)."""
        job_id = self.id
        shape = {
            "id": job_id,
            "job_id": job_id,
            "endpoint": self.endpoint,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "created_at": isoformat(self.created_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "links": {
                "self": f"/jobs/{job_id}",
                "cancel": f"/jobs/{job_id}/cancel",
                "stream": f"/jobs/{job_id}/stream",
                "status": f"/status/{job_id}",
            },
            "refresh_job_url": f"/status?job_id={job_id}",
            "endpoint_protocol": "socaity",
        }
        if self.webhook is not None:
            shape["webhook"] = self.webhook
        return shape

    def to_legacy_json(self, base_url: str) -> dict[str, Any]:
        """The FastTaskAPI 1.x status shape, for clients written against it (fastSDK 0.2)."""
        job_id = self.id
        return {
            "id": job_id,
            "status": _LEGACY_STATUS[self.status],
            "progress": {"progress": self.progress, "message": self.message},
            "result": legacy_result(self.result, base_url),
            "error": self.error_text(),
            "refresh_job_url": f"/status?job_id={job_id}",
            "cancel_job_url": f"/jobs/{job_id}/cancel",
            "created_at": isoformat(self.created_at),
            "queued_at": isoformat(self.created_at),
            "execution_started_at": isoformat(self.started_at),
            "execution_finished_at": isoformat(self.finished_at),
            "endpoint_protocol": "socaity",
        }

    def to_apipod_json(self, base_url: str) -> dict[str, Any]:
        """APIPod's status shape (`GET /status/{id}`), for clients that speak its job protocol (fastSDK 0.4)."""
        job_id = self.id
        return {
            "job_id": job_id,
            "status": _APIPOD_STATUS[self.status],
            "progress": self.progress,
            "message": self.message,
            "result": legacy_result(self.result, base_url),
            "error": self.error_text(),
            "links": {"status": f"/status/{job_id}", "cancel": f"/cancel/{job_id}", "stream": f"/stream/{job_id}"},
        }

    def error_text(self) -> str | None:
        """The error as one string, `Type: message`, as both older protocols carry it."""
        return None if self.error is None else f"{self.error['type']}: {self.error['message']}"


def is_file_result(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {"file_name", "content_type", "size", "url"}


def legacy_result(value: Any, base_url: str) -> Any:
    """Rewrite file results to FastTaskAPI's `{file_name, content_type, content: <absolute URL>}`."""
    if is_file_result(value):
        url = value["url"]
        if url.startswith("/"):
            url = base_url.rstrip("/") + url
        return {"file_name": value["file_name"], "content_type": value["content_type"], "content": url}
    if isinstance(value, list):
        return [legacy_result(item, base_url) for item in value]
    if isinstance(value, dict):
        return {key: legacy_result(item, base_url) for key, item in value.items()}
    return value

"""What the client hands back: a job's state and the events of its stream (no imports of the client's own
modules, so the errors can name a JobState without an import circle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..jobs import JobStatus


@dataclass(frozen=True)
class JobState:
    """A job as the service last reported it. File results in `result` are download objects."""

    id: str
    status: JobStatus
    endpoint: str | None = None
    progress: float = 0.0
    message: str | None = None
    result: Any = None
    error: dict[str, str] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The job JSON as the service sent it (file results as their plain dicts)."""

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else self.error.get("type")

    @property
    def error_message(self) -> str | None:
        return None if self.error is None else self.error.get("message")


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's stream: `progress` and `end` carry the job, `output` one yield of a generator task."""

    kind: Literal["progress", "output", "end"]
    job: JobState | None = None
    output: Any = None

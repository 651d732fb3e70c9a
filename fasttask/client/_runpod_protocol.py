"""runpod serverless's queue API as the client speaks it, without I/O: requests built, answers read, polls
paced. The transports (`_runpod.py`) give Client / AsyncClient's job handles over it for a fasttask app
deployed on runpod (FTAPI_BACKEND=runpod), instead of fasttask's HTTP API.

    Client.for_runpod("abc123xyz", api_key="rpa_…")

| handle            | runpod                                                            |
|-------------------|-------------------------------------------------------------------|
| `submit(path, …)` | `POST /run` with `{"input": {"path": path, <params>}}`            |
| `status()`        | `GET /status/{id}`                                                |
| `result()`        | `GET /status/{id}`, polled with a bounded backoff (no long poll)  |
| `stream()`        | `GET /stream/{id}`, polled likewise                               |
| `cancel()`        | `POST /cancel/{id}`                                               |

Every request carries `Authorization: Bearer <api key>`; 429 and 503 are retried as by the fasttask client
(`HTTPSession._send`). runpod's statuses map to fasttask's: IN_QUEUE → queued, IN_PROGRESS → running,
COMPLETED → finished, FAILED → failed (runpod's error string is the error's message), CANCELLED →
cancelled, TIMED_OUT → timeout.

runpod takes JSON only, so file parameters go inline as `{file_name, content_type, content: <base64>}` (what
the runpod handler accepts; mind runpod's 10 MB limit on a /run body). File results come back as RemoteFile:
inline base64 (decoded when read) or, when the worker has a bucket, a URL downloaded without the runpod key.

The hosted API reads `/status` and `/stream` with GET; runpod's local test API (`--rp_serve_api`) only
answers them on POST, hence `status_method`. That local API also runs a `/run` job only when it is first
read (`/status` or `/stream`, which then lasts as long as the job) and forgets it afterwards; it has no
`/cancel` and reports no progress. See the runpod section of the README for what the tests cover.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx

from ..jobs import JobStatus
from . import _core as core
from ._errors import ClientError, InvalidArgument
from ._files import inline_params, is_any_file_result
from ._models import FileWrapper, JobState, StreamEvent, wrap_files

RUNPOD_API_URL = "https://api.runpod.ai/v2"
"""runpod's hosted serverless API; an endpoint's routes are under `<this>/<endpoint id>`."""

FIRST_POLL_S = 0.25
"""The first pause between two polls of a job; each poll that sees no change makes the next pause longer."""

POLL_GROWTH = 1.5

DEFAULT_POLL_INTERVAL_S = 5.0
"""The longest pause between two polls, unless the client says otherwise (`poll_interval_s`)."""

STATUSES = {
    "IN_QUEUE": JobStatus.QUEUED,
    "IN_PROGRESS": JobStatus.RUNNING,
    "RUNNING": JobStatus.RUNNING,  # listed in runpod's docs, though no example shows it
    "COMPLETED": JobStatus.FINISHED,
    "FAILED": JobStatus.FAILED,
    "CANCELLED": JobStatus.CANCELLED,
    "TIMED_OUT": JobStatus.TIMEOUT,
}

LOCAL_API_NOTE = "runpod's local test API (--rp_serve_api) answers /status and /stream on POST only: "
LOCAL_API_NOTE += "use status_method='POST' with it"


@dataclass(frozen=True)
class RunpodOptions:
    """How a runpod endpoint is read."""

    status_method: str = "GET"
    """The HTTP method of /status and /stream: GET on runpod's hosted API, POST on its local test API."""
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    """The longest pause between two polls of /status or /stream (the pauses start at 0.25 s and grow)."""

    def __post_init__(self) -> None:
        method = self.status_method.upper()
        if method not in ("GET", "POST"):
            raise InvalidArgument(
                f"status_method must be 'GET' (runpod) or 'POST' (its local test API), not {method!r}"
            )
        object.__setattr__(self, "status_method", method)
        if not self.poll_interval_s > 0:
            raise InvalidArgument(f"poll_interval_s must be positive, not {self.poll_interval_s!r}")


def endpoint_url(endpoint_id: str | None, base_url: str = RUNPOD_API_URL) -> str:
    """The URL an endpoint's routes are under. Without an id, `base_url` is taken as that URL itself (runpod's
    local test API serves /run at its root)."""
    if not endpoint_id:
        return base_url.rstrip("/")
    return f"{base_url.rstrip('/')}/{quote(endpoint_id, safe='')}"


# -- the requests -------------------------------------------------------------------------------------------
def task_path(path: str) -> str:
    return path if path.startswith("/") else f"/{path}"


def run_request(path: str, params: Mapping[str, Any], webhook: core.WebhookRequest | None = None) -> core.RequestSpec:
    if "path" in params:
        raise InvalidArgument(
            "a task run on runpod cannot take a parameter named 'path': the input's path names the task"
        )
    body: dict[str, Any] = {"input": {"path": task_path(path), **inline_params(params)}}
    if webhook is not None:
        body["webhook"] = webhook.url
    return core.RequestSpec("POST", "/run", json=body)


def status_request(job_id: str, options: RunpodOptions) -> core.RequestSpec:
    return core.RequestSpec(options.status_method, f"/status/{quote(job_id, safe='')}")


def stream_request(job_id: str, options: RunpodOptions) -> core.RequestSpec:
    return core.RequestSpec(options.status_method, f"/stream/{quote(job_id, safe='')}")


def cancel_request(job_id: str) -> core.RequestSpec:
    return core.RequestSpec("POST", f"/cancel/{quote(job_id, safe='')}")


def error_note(response: httpx.Response) -> str:
    """A hint for an error status from a runpod endpoint, when one is known."""
    route = response.request.url.path
    if response.status_code == 405 and ("/status/" in route or "/stream/" in route):
        return LOCAL_API_NOTE
    if response.status_code == 404 and "/cancel/" in route:
        return "runpod's local test API (--rp_serve_api) has no /cancel; from runpod itself, a 404 means no such job"
    if response.status_code == 401:
        return "runpod refused the API key"
    return ""


# -- the answers --------------------------------------------------------------------------------------------
def read_answer(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ClientError(f"{response.request.method} {response.request.url} did not answer a JSON object")
    return data


def read_status(data: Mapping[str, Any]) -> JobStatus:
    status = STATUSES.get(str(data.get("status")))
    if status is None:
        raise ClientError(f"runpod reported an unknown job status {data.get('status')!r}")
    return status


def read_error(value: Any) -> dict[str, str] | None:
    """runpod's `error`: a string (fasttask's handler says what went wrong in it), or the JSON text runpod's SDK
    makes of an exception the handler raised (`{"error_type": "<class 'ValueError'>", "error_message": …}`)."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        details = json.loads(text)
    except ValueError:
        details = None
    if isinstance(details, dict) and "error_message" in details:
        error_type = str(details.get("error_type") or "")
        if error_type.startswith("<class '") and error_type.endswith("'>"):
            error_type = error_type[8:-2].rpartition(".")[2]
        error = {"message": str(details["error_message"])}
        if error_type:
            error["type"] = error_type
        return error
    return {"message": text}


def wrap_result(value: Any, wrap_file: FileWrapper) -> Any:
    """A job's output with its file results (inline or by URL) as RemoteFiles."""
    return wrap_files(value, wrap_file, is_any_file_result)


def parse_record(data: Mapping[str, Any], wrap_file: FileWrapper, endpoint: str | None = None) -> JobState:
    """A runpod job record (the answer of /run, /status or /cancel) as a JobState.

    While the job runs, an `output` of `{"progress", "message"}` is fasttask's progress report (runpod shows
    the latest `progress_update` there); once COMPLETED, `output` is the result.
    """
    job_id = data.get("id")
    if not isinstance(job_id, str):
        raise ClientError(f"runpod did not answer with a job: {str(dict(data))[:200]!r}")
    status = read_status(data)
    job_input = data.get("input")
    if isinstance(job_input, dict) and isinstance(job_input.get("path"), str):
        endpoint = task_path(job_input["path"])
    output = data.get("output")
    progress, message, result = 0.0, None, None
    if status is JobStatus.FINISHED:
        progress, result = 1.0, wrap_result(output, wrap_file)
    elif not status.is_final and isinstance(output, dict) and isinstance(output.get("progress"), int | float):
        progress = min(max(float(output["progress"]), 0.0), 1.0)
        message = output["message"] if isinstance(output.get("message"), str) else None
    error = None if status is JobStatus.FINISHED else read_error(data.get("error"))
    return JobState(
        id=job_id,
        status=status,
        endpoint=endpoint,
        progress=progress,
        message=message,
        result=result,
        error=error,
        raw=dict(data),
    )


# -- waiting ------------------------------------------------------------------------------------------------
class Backoff:
    """Pauses between polls: from FIRST_POLL_S, half again as long each time, at most `longest_s`."""

    def __init__(self, longest_s: float) -> None:
        self._longest_s = longest_s
        self._next_s = min(FIRST_POLL_S, longest_s)

    def next(self) -> float:
        pause = self._next_s
        self._next_s = min(self._next_s * POLL_GROWTH, self._longest_s)
        return pause

    def reset(self) -> None:
        self._next_s = min(FIRST_POLL_S, self._longest_s)


class Poll:
    """One `get(job_id, wait_s)`: poll until the job ends or changes (status, progress or message), or
    `wait_s` passes. runpod has no long poll: this is the client's stand-in for one."""

    def __init__(self, wait_s: float, options: RunpodOptions) -> None:
        self._until = time.monotonic() + min(max(wait_s, 0.0), core.MAX_WAIT_S)
        self._backoff = Backoff(options.poll_interval_s)
        self._first: tuple[JobStatus, float, str | None] | None = None

    def pause(self, state: JobState) -> float | None:
        """Seconds to wait before polling again, or None to answer with `state`."""
        if state.is_final:
            return None
        seen = (state.status, state.progress, state.message)
        if self._first is None:
            self._first = seen
        elif seen != self._first:
            return None
        remaining = self._until - time.monotonic()
        if remaining <= 0:
            return None
        return min(self._backoff.next(), remaining)


class StreamReader:
    """A job's events from the answers of runpod's /stream, `{"status": …, "stream": [{"output": …}, …]}`.

    Each answer holds the outputs since the previous one: `output` events for them, a `progress` event when
    the status changed (/stream carries no progress value), and once the status is final, the `end` event.
    Like runpod's SDK, reading goes on after a final status while answers still bring outputs; an answer that
    no longer knows the job (runpod's local test API forgets a job once it streamed it) ends it too.
    """

    def __init__(self, job_id: str, wrap_file: FileWrapper, options: RunpodOptions) -> None:
        self.job_id = job_id
        self._wrap_file = wrap_file
        self.backoff = Backoff(options.poll_interval_s)
        self.outputs: list[Any] = []
        self.final: JobState | None = None
        self.done = False
        self._status: JobStatus | None = None

    def feed(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        status = read_status(data)
        chunks = data.get("stream") or []
        if not isinstance(chunks, list):
            raise ClientError(f"runpod's /stream answered a stream that is not a list: {str(chunks)[:200]!r}")
        if self.final is not None and (status is not self.final.status or data.get("error") or not chunks):
            self.done = True  # after the final answer: nothing more, or an answer about a job gone by now
            return []
        events: list[StreamEvent] = []
        state = JobState(
            id=self.job_id,
            status=status,
            progress=1.0 if status is JobStatus.FINISHED else 0.0,
            error=None if status is JobStatus.FINISHED else read_error(data.get("error")),
            raw=dict(data),
        )
        if status is not self._status and not status.is_final:
            events.append(StreamEvent("progress", job=state))
        self._status = status
        for chunk in chunks:
            output = chunk.get("output") if isinstance(chunk, dict) else chunk
            self.outputs.append(output)
            events.append(StreamEvent("output", output=wrap_result(output, self._wrap_file)))
        if status.is_final:
            self.final = self.final or state
            self.done = not chunks
        if events:
            self.backoff.reset()
        return events

    @property
    def needs_record(self) -> bool:
        """Whether the end needs the job's /status record: a final answer says nothing of the result (when
        nothing streamed: not a streaming handler) or of why the job failed."""
        final = self.final
        if final is None:
            return False
        return not self.outputs if final.status is JobStatus.FINISHED else final.error is None

    def end(self, record: JobState | None) -> StreamEvent:
        """The `end` event. A finished job's result is the list of its outputs, as it is on runpod with
        FTAPI_RUNPOD_STREAM=1; a /status record that agrees on the status has the last word."""
        final = self.final
        assert final is not None
        if record is not None and record.status is final.status:
            return StreamEvent("end", job=record)
        if final.status is JobStatus.FINISHED:
            final = replace(final, result=wrap_result(self.outputs, self._wrap_file))
        return StreamEvent("end", job=final)

"""What Client and AsyncClient share, without doing any I/O: the requests of the fasttask HTTP API, how to
read its answers and streams, when to retry, and how waiting for a job ends.

The sync and async transports only send what is built here and sleep where this module says so.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .._version import __version__
from ..jobs import JobStatus
from ._errors import APIError, ClientError, ConnectionFailed, InvalidArgument, JobFailed, ResultTimeout
from ._errors import api_error as make_api_error
from ._files import FilePart, encode_params
from ._models import FileWrapper, JobState, StreamEvent, parse_job, wrap_files

MAX_WAIT_S = 60.0
"""The longest `?wait=` the service accepts: a long poll asks for at most this and asks again."""

STREAM_READ_TIMEOUT_S = 60.0
"""A stream with no bytes for this long is broken: the service sends a keep-alive comment every 15 s."""

MAX_BACKOFF_S = 8.0
FIRST_BACKOFF_S = 0.5


@dataclass(frozen=True)
class ClientSettings:
    """A client's connection settings."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 30.0
    """Connect, read and write timeout of one request; a long poll's read gets its wait on top."""
    retry_429_s: float = 60.0
    """How long a request refused with 429 (queue full) is retried, after each Retry-After."""
    retry_503_s: float = 30.0
    """How long a request refused with 503 (the service's queue or storage unreachable) is retried, with
    exponential backoff."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000, not {self.base_url!r}"
            )

    def http_options(self) -> dict[str, Any]:
        """Keyword arguments for httpx.Client and httpx.AsyncClient."""
        headers = {"User-Agent": f"fasttask/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        # pool=None: with many jobs waiting at once (map), a request waits for a free connection, however long
        timeout = httpx.Timeout(self.timeout_s, pool=None)
        return {"base_url": self.base_url, "headers": headers, "timeout": timeout}


@dataclass(frozen=True)
class RequestSpec:
    """One request, before it is built: file parts are opened anew for every attempt."""

    method: str
    url: str
    params: dict[str, str] | None = None
    json: Any = None
    data: dict[str, Any] | None = None
    files: tuple[tuple[str, FilePart], ...] = ()
    read_timeout_s: float | None = None
    authenticated: bool = True

    def build(self, http: httpx.Client | httpx.AsyncClient, stack: ExitStack) -> httpx.Request:
        files = [(name, part.open(stack)) for name, part in self.files] or None
        options: dict[str, Any] = {}
        if self.read_timeout_s is not None:
            default = http.timeout
            options["timeout"] = httpx.Timeout(
                default.connect, read=self.read_timeout_s, write=default.write, pool=None
            )
        request = http.build_request(
            self.method, self.url, params=self.params, json=self.json, data=self.data, files=files, **options
        )
        if not self.authenticated:
            request.headers.pop("Authorization", None)
        return request


# -- the requests -------------------------------------------------------------------------------------------
def submit_request(path: str, params: Mapping[str, Any], as_form: bool) -> RequestSpec:
    body, data, files = encode_params(params, as_form)
    url = path if path.startswith("/") else f"/{path}"
    if not files and data is None:
        return RequestSpec("POST", url, json=body)
    return RequestSpec("POST", url, data=data, files=tuple(files))


def job_request(job_id: str, wait_s: float, settings: ClientSettings) -> RequestSpec:
    wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
    if wait_s <= 0:
        return RequestSpec("GET", _job_url(job_id))
    # the answer may take the whole wait: the read timeout gets it on top
    return RequestSpec(
        "GET", _job_url(job_id), params={"wait": f"{wait_s:.3f}"}, read_timeout_s=wait_s + settings.timeout_s
    )


def cancel_request(job_id: str) -> RequestSpec:
    return RequestSpec("POST", _job_url(job_id, "/cancel"))


def stream_request(job_id: str, read_timeout_s: float | None) -> RequestSpec:
    return RequestSpec("GET", _job_url(job_id, "/stream"), read_timeout_s=read_timeout_s or STREAM_READ_TIMEOUT_S)


def download_request(url: str, settings: ClientSettings) -> RequestSpec:
    # The API key goes only to the service itself, never to another host (a presigned storage URL).
    return RequestSpec("GET", url, authenticated=_same_origin(url, settings.base_url))


def _job_url(job_id: str, suffix: str = "") -> str:
    return f"/jobs/{quote(job_id, safe='')}{suffix}"


def _same_origin(url: str, base_url: str) -> bool:
    target = urlsplit(url)
    if not target.scheme and not target.netloc:
        return True
    base = urlsplit(base_url)
    return (target.scheme, target.netloc) == (base.scheme, base.netloc)


# -- the answers --------------------------------------------------------------------------------------------
def read_job(response: httpx.Response, wrap_file: FileWrapper) -> JobState:
    try:
        data = response.json()
    except ValueError:
        raise ClientError(f"{response.request.method} {response.request.url} did not answer JSON") from None
    return parse_job(data, wrap_file)


def api_error(response: httpx.Response, note: str = "") -> APIError:
    """The error for an answer with an error status (its body already read)."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text.strip()[:500] or response.reason_phrase
    request = response.request
    return make_api_error(response.status_code, detail, request.method, str(request.url), note, retry_after(response))


def connection_failed(exc: httpx.HTTPError, request: httpx.Request | None = None) -> ConnectionFailed:
    target = f"{request.method} {request.url}" if request is not None else "the service"
    return ConnectionFailed(f"{target} failed: {str(exc) or type(exc).__name__}")


class RetryPolicy:
    """When one request is sent again: after a 429 once its Retry-After passed, after a 503 with exponential
    backoff (or its Retry-After), each for as long as the client's limit for that status allows."""

    def __init__(self, settings: ClientSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = {429: settings.retry_429_s, 503: settings.retry_503_s}
        self._clock = clock
        self._since: dict[int, float] = {}
        self._backoff_s = FIRST_BACKOFF_S

    def delay(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again, or None to give up."""
        code = response.status_code
        if code not in self._limits:
            return None
        delay = retry_after(response)
        if code == 503 and delay is None:
            delay, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, MAX_BACKOFF_S)
        delay = 1.0 if delay is None else delay
        now = self._clock()
        since = self._since.setdefault(code, now)
        if now + delay - since > self._limits[code]:
            return None
        return delay

    def note(self, response: httpx.Response) -> str:
        """Why a retried status was given up on, for the error message."""
        code = response.status_code
        if code not in self._since:
            return ""
        waited = self._clock() - self._since[code]
        return f"gave up after retrying for {waited:.1f} s; this client retries a {code} for {self._limits[code]:g} s"


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (it may also be an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (moment - datetime.now(timezone.utc)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


class SSEDecoder:
    """Server-sent events from a stream's lines: `(event, data)` once an event's blank line arrives."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            event, data = self._event, self._data
            self._event, self._data = "message", []
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):  # a comment: the service's keep-alive
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def read_event(raw: tuple[str, str], wrap_file: FileWrapper) -> StreamEvent | None:
    """A StreamEvent from a decoded SSE event; None for kinds this client does not know."""
    kind, text = raw
    try:
        data = json.loads(text)
    except ValueError:
        raise ClientError(f"the service sent a {kind} event that is not JSON: {text[:200]!r}") from None
    if kind == "output":
        return StreamEvent("output", output=wrap_files(data, wrap_file))
    if kind in ("progress", "end"):
        return StreamEvent("progress" if kind == "progress" else "end", job=parse_job(data, wrap_file))
    return None


# -- waiting ------------------------------------------------------------------------------------------------
class Deadline:
    """The end of a `result(timeout=)`; without a timeout it never comes."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self._at = None if timeout_s is None else time.monotonic() + max(timeout_s, 0.0)

    def remaining(self) -> float | None:
        return None if self._at is None else max(self._at - time.monotonic(), 0.0)

    @property
    def expired(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at

    def poll_wait(self) -> float:
        """The `?wait=` of the next long poll."""
        remaining = self.remaining()
        return MAX_WAIT_S if remaining is None else min(remaining, MAX_WAIT_S)

    def stream_read_timeout(self) -> float:
        remaining = self.remaining()
        return STREAM_READ_TIMEOUT_S if remaining is None else min(max(remaining, 0.05), STREAM_READ_TIMEOUT_S)

    def timeout_error(self, job_id: str, state: JobState | None) -> ResultTimeout:
        return ResultTimeout(job_id, self.timeout_s or 0.0, state)


def outcome(state: JobState) -> Any:
    """A final job's result, or JobFailed when it failed, was cancelled or timed out."""
    if state.status is JobStatus.FINISHED:
        return state.result
    raise JobFailed(state)

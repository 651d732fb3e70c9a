"""What Client and AsyncClient share, without doing any I/O: the requests of the fasttask HTTP API, how to
read its answers and streams, when to retry, and how waiting for a job ends.

The sync and async transports only send what is built here and sleep where this module says so.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
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
from ._files import FilePart, encode_params, inline_params
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
class WebhookRequest:
    """Where the service is to POST the job's events, and which (`start`, `progress`, `output`, `completed`)."""

    url: str
    events: tuple[str, ...] = ("completed",)


def webhook_request(url: str | None, events: Sequence[str] | None) -> WebhookRequest | None:
    if url is None:
        if events is not None:
            raise InvalidArgument("webhook_events needs a webhook")
        return None
    return WebhookRequest(url, tuple(events) if events is not None else ("completed",))


@dataclass(frozen=True)
class SubmitOptions:
    """What a submit asks of the service besides running the task."""

    idempotency_key: str | None = None
    """Sent as `Idempotency-Key`: the service makes one job per key, so the submit can be sent again."""
    wait_s: float = 0.0
    """Sent as `Prefer: wait=S`: the answer comes once the job is final, if within S seconds (at most 60)."""
    webhook: WebhookRequest | None = None
    """Sent in the JSON envelope `{"input", "webhook", "webhook_events_filter"}`: the job's events are POSTed."""

    @classmethod
    def fresh(
        cls, idempotency_key: str | None = None, wait_s: float = 0.0, webhook: WebhookRequest | None = None
    ) -> SubmitOptions:
        """Options with the given key, or a new random one."""
        return cls(idempotency_key or uuid.uuid4().hex, wait_s, webhook)


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
    headers: tuple[tuple[str, str], ...] = ()
    resend_on_connection_error: bool = False
    """Safe to send again when the connection failed or broke: reads, waits, and submits with a key."""
    resend_on_server_error: bool = False
    """A submit with a key: sent again after a 5xx, or a 409 saying its first attempt is still handled."""

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
        for name, value in self.headers:
            request.headers[name] = value
        return request


def call_wait_s(progress: object) -> float:
    """How long `call` holds its submit for the job to end (`Prefer: wait`): the longest the service allows,
    so a short job takes one request; not at all when a progress bar is to show, which needs the stream."""
    return 0.0 if progress else MAX_WAIT_S


# -- the requests -------------------------------------------------------------------------------------------
def submit_request(
    path: str, params: Mapping[str, Any], as_form: bool, options: SubmitOptions, settings: ClientSettings
) -> RequestSpec:
    url = path if path.startswith("/") else f"/{path}"
    headers: list[tuple[str, str]] = []
    if options.idempotency_key is not None:
        headers.append(("Idempotency-Key", options.idempotency_key))
    wait_s = min(max(options.wait_s, 0.0), MAX_WAIT_S)
    if wait_s > 0:
        headers.append(("Prefer", f"wait={wait_s:g}"))
    common: dict[str, Any] = {
        "headers": tuple(headers),
        # the answer may take the whole wait: the read timeout gets it on top
        "read_timeout_s": wait_s + settings.timeout_s if wait_s > 0 else None,
        "resend_on_connection_error": options.idempotency_key is not None,
        "resend_on_server_error": options.idempotency_key is not None,
    }
    webhook = options.webhook
    if webhook is not None:  # the envelope is JSON: files go inline, as base64
        if as_form:
            raise InvalidArgument("a submit with a webhook sends JSON, not a form")
        envelope = {
            "input": inline_params(params),
            "webhook": webhook.url,
            "webhook_events_filter": list(webhook.events),
        }
        return RequestSpec("POST", url, json=envelope, **common)
    body, data, files = encode_params(params, as_form)
    if not files and data is None:
        return RequestSpec("POST", url, json=body, **common)
    return RequestSpec("POST", url, data=data, files=tuple(files), **common)


def job_request(job_id: str, wait_s: float, settings: ClientSettings) -> RequestSpec:
    wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
    if wait_s <= 0:
        return RequestSpec("GET", _job_url(job_id), resend_on_connection_error=True)
    # the answer may take the whole wait: the read timeout gets it on top
    return RequestSpec(
        "GET",
        _job_url(job_id),
        params={"wait": f"{wait_s:.3f}"},
        read_timeout_s=wait_s + settings.timeout_s,
        resend_on_connection_error=True,
    )


def cancel_request(job_id: str) -> RequestSpec:
    return RequestSpec("POST", _job_url(job_id, "/cancel"))


def stream_request(job_id: str, read_timeout_s: float | None) -> RequestSpec:
    return RequestSpec(
        "GET",
        _job_url(job_id, "/stream"),
        read_timeout_s=read_timeout_s or STREAM_READ_TIMEOUT_S,
        resend_on_connection_error=True,
    )


def download_request(url: str, settings: ClientSettings) -> RequestSpec:
    # The API key goes only to the service itself, never to another host (a presigned storage URL).
    return RequestSpec("GET", url, authenticated=_same_origin(url, settings.base_url), resend_on_connection_error=True)


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


def connection_failed(exc: httpx.HTTPError, request: httpx.Request | None = None, note: str = "") -> ConnectionFailed:
    target = f"{request.method} {request.url}" if request is not None else "the service"
    message = f"{target} failed: {str(exc) or type(exc).__name__}"
    return ConnectionFailed(f"{message} ({note})" if note else message)


CONNECTION = 0
"""RetryPolicy's name for a failed or broken connection, beside the status codes."""


class RetryPolicy:
    """When one request is sent again: after a 429 once its Retry-After passed, after a 503 with exponential
    backoff (or its Retry-After), each for as long as the client's limit for that status allows. A request
    that is safe to send again (`RequestSpec.resend_on_*`) is also sent again after a connection error, and a
    submit with an Idempotency-Key after any 5xx or a 409 (its first attempt still being handled), like a 503."""

    def __init__(
        self, settings: ClientSettings, clock: Callable[[], float] = time.monotonic, spec: RequestSpec | None = None
    ) -> None:
        self._limits = {429: settings.retry_429_s, 503: settings.retry_503_s, CONNECTION: settings.retry_503_s}
        self._clock = clock
        self._since: dict[int, float] = {}
        self._backoff_s = FIRST_BACKOFF_S
        self._spec = spec

    def delay(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again, or None to give up."""
        code = self._budget(response)
        if code not in self._limits:
            return None
        return self._wait(code, retry_after(response))

    def _budget(self, response: httpx.Response) -> int:
        """The status whose limit a retry of this answer counts against."""
        code = response.status_code
        if self._spec is not None and self._spec.resend_on_server_error and (code >= 500 or code == 409):
            return 503  # the service makes one job per key: sending the submit again is safe
        return code

    def connection_delay(self) -> float | None:
        """Seconds to wait before sending again after a connection error, or None to give up."""
        if self._spec is None or not self._spec.resend_on_connection_error:
            return None
        return self._wait(CONNECTION, None)

    def _wait(self, code: int, delay: float | None) -> float | None:
        if code != 429 and delay is None:
            delay, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, MAX_BACKOFF_S)
        delay = 1.0 if delay is None else delay
        now = self._clock()
        since = self._since.setdefault(code, now)
        if now + delay - since > self._limits[code]:
            return None
        return delay

    def note(self, response: httpx.Response | None = None) -> str:
        """Why a retried status (or, without a response, connection error) was given up on, for the error."""
        code = CONNECTION if response is None else self._budget(response)
        if code not in self._since:
            return ""
        waited = self._clock() - self._since[code]
        what = "a connection error" if code == CONNECTION else f"a {code}"
        return f"gave up after retrying for {waited:.1f} s; this client retries {what} for {self._limits[code]:g} s"


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

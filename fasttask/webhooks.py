"""Webhooks: the submit envelope, the events a job's changes make, and how one delivery is sent and signed.

A task submit may come in the envelope Cog and runpod clients send, `{"input", "webhook",
"webhook_events_filter"}`. A job with a webhook is *watched*: a loop compares its state with what was
already delivered and turns the difference into deliveries (`job.start`, `job.progress`, `job.output`,
`job.completed`). A second loop sends the deliveries that are due, signed per Standard Webhooks, and
retries the failed ones on FTAPI_WEBHOOK_RETRY_S. Both loops run in API processes; where watches and
deliveries are kept is the `WebhookStore` seam (`webhook_loops.MemoryStore` for the embedded queue,
`redis.webhooks.RedisWebhookStore` for the Redis queue, where they survive restarts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from .fetch import UrlRefused, checked_address, pinned_request
from .jobs import isoformat, utcnow
from .tasks import TaskDef

EVENTS = ("start", "progress", "output", "completed")
DEFAULT_EVENTS = ("completed",)
DEFAULT_RETRY_S = (5.0, 30.0, 300.0, 1800.0, 7200.0, 18000.0)
DELIVERY_TIMEOUT_S = 10.0
"""An attempt that has no answer within this is a failed attempt."""
PROGRESS_INTERVAL_S = 1.0
"""`job.progress` deliveries of one job are at least this far apart."""
MAX_URL_CHARS = 2048


@dataclass(frozen=True)
class WebhookSpec:
    """Where a job's events go, and which of them."""

    url: str
    events: tuple[str, ...] = DEFAULT_EVENTS


def initial_state() -> dict[str, Any]:
    """The `webhook` field of a new job's JSON: about its `completed` delivery."""
    return {"attempts": 0, "last_status": None, "delivered": False}


def split_envelope(data: dict[str, Any], task: TaskDef) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The parameters of a submit, and its webhook fields when it came in the envelope.

    The envelope is recognised only for tasks without a parameter named `input`, by an `input` object.
    """
    payload = data.get("input")
    if not isinstance(payload, dict) or "input" in task.params_model.model_fields:
        return data, None
    extra: dict[str, Any] = {key: data[key] for key in ("webhook", "webhook_events_filter") if key in data}
    return payload, extra


def webhook_spec(fields: Mapping[str, Any]) -> tuple[WebhookSpec | None, list[dict[str, Any]]]:
    """The webhook an envelope asks for, or the field errors (422) that say why not."""
    url = fields.get("webhook")
    events = fields.get("webhook_events_filter")
    errors: list[dict[str, Any]] = []
    if url is None:
        return None, errors
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        errors.append({"type": "url_type", "loc": ["body", "webhook"], "msg": "webhook must be an http(s) URL"})
    if events is None:
        events = list(DEFAULT_EVENTS)
    if not isinstance(events, list) or not all(isinstance(event, str) and event in EVENTS for event in events):
        msg = f"webhook_events_filter must be a list of {', '.join(EVENTS)}"
        errors.append({"type": "enum", "loc": ["body", "webhook_events_filter"], "msg": msg})
    if errors:
        return None, errors
    return WebhookSpec(url, tuple(event for event in EVENTS if event in events)), errors


async def check_url(url: str, allow_private: bool) -> None:
    """The address guard of file URLs, applied to a webhook URL (raises UrlRefused)."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UrlRefused(f"not a valid URL: {exc}") from None
    await checked_address(target, allow_private)


# -- signing ---------------------------------------------------------------------------------------


def secret_bytes(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret (Settings checked its form)."""
    return base64.b64decode(secret[len("whsec_") :])


def signature_header(keys: Sequence[str], message_id: str, timestamp: int, body: str) -> str:
    """`webhook-signature`: one `v1,<base64 HMAC-SHA256>` of `id.timestamp.body` per secret."""
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_bytes(key), signed, hashlib.sha256).digest()).decode() for key in keys
    )


# -- deliveries ------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One event on its way to one URL; its id is the `webhook-id` of every attempt."""

    id: str
    job_id: str
    endpoint: str
    url: str
    body: str
    """The JSON sent, fixed when the event happened: every retry sends the same bytes."""
    completed: bool = False
    attempts: int = 0
    after: str | None = None
    """A delivery that must be settled (delivered or given up) before this one is sent: a job's start."""

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> Delivery:
        return cls(**json.loads(text))


def new_delivery(
    job: dict[str, Any], url: str, kind: str, after: str | None = None, outputs: list[Any] | None = None
) -> Delivery:
    data = dict(job) if outputs is None else {**job, "outputs": outputs}
    body = {"type": f"job.{kind}", "timestamp": isoformat(utcnow()), "data": data}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return Delivery(
        "msg_" + secrets.token_hex(16), job["id"], job["endpoint"], url, text, kind == "completed", after=after
    )


@dataclass
class Watch:
    """A watched job: its webhook and what of its life was already turned into deliveries."""

    url: str
    events: list[str]
    since: float
    """When the watch began (unix s): a job not found soon after is one whose submit failed."""
    started: bool = False
    start_id: str | None = None
    outputs: int = 0
    progress_at: float = 0.0
    progress: list[Any] = field(default_factory=list)
    quiet: int = 0
    """Rounds in a row that found nothing new: the job is looked at less often, down to once a second."""

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> Watch:
        return cls(**json.loads(text))


def deliveries_for(
    watch: Watch, job: dict[str, Any], new_outputs: list[Any], now: float
) -> tuple[Watch | None, list[Delivery]]:
    """What the job's current state adds to its deliveries, and the watch after it (None: the job is final
    and the watch ends). Pure, so any process may compute it and the store keeps whichever wins."""
    events = watch.events
    made: list[Delivery] = []
    status = job["status"]
    after = Watch(**asdict(watch))
    if not after.started and job.get("started_at") is not None:
        after.started = True
        if "start" in events:
            start = new_delivery(job, watch.url, "start")
            after.start_id = start.id
            made.append(start)
    if new_outputs:
        after.outputs += len(new_outputs)
        if "output" in events:
            made.append(new_delivery(job, watch.url, "output", outputs=new_outputs))
    final = status not in ("queued", "running")
    if final:
        if "completed" in events:
            made.append(new_delivery(job, watch.url, "completed", after=after.start_id))
        return None, made
    reported = [job["progress"], job["message"]]
    due = now - after.progress_at >= PROGRESS_INTERVAL_S
    if "progress" in events and status == "running" and reported != after.progress and due:
        after.progress, after.progress_at = reported, now
        made.append(new_delivery(job, watch.url, "progress"))
    return after, made


@dataclass(frozen=True)
class Attempt:
    """How one attempt went: the answer's status (None: no answer) and whether it was a 2xx."""

    status: int | None
    delivered: bool
    error: str | None = None


async def send(client: httpx.AsyncClient, delivery: Delivery, keys: Sequence[str], allow_private: bool) -> Attempt:
    """POST one delivery: its URL checked again (DNS may have changed since the submit), the connection
    pinned to the checked address, no redirects followed."""
    try:
        target = httpx.URL(delivery.url)
        address = await checked_address(target, allow_private)
    except (UrlRefused, httpx.InvalidURL) as exc:
        return Attempt(None, False, f"refused: {exc}")
    timestamp = int(utcnow().timestamp())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
    }
    if keys:
        headers["webhook-signature"] = signature_header(keys, delivery.id, timestamp, delivery.body)
    request = pinned_request(client, "POST", target, address, headers, delivery.body.encode())
    try:
        response = await client.send(request)
    except httpx.HTTPError as exc:
        return Attempt(None, False, f"{type(exc).__name__}: {exc}")
    await response.aclose()
    return Attempt(response.status_code, 200 <= response.status_code < 300)

"""Where fasttask's jobs live in Redis: RQ's own keys, plus a few of ours. Every key name is made here
(the Lua scripts of `scripts` get their prefixes from here too).

fasttask jobs are RQ jobs (RQ's `rq:` prefix and record format, JSON serializer), so `rq info`,
rq-dashboard and rq-exporter read a fasttask cluster unchanged. Our additions are extra `ft_*` fields in
RQ's job hash and the `fasttask:` keys below; RQ's tools ignore both.
"""

from __future__ import annotations

import hashlib
import re

RQ_PREFIX = "rq"

QUEUE_PREFIX = "fasttask."
"""RQ queue name of a task endpoint: `fasttask.` + its path without slashes (`/img2img` → `fasttask.img2img`,
`/v1/chat` → `fasttask.v1.chat`). No `/`, so rq-dashboard can open it."""

TASK_FUNCTION = "fasttask.worker.execute"
"""The `func_name` RQ records for every fasttask job; workers run the task named in the job's args."""

EVENTS_CHANNEL = "fasttask:events"
"""Pub/sub channel: a job id is published here whenever that job changes (progress, output, end)."""

# Fields fasttask adds to RQ's job hash.
F_ENDPOINT = "ft_endpoint"
F_PROGRESS = "ft_progress"
F_MESSAGE = "ft_message"
F_ERROR = "ft_error"
F_OUTCOME = "ft_outcome"
"""`timeout` or `cancelled` when RQ's status (`failed`, `canceled`) does not say which."""
F_RESULT = "ft_result"
"""A finished job's result as JSON, next to RQ's result stream entry when small (empty: read the stream)."""
F_EXECUTION = "ft_execution"
"""The running attempt's execution id: with the job id it names the job's StartedJobRegistry entry."""
F_ATTEMPTS = "ft_attempts"
F_MAX_ATTEMPTS = "ft_max_attempts"
F_TIMEOUT = "ft_timeout"
"""The task's timeout in seconds (absent: none)."""
F_RETRIES = "ft_retries"
"""How many times a failed attempt is re-queued."""
F_WEBHOOK = "ft_webhook"
"""A job submitted with a webhook: how its `completed` delivery went, the job JSON's `webhook` (JSON)."""
F_FAILURES = "ft_failures"
"""Failed attempts so far (the REQUEUE script counts them)."""

OUTPUTS_PREFIX = "fasttask:outputs:"
QUEUED_CHANNEL_PREFIX = "fasttask:queued:"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def queue_name(path: str) -> str:
    body = ".".join(part for part in path.split("/") if part)
    return QUEUE_PREFIX + (_UNSAFE.sub("_", body) or "root")


def queue_key(name: str) -> str:
    return f"{RQ_PREFIX}:queue:{name}"


def job_key(job_id: str) -> str:
    return f"{RQ_PREFIX}:job:{job_id}"


def results_key(job_id: str) -> str:
    return f"{RQ_PREFIX}:results:{job_id}"


def started_registry_key(queue: str) -> str:
    return f"{RQ_PREFIX}:wip:{queue}"


def finished_registry_key(queue: str) -> str:
    return f"{RQ_PREFIX}:finished:{queue}"


def failed_registry_key(queue: str) -> str:
    return f"{RQ_PREFIX}:failed:{queue}"


def canceled_registry_key(queue: str) -> str:
    return f"{RQ_PREFIX}:canceled:{queue}"


def queues_set_key() -> str:
    return f"{RQ_PREFIX}:queues"


def worker_key(name: str) -> str:
    return f"{RQ_PREFIX}:worker:{name}"


def workers_set_key() -> str:
    """RQ's set of every registered worker's key."""
    return f"{RQ_PREFIX}:workers"


def queue_workers_key(queue: str) -> str:
    return f"{RQ_PREFIX}:workers:{queue}"


def worker_command_channel(name: str) -> str:
    """RQ's per-worker command channel (`send_stop_job_command` publishes here)."""
    return f"{RQ_PREFIX}:pubsub:{name}"


def outputs_key(job_id: str) -> str:
    """List of a generator job's outputs, as JSON, in order."""
    return OUTPUTS_PREFIX + job_id


def file_key(job_id: str, index: int) -> str:
    """Hash holding one result file kept inline in Redis (no object storage configured)."""
    return f"fasttask:file:{job_id}:{index}"


def queued_channel(queue: str) -> str:
    """Pub/sub channel idle workers listen on: a job id is published when a job joins `queue`."""
    return QUEUED_CHANNEL_PREFIX + queue


def cleanup_lock_key(queue: str) -> str:
    return f"fasttask:cleanup:{queue}"


WEBHOOK_WATCHES = "fasttask:webhook:watches"
"""Sorted set of the job ids whose webhooks are watched, scored by when each is next looked at."""
WEBHOOK_DUE = "fasttask:webhook:due"
"""Sorted set of pending webhook delivery ids, scored by when each is due (or its claim runs out)."""
WEBHOOK_WATCH_PREFIX = "fasttask:webhook:watch:"
"""+ job id: the watch (JSON), what of the job was already turned into deliveries."""
WEBHOOK_DELIVERY_PREFIX = "fasttask:webhook:delivery:"
"""+ delivery id: the delivery (JSON), its body and attempts so far."""


def webhook_stopped_key(job_id: str) -> str:
    """Set when a receiver answered 410: no more deliveries of the job are sent."""
    return f"fasttask:webhook:stopped:{job_id}"


def idempotency_key(path: str, key: str) -> str:
    """`fasttask:idem:<queue>:<sha256 of the key>`: an Idempotency-Key of one endpoint, holding `~` while its
    first request is handled, then `<fingerprint> <job id>`. Hashed: a key may hold any visible character."""
    return f"fasttask:idem:{queue_name(path)}:{hashlib.sha256(key.encode()).hexdigest()}"

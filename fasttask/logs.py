"""Logging: readable text by default, one JSON object per line with FTAPI_LOG_FORMAT=json, never a secret.

Job state changes go to the `fasttask.jobs` logger with `job_id`, `endpoint`, `status` and (when a job
ends) `duration_ms` as record attributes; the JSON formatter writes them as fields, the text one leaves
them in the message. A job that fails is logged at ERROR with its error type, message and traceback.

Secrets are masked on the finished line, at the handler, whatever the record held (arguments of any type,
exception text, extra fields): every handler fasttask sets up, uvicorn's included, formats through
`MaskingFormatter`. The rule: a known secret (the API key, storage credentials, the Redis password) of
MIN_SECRET_CHARS characters or more is masked wherever it appears, also URL- and JSON-escaped; shorter
values could be ordinary words, so they are not masked inside other text. Whatever its length, a value is
masked where secrets travel: query parameters named like key, token, secret, password, signature or
credential; Authorization, X-API-Key and X-Amz-Security-Token headers; `Credential=` of signed requests;
the password of a URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from .jobs import JobRecord
from .settings import Settings

job_log = logging.getLogger("fasttask.jobs")

FIELDS = ("job_id", "endpoint", "status", "duration_ms", "error_type")
"""Record attributes the JSON formatter writes as fields when a record has them."""

MASK = "***"
MIN_SECRET_CHARS = 8
"""Known secrets at least this long are masked wherever they appear; shorter ones only where secrets travel."""
SECRET_ENV = (
    "FTAPI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "BUCKET_ACCESS_KEY_ID",  # runpod's bucket variables
    "BUCKET_SECRET_ACCESS_KEY",
    "RUNPOD_AI_API_KEY",  # what runpod gives its workers
    "RUNPOD_API_KEY",
)
_QUOTE = r"(?:\\?['\"])?"  # an optional quote, JSON-escaped or not
_SECRET_PLACES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # (what a lower-cased line must hold for the pattern to be worth running, the pattern)
    # query parameters: ?api_key=..., &X-Amz-Credential=..., &X-Amz-Signature=..., &token=...
    (
        ("=",),
        re.compile(
            r"(?i)([?&](?:[a-z0-9_.-]*(?:key|token|secret|password|passwd|signature|credential)[a-z0-9_.-]*)=)"
            r"[^&#\s'\"\\]*"
        ),
    ),
    # headers, as text (`Authorization: Bearer x`) or as a repr (`'X-Amz-Security-Token': b'x'`)
    (
        ("authorization",),
        re.compile(r"(?i)((?:proxy-)?authorization" + _QUOTE + r"\s*[:=]\s*b?" + _QUOTE + r")[^'\"\\\r\n]+"),
    ),
    (
        ("x-api-key", "x-amz-security-token"),
        re.compile(r"(?i)((?:x-api-key|x-amz-security-token)" + _QUOTE + r"\s*[:=]\s*b?" + _QUOTE + r")[^'\"\\\s,;&]+"),
    ),
    # SigV4's access key id outside a header (`Credential=AKIA.../20260101/...`)
    (("credential=",), re.compile(r"(?i)(\bcredential=)[^/,\s'\"\\&]+")),
    # a URL's password: redis://user:password@host
    (("@",), re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s'\"]*:)[^@/\s'\"]+(?=@)")),
)
_MASKED = r"\1" + MASK
_ACCESS_ARGS = 5  # uvicorn's access log: (client, method, path, http version, status code)


def log_job(record: JobRecord, message: str, duration_s: float | None = None) -> None:
    """One job state change on the `fasttask.jobs` logger (callers check `job_log.isEnabledFor(INFO)` first)."""
    extra: dict[str, Any] = {"job_id": record.id, "endpoint": record.endpoint, "status": record.status.value}
    if duration_s is not None:
        extra["duration_ms"] = round(duration_s * 1000, 3)
    job_log.info("job %s %s: %s", record.id, record.endpoint, message, extra=extra)


def log_job_error(job_id: str, endpoint: str, error: BaseException, retrying: bool = False) -> None:
    """Why a job failed, on the process that ran it: ERROR with the error's type, message and traceback."""
    what = "failed; it runs again" if retrying else "failed"
    extra = {"job_id": job_id, "endpoint": endpoint, "status": "failed", "error_type": type(error).__name__}
    job_log.error(
        "job %s %s %s: %s: %s",
        job_id,
        endpoint,
        what,
        type(error).__name__,
        error,
        exc_info=(type(error), error, error.__traceback__),
        extra=extra,
    )


class Redactor:
    """The secrets to mask, and the masking of a finished log line."""

    _secrets: ClassVar[tuple[str, ...]] = ()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def add_secrets(cls, secrets: Iterable[str | None]) -> None:
        forms = set(cls._secrets)
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_CHARS:
                # as written, as a URL carries it, and as a JSON string carries it
                forms.update({secret, quote(secret, safe=""), json.dumps(secret, ensure_ascii=False)[1:-1]})
        with cls._lock:
            cls._secrets = tuple(sorted(forms, key=len, reverse=True))  # longest first: no partial masks

    @classmethod
    def scrub(cls, text: str) -> str:
        for secret in cls._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        lowered = text.lower()
        for needles, pattern in _SECRET_PLACES:
            for needle in needles:
                if needle in lowered:
                    text = pattern.sub(_MASKED, text)
                    break
        return text


class MaskingFormatter(logging.Formatter):
    """Formats with `inner`, then masks secrets on the finished line."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner if inner is not None else logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return Redactor.scrub(self.inner.format(record))


def mask_handler(handler: logging.Handler) -> None:
    """Make `handler` mask secrets on every line it writes (once)."""
    if not isinstance(handler.formatter, (MaskingFormatter, JsonFormatter)):  # JsonFormatter masks itself
        handler.setFormatter(MaskingFormatter(handler.formatter))


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...}` on one line; job fields and access-log fields when present;
    secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == _ACCESS_ARGS:
            client, method, path, version, code = record.args
            entry.update(client=client, method=method, path=path, http_version=version, status_code=code)
            job_id = _job_id_in(str(path))
            if job_id is not None:
                entry["job_id"] = job_id
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return Redactor.scrub(json.dumps(entry, ensure_ascii=False, default=str))


def secrets_of(settings: Settings) -> list[str | None]:
    """What must never be logged: the API key, storage and runpod credentials, and the Redis URL's password."""
    values: list[str | None] = [settings.api_key, *(os.environ.get(name) for name in SECRET_ENV)]
    if settings.redis_url:
        values.append(urlsplit(settings.redis_url).password)
    return values


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def formatter(settings: Settings) -> logging.Formatter:
    """The process's line format, masking secrets."""
    if settings.log_format == "json":
        return JsonFormatter()
    return MaskingFormatter(logging.Formatter(TEXT_FORMAT))


class RedisNoticeFilter(logging.Filter):
    """redis-py 7 warns on every new connection to a Redis without maintenance notifications (any self-hosted
    server): nothing is wrong, so the line is kept for debug logs only (redis-py 8 already says it at debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and "maintenance notifications" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _quiet_redis_notices() -> None:
    connection_log = logging.getLogger("redis.connection")
    if not any(isinstance(f, RedisNoticeFilter) for f in connection_log.filters):
        connection_log.addFilter(RedisNoticeFilter())


def configure_worker_logging(settings: Settings, level: str) -> None:
    """The worker process: its own root handler on stderr, text or JSON."""
    Redactor.add_secrets(secrets_of(settings))
    _quiet_redis_notices()
    handler = logging.StreamHandler(sys.stderr if settings.log_format == "text" else sys.stdout)
    handler.setFormatter(formatter(settings))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    _set_job_log_level(settings, level)


def uvicorn_log_config(settings: Settings, level: str) -> dict[str, Any] | None:
    """For `fasttask serve` with JSON logs: uvicorn's own lines (its access log too) as JSON from the start."""
    if settings.log_format != "json":
        return None
    handler = {
        "formatter": "json",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "fasttask": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }


def configure_api_logging(settings: Settings) -> None:
    """Called when an API process starts serving (however it was started: `fasttask serve`, `app.start()` or
    `uvicorn module:app`): masks secrets on every handler there is, and with JSON logs turns uvicorn's and
    fasttask's handlers to JSON. fasttask's lines get a handler of their own when nothing would take them
    (Python's last-resort handler masks nothing)."""
    Redactor.add_secrets(secrets_of(settings))
    _quiet_redis_notices()
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "fasttask")
    json_mode = settings.log_format == "json"
    ours = logging.getLogger("fasttask")
    if not ours.handlers and (json_mode or not logging.getLogger().handlers):
        own = logging.StreamHandler(sys.stdout if json_mode else sys.stderr)
        own.setFormatter(formatter(settings))
        ours.addHandler(own)
        ours.propagate = False
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if json_mode and not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
            mask_handler(handler)
    if json_mode:  # a line per job state change, whatever the level of fasttask's other lines
        job_log.setLevel(logging.INFO)


def _set_job_log_level(settings: Settings, level: str) -> None:
    # Text logs stay as they were (no line per job) unless asked for debug; JSON logs carry every job.
    verbose = settings.log_format == "json" or level.lower() == "debug"
    job_log.setLevel(logging.INFO if verbose else logging.WARNING)


def _job_id_in(path: str) -> str | None:
    if path.startswith("/jobs/"):
        job_id = path[len("/jobs/") :].split("/", 1)[0].split("?", 1)[0]
        return job_id or None
    if path.startswith("/status?") and "job_id=" in path:
        return path.split("job_id=", 1)[1].split("&", 1)[0] or None
    return None

"""Logging: readable text by default, one JSON object per line with FTAPI_LOG_FORMAT=json, never a secret.

Job state changes go to the `fasttask.jobs` logger with `job_id`, `endpoint`, `status` and (when a job
ends) `duration_ms` as record attributes; the JSON formatter writes them as fields, the text one leaves
them in the message. Every handler fasttask sets up, uvicorn's included, carries a filter that masks the
API key, storage credentials and the Redis password wherever they would appear.
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
from urllib.parse import urlsplit

from .jobs import JobRecord
from .settings import Settings

job_log = logging.getLogger("fasttask.jobs")

FIELDS = ("job_id", "endpoint", "status", "duration_ms")
"""Record attributes the JSON formatter writes as fields when a record has them."""

MASK = "***"
SECRET_ENV = ("FTAPI_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:[a-z0-9_.-]*(?:key|token|secret|password|passwd|signature|credential)[a-z0-9_.-]*)=)[^&#\s]*"
)
_ACCESS_ARGS = 5  # uvicorn's access log: (client, method, path, http version, status code)


def log_job(record: JobRecord, message: str, duration_s: float | None = None) -> None:
    """One job state change on the `fasttask.jobs` logger (callers check `job_log.isEnabledFor(INFO)` first)."""
    extra: dict[str, Any] = {"job_id": record.id, "endpoint": record.endpoint, "status": record.status.value}
    if duration_s is not None:
        extra["duration_ms"] = round(duration_s * 1000, 3)
    job_log.info("job %s %s: %s", record.id, record.endpoint, message, extra=extra)


class Redactor(logging.Filter):
    """Masks known secrets in a record's message and arguments, and secret-looking query parameters."""

    _secrets: ClassVar[frozenset[str]] = frozenset()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def add_secrets(cls, secrets: Iterable[str | None]) -> None:
        with cls._lock:
            cls._secrets = cls._secrets | {s for s in secrets if s and len(s) >= 4}

    @classmethod
    def scrub(cls, text: str) -> str:
        for secret in cls._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "=" in text:
            text = _SECRET_QUERY.sub(r"\1" + MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self.scrub(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...}` on one line; job fields and access-log fields when present."""

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
        return json.dumps(entry, ensure_ascii=False, default=str)


def secrets_of(settings: Settings) -> list[str | None]:
    """What must never be logged: the API key, storage credentials, and the Redis URL's password."""
    values: list[str | None] = [settings.api_key, *(os.environ.get(name) for name in SECRET_ENV)]
    if settings.redis_url:
        values.append(urlsplit(settings.redis_url).password)
    return values


def formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(name)s %(message)s")


def configure_worker_logging(settings: Settings, level: str) -> None:
    """The worker process: its own root handler on stderr, text or JSON."""
    Redactor.add_secrets(secrets_of(settings))
    handler = logging.StreamHandler(sys.stderr if settings.log_format == "text" else sys.stdout)
    handler.setFormatter(formatter(settings))
    handler.addFilter(Redactor())
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
        "filters": ["redact"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": Redactor}},
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
    fasttask's handlers to JSON."""
    Redactor.add_secrets(secrets_of(settings))
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "fasttask")
    json_mode = settings.log_format == "json"
    if json_mode and not logging.getLogger("fasttask").handlers:
        logging.getLogger("fasttask").addHandler(logging.StreamHandler(sys.stdout))
        logging.getLogger("fasttask").propagate = False
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, Redactor) for f in handler.filters):
                handler.addFilter(Redactor())
            if json_mode and not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
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

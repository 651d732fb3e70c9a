"""Settings: read once from FTAPI_* environment variables, overridable by keyword arguments."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib.util
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError

Backend = Literal["fastapi", "runpod"]
QueueKind = Literal["local", "redis"]
LogFormat = Literal["text", "json"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]+", re.IGNORECASE)
"""What a browser sends as `Origin`: a scheme and a host (and port), never a path or a trailing slash."""


@dataclass(frozen=True)
class Settings:
    """Everything a fasttask process is configured by. See README for each variable."""

    backend: Backend = "fastapi"
    deployment: str = "localhost"
    host: str = "127.0.0.1"
    port: int = 8000
    queue: QueueKind = "local"
    redis_url: str | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_public_url: str | None = None
    """Where clients reach the storage; when set, file results are given as presigned URLs against it."""
    s3_inline_kb: float = 256.0
    """File parameters up to this size travel inside the job; larger ones go through the bucket."""
    api_key: str | None = field(default=None, repr=False)
    max_file_mb: float = 1024.0
    max_body_mb: float = 8.0
    """Largest request body besides files: JSON, forms, a multipart body's other fields, the query string."""
    concurrency: int | None = None
    """Jobs one process runs at once; None means the mode's default (4 embedded, 1 per worker)."""
    worker_grace_s: float = 30.0
    runpod_stream: bool = False
    debug: bool = False
    allow_private_urls: bool = False
    metrics: bool = True
    """Count jobs and requests and serve them at /metrics (FTAPI_METRICS=0 turns both off)."""
    log_format: LogFormat = "text"
    """`json`: one JSON object per log line, with job ids (FTAPI_LOG_FORMAT)."""
    cors_origins: tuple[str, ...] = ()
    """Origins browsers may call the API from (`*`: any); empty: no CORS headers (FTAPI_CORS_ORIGINS, commas)."""
    webhook_secret: tuple[str, ...] = field(default=(), repr=False)
    """`whsec_` secrets webhook deliveries are signed with, each adding a signature (FTAPI_WEBHOOK_SECRET, spaces)."""
    webhook_retry_s: tuple[float, ...] = (5.0, 30.0, 300.0, 1800.0, 7200.0, 18000.0)
    """Delays before each retry of a failed webhook delivery (FTAPI_WEBHOOK_RETRY_S, commas)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `environ` (default: os.environ); keyword arguments win."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(f"FTAPI_{name}")
            return value if value not in (None, "") else None

        values: dict[str, Any] = {}
        backend = get("BACKEND")
        deployment = get("DEPLOYMENT")
        if deployment == "serverless" and backend is None:
            backend = "runpod"
        if backend is not None:
            values["backend"] = backend.lower()
        if deployment is not None:
            values["deployment"] = deployment.lower()
        for name, key in (("HOST", "host"), ("REDIS_URL", "redis_url"), ("S3_BUCKET", "s3_bucket")):
            if (value := get(name)) is not None:
                values[key] = value
        if (value := get("S3_ENDPOINT_URL")) is not None:
            values["s3_endpoint_url"] = value
        if (value := get("S3_PUBLIC_URL")) is not None:
            values["s3_public_url"] = value
        if (value := get("API_KEY")) is not None:
            values["api_key"] = value
        for name, key, cast in (
            ("PORT", "port", int),
            ("MAX_FILE_MB", "max_file_mb", float),
            ("MAX_BODY_MB", "max_body_mb", float),
            ("CONCURRENCY", "concurrency", int),
            ("WORKER_GRACE_S", "worker_grace_s", float),
            ("S3_INLINE_KB", "s3_inline_kb", float),
        ):
            if (value := get(name)) is not None:
                try:
                    values[key] = cast(value)
                except ValueError:
                    kind = "a whole number" if cast is int else "a number"
                    raise ConfigError(f"FTAPI_{name}={value!r} is not {kind}") from None
        for name, key in (
            ("RUNPOD_STREAM", "runpod_stream"),
            ("DEBUG", "debug"),
            ("ALLOW_PRIVATE_URLS", "allow_private_urls"),
            ("METRICS", "metrics"),
        ):
            if (value := get(name)) is not None:
                values[key] = _flag(f"FTAPI_{name}", value)
        if (value := get("LOG_FORMAT")) is not None:
            values["log_format"] = value.lower()
        if (value := get("CORS_ORIGINS")) is not None:
            values["cors_origins"] = tuple(origin.strip() for origin in value.split(",") if origin.strip())
        if (value := get("WEBHOOK_SECRET")) is not None:
            values["webhook_secret"] = tuple(value.split())
        if (value := get("WEBHOOK_RETRY_S")) is not None:
            values["webhook_retry_s"] = _delays("FTAPI_WEBHOOK_RETRY_S", value)
        queue = get("QUEUE")
        if queue is not None:
            values["queue"] = queue.lower()
        elif values.get("redis_url") or overrides.get("redis_url"):
            values["queue"] = "redis"
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        if self.backend not in ("fastapi", "runpod"):
            raise ConfigError(f"FTAPI_BACKEND must be 'fastapi' or 'runpod', not {self.backend!r}")
        if self.queue not in ("local", "redis"):
            raise ConfigError(f"FTAPI_QUEUE must be 'local' or 'redis', not {self.queue!r}")
        if self.queue == "redis" and not self.redis_url:
            raise ConfigError("FTAPI_QUEUE=redis needs FTAPI_REDIS_URL")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"FTAPI_LOG_FORMAT must be 'text' or 'json', not {self.log_format!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("FTAPI_CONCURRENCY must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"FTAPI_PORT must be a port number (0-65535), not {self.port}")
        for name, number in (
            ("FTAPI_MAX_FILE_MB", self.max_file_mb),
            ("FTAPI_WORKER_GRACE_S", self.worker_grace_s),
            ("FTAPI_S3_INLINE_KB", self.s3_inline_kb),
        ):
            if not math.isfinite(number) or number < 0:
                raise ConfigError(f"{name} must be a finite number of at least 0, not {number}")
        if self.max_file_mb <= 0:
            raise ConfigError("FTAPI_MAX_FILE_MB must be positive")
        if not 0 < self.max_body_mb < float("inf"):
            raise ConfigError(f"FTAPI_MAX_BODY_MB must be a positive number of megabytes, not {self.max_body_mb!r}")
        if isinstance(self.cors_origins, str):
            raise ConfigError("cors_origins must be a list of origins, not one string")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"FTAPI_CORS_ORIGINS: {origin!r} is not an origin: give scheme://host[:port] without a path "
                    "(https://app.example.com), or *"
                )
        if self.queue == "redis" and self.backend == "fastapi":
            _require_redis_extra()
        if isinstance(self.webhook_secret, str):
            raise ConfigError("webhook_secret must be a list of whsec_ secrets, not one string")
        for secret in self.webhook_secret:
            if not _is_webhook_secret(secret):
                raise ConfigError("FTAPI_WEBHOOK_SECRET: each secret must be whsec_ followed by base64 (spaces apart)")
        if any(not math.isfinite(delay) or delay < 0 for delay in self.webhook_retry_s):
            raise ConfigError("FTAPI_WEBHOOK_RETRY_S must be finite numbers of seconds, at least 0")


def _delays(name: str, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a comma-separated list of seconds") from None


def _is_webhook_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return bool(base64.b64decode(secret[len("whsec_") :], validate=True))
    except binascii.Error:
        return False


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a yes/no value: use 1, true, yes, on or 0, false, no, off")


def _require_redis_extra() -> None:
    """The Redis queue needs redis-py and RQ: say so at start, not with a failing request later."""
    for module in ("redis", "rq"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(
                f"FTAPI_REDIS_URL (the Redis queue) needs the {module!r} package: pip install 'fasttask[redis]'"
            )

"""The worker process of the Redis queue: `fasttask worker MODULE:APP`."""

from __future__ import annotations

from typing import Any

from .main import Worker

__all__ = ["Worker", "execute"]


def execute(path: str, **params: Any) -> Any:
    """The function every fasttask RQ job names. Only a fasttask worker can run it: it needs the app."""
    raise RuntimeError(
        f"fasttask job for {path} was taken by a plain RQ worker; run `fasttask worker MODULE:APP` instead"
    )

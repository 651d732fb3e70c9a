"""`fasttask.worker`: the name RQ records for every fasttask job (`fasttask.worker.execute`), kept importable
so that jobs already stored in Redis still resolve; the worker itself lives in `fasttask.redis`."""

from __future__ import annotations

from ..redis.process import execute, run_worker_process
from ..redis.worker import Worker

__all__ = ["Worker", "execute", "run_worker_process"]

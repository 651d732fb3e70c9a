"""Helpers the tests share that are not fixtures: the apps the tests serve (some loaded by import string, as
`tests.support.cluster_app:app`, in `fasttask serve` / `fasttask worker` subprocesses), redis-server, the
loopback servers, a worker thread, the deployment files' renderer and schemas."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root: subprocesses run from it (or put it on PYTHONPATH) so that `tests.support...` imports."""

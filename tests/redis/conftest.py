"""Fixtures of the Redis queue's tests (the redis-server itself and a clean database are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """API and worker processes on a redis-server of the test's own, all stopped at its end."""
    processes = Cluster(tmp_path)
    yield processes
    processes.close()

"""A fasttask worker in a thread of the test process, for tests of the Redis queue."""

from __future__ import annotations

import threading
from typing import Any

from fasttask import FastTaskAPI


class WorkerThread:
    """A fasttask worker running in a thread of the test process (it shares the tests' probes)."""

    def __init__(self, app: FastTaskAPI, redis_url: str, **options: Any) -> None:
        from fasttask.worker import Worker

        self.worker = Worker(app, redis_url, install_signals=False, grace_s=options.pop("grace_s", 1.0), **options)
        self.thread = threading.Thread(target=self.worker.run, name="test-worker", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the worker did not stop"

"""When the embedded queue forgets its ended jobs: one timer for all of them instead of one per job."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable

logger = logging.getLogger("fasttask")

PURGES_PER_TURN = 1000
"""Jobs purged in one turn of the event loop at most; more due at once are purged in the next turns."""


class Expiries:
    """Job ids and when each is to be purged (after its endpoint's `result_ttl_s`).

    Jobs with one TTL expire in the order they ended, so each TTL keeps a FIFO and only the FIFOs' heads need
    a timer: a queue of a few thousand jobs a second then holds no timer, context or closure per kept job in
    the event loop's heap (which the garbage collector would walk through too).
    """

    def __init__(self, purge: Callable[[str], None]) -> None:
        self._purge = purge
        self._fifos: dict[float, deque[tuple[float, str]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(self, loop: asyncio.AbstractEventLoop, ttl_s: float, job_id: str) -> None:
        due = loop.time() + ttl_s
        fifo = self._fifos.get(ttl_s)
        if fifo is None:
            fifo = self._fifos[ttl_s] = deque()
        fifo.append((due, job_id))
        if due < self._timer_at:
            self._arm(loop, due)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
        self._fifos.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now, budget = loop.time(), PURGES_PER_TURN
        for fifo in self._fifos.values():
            while fifo and fifo[0][0] <= now and budget > 0:
                job_id = fifo.popleft()[1]
                budget -= 1
                try:
                    self._purge(job_id)
                except Exception:  # one job that cannot be let go must not stop the purging of the others
                    logger.exception("purging job %s failed", job_id)
        heads = [fifo[0][0] for fifo in self._fifos.values() if fifo]
        if heads:
            self._arm(loop, now if budget == 0 else min(heads))

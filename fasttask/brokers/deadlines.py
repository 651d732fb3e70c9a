"""Waits that end at a deadline, sharing one event-loop timer instead of holding one each."""

from __future__ import annotations

import asyncio
import heapq
import math

GRANULARITY_S = 0.01
"""Deadlines are rounded up to this: a wait may end this much later than asked, never earlier."""


class Deadlines:
    """Wakes futures at their deadlines.

    A wait for a short job ends long before its deadline, so a timer per wait would be made and cancelled for
    nothing; worse, a cancelled timer stays in the loop's heap until its time comes (30 s for `Prefer:
    wait=30`), one more object for the garbage collector per job. Here waits are grouped by deadline tick:
    a finished wait leaves its group at once, and one timer is armed for the earliest group.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._groups: dict[int, set[asyncio.Future[None]]] = {}
        self._ticks: list[int] = []
        """A heap of the ticks that have (or had) a group; a group that emptied leaves its tick here, skipped."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tick = 0

    def add(self, waiter: asyncio.Future[None], timeout_s: float) -> int:
        """Resolve `waiter` (with None) once `timeout_s` passed, unless it is `discard`ed first; returns the
        token `discard` takes."""
        tick = math.ceil((self._loop.time() + timeout_s) / GRANULARITY_S)
        group = self._groups.get(tick)
        if group is None:
            group = self._groups[tick] = set()
            heapq.heappush(self._ticks, tick)
            if self._timer is None or tick < self._timer_tick:
                self._arm(tick)
        group.add(waiter)
        return tick

    def discard(self, waiter: asyncio.Future[None], token: int) -> None:
        group = self._groups.get(token)
        if group is not None:
            group.discard(waiter)
            if not group:
                del self._groups[token]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._groups.clear()
        self._ticks.clear()

    def _arm(self, tick: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_tick = tick
        self._timer = self._loop.call_at(tick * GRANULARITY_S, self._fire)

    def _fire(self) -> None:
        # the loop runs a timer up to its clock's resolution early: the armed tick counts as come
        due = max(self._timer_tick, math.floor(self._loop.time() / GRANULARITY_S))
        self._timer = None
        ticks = self._ticks
        while ticks and ticks[0] <= due:
            for waiter in self._groups.pop(heapq.heappop(ticks), ()):
                if not waiter.done():
                    waiter.set_result(None)
        while ticks and ticks[0] not in self._groups:  # emptied groups: no timer for them
            heapq.heappop(ticks)
        if ticks:
            self._arm(ticks[0])

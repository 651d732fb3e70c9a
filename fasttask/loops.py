"""Background loops that cannot die, and what their last rounds did.

A process's periodic work (a worker's heartbeat and lease renewal, the cleanup of abandoned jobs, the
storage sweep, pub/sub subscriptions) runs in rounds. A round that raises, whatever it raises, is logged
with the error's type, counted, and tried again after a backoff; the loop itself never ends. `LoopHealth`
keeps each loop's state for `/ready` and `/metrics`, so a loop that keeps failing shows instead of
vanishing: `fasttask_loop_up{loop}` is 0 and `fasttask_loop_failures_total{loop}` grows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .errors import BackendUnavailable

logger = logging.getLogger("fasttask.loops")

MAX_BACKOFF_S = 30.0
"""The longest a failing loop waits between rounds (unless its own interval is longer)."""

SKIPPED = object()
"""What a round returns when it had nothing to do this time (another process had its turn): the loop's
state stays as it was, neither worked nor failed."""

_MAX_ERROR_CHARS = 300
"""An error message kept for /ready is cut here: an exception may carry a whole request or response."""


@dataclass
class LoopState:
    """One loop: how its rounds went."""

    name: str
    failures_total: int = 0
    failing_since: float | None = None
    """Wall-clock time of the first failure of the current run of failures; None while it works."""
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok: float | None = None

    @property
    def ok(self) -> bool:
        return self.failing_since is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": self.failures_total,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "last_ok": self.last_ok,
        }


class LoopHealth:
    """The loops of one broker or worker; safe to update from any thread."""

    def __init__(self) -> None:
        self._loops: dict[str, LoopState] = {}
        self._lock = threading.Lock()

    def register(self, name: str) -> None:
        with self._lock:
            self._loops.setdefault(name, LoopState(name))

    def succeeded(self, name: str) -> None:
        with self._lock:
            state = self._loops.setdefault(name, LoopState(name))
            recovered = state.consecutive_failures
            state.failing_since = None
            state.consecutive_failures = 0
            state.last_ok = time.time()
        if recovered:
            logger.warning("%s works again after %d failed round(s)", name, recovered)

    def failed(self, name: str, exc: BaseException, retry_in_s: float) -> None:
        """Record and log a failed round; the loop tries again in `retry_in_s`."""
        error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        with self._lock:
            state = self._loops.setdefault(name, LoopState(name))
            state.failures_total += 1
            state.consecutive_failures += 1
            state.last_error = error
            if state.failing_since is None:
                state.failing_since = time.time()
            first = state.consecutive_failures == 1
        # the traceback once per run of failures, and only for the unexpected: enough to find a bug, without
        # a flood while Redis or storage is away
        trace = exc if first and not _unreachable(exc) else None
        logger.warning("%s failed (%s); retrying in %.1f s", name, error, retry_in_s, exc_info=trace)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: state.to_json() for name, state in sorted(self._loops.items())}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("fasttask_loop_up", "1 while the background loop's last round worked", labels=["loop"])
        failures = CounterMetricFamily("fasttask_loop_failures", "Failed rounds of a background loop", labels=["loop"])
        with self._lock:
            states = list(self._loops.values())
        for state in states:
            up.add_metric([state.name], 1.0 if state.ok else 0.0)
            failures.add_metric([state.name], state.failures_total)
        yield from (up, failures)


def _unreachable(exc: BaseException) -> bool:
    """Something this process talks to is away (Redis, storage): the message says all there is to say."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (BackendUnavailable, OSError)) or bool(names & {"ConnectionError", "TimeoutError"})


class Backoff:
    """Delays after consecutive failures: `first_s`, doubled each time, at most `max_s`."""

    def __init__(self, first_s: float = 0.5, max_s: float = MAX_BACKOFF_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


def run_round(health: LoopHealth, name: str, step: Callable[[], Any], backoff: Backoff) -> float | None:
    """Run one round of a thread's loop; None when it worked, else the delay before the next try."""
    try:
        outcome = step()
    except Exception as exc:  # a round may fail in any way at all; the loop must go on
        delay = backoff.next_delay()
        health.failed(name, exc, delay)
        return delay
    backoff.reset()
    if outcome is not SKIPPED:
        health.succeeded(name)
    return None


async def run_forever(
    health: LoopHealth,
    name: str,
    step: Callable[[], Awaitable[Any]],
    every_s: float,
    first_backoff_s: float = 0.5,
) -> None:
    """An asyncio loop: `step` every `every_s`; after a failure, again with backoff, until cancelled."""
    health.register(name)
    # a failing loop never waits longer than its usual interval: it tries sooner, then as usual
    backoff = Backoff(min(first_backoff_s, every_s), every_s)
    delay = every_s
    while True:
        await asyncio.sleep(delay)
        try:
            outcome = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # see run_round
            delay = backoff.next_delay()
            health.failed(name, exc, delay)
            continue
        backoff.reset()
        if outcome is not SKIPPED:
            health.succeeded(name)
        delay = every_s


async def stop_tasks(tasks: list[asyncio.Task[Any]], timeout_s: float = 5.0) -> None:
    """Cancel background tasks and wait for them to end, at most `timeout_s` in all.

    A task is cancelled again until it ends: code it awaits (a client library's retry, a broad `except`)
    may swallow one cancellation, and shutting down must not hang on it.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            names = ", ".join(sorted(task.get_name() for task in pending))
            logger.warning("background tasks still running at shutdown, left behind: %s", names)
            return
        _, pending = await asyncio.wait(pending, timeout=min(0.2, remaining))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("background task %s had failed: %r", task.get_name(), task.exception())

"""An API process's one subscription to the job-change channel, waking the requests that wait on a job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis

from ..loops import Backoff, LoopHealth
from . import keys as layout

SUBSCRIPTION = "job events subscription"
"""The loop's name in `/health`'s loop report."""


class JobChanges:
    """Who waits on which job in this process, and the subscription that wakes them.

    Workers and API processes publish a job's id on one channel whenever it changes; a waiter gets an
    `asyncio.Event` that is set on each change (and on every reconnect, since messages sent while the
    subscription was down are lost), then re-reads the job itself.
    """

    def __init__(self, redis: aioredis.Redis, loops: LoopHealth) -> None:
        self._redis = redis
        self._loops = loops
        self._waiters: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watching(self, job_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]

    async def listen(self) -> None:
        """Wake local waiters when a job changes; reconnect with backoff when Redis goes away."""
        self._loops.register(SUBSCRIPTION)
        backoff = Backoff(0.1, 5.0)
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(layout.EVENTS_CHANNEL)
                backoff.reset()
                self._loops.succeeded(SUBSCRIPTION)
                self.wake_all()  # anything that changed while we were away
                async for message in pubsub.listen():
                    self.wake(message.get("data"))
            except asyncio.CancelledError:
                await _close(pubsub)
                raise
            except Exception as exc:  # whatever ended the subscription, it is made again
                delay = backoff.next_delay()
                self._loops.failed(SUBSCRIPTION, exc, delay)
            else:
                delay = backoff.next_delay()
            with contextlib.suppress(Exception):
                await _close(pubsub)
            self.wake_all()
            await asyncio.sleep(delay)

    def wake(self, data: Any) -> None:
        """A job id was published: wake whoever waits on it here (anything else on the channel is ignored)."""
        job_id = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        waiters = self._waiters.get(job_id)
        if waiters:
            for event in waiters:
                event.set()

    def wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()


async def _close(pubsub: Any) -> None:
    """redis-py's PubSub.aclose carries no type hints."""
    await pubsub.aclose()

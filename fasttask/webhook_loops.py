"""The two webhook loops of an API process, and where their watches and deliveries are kept.

`WebhookService.watch` starts watching a job when it is submitted with a webhook. The *events* loop claims
the watches that are due, reads each job through its broker (as a stream would) and stores the deliveries
its changes make, in one compare-and-set with the new watch, so two processes that read the same change
store it once. The *deliveries* loop claims due deliveries (a claim hides them from other processes for
`DELIVERY_LEASE_S`, longer than an attempt may take), sends them and stores the outcome. The store is the
seam: `MemoryStore` here for the embedded queue, `redis.webhooks.RedisWebhookStore` for the Redis queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from .errors import JobNotFound
from .loops import SKIPPED, LoopHealth, run_forever, stop_tasks
from .metrics import JobMetrics
from .settings import Settings
from .webhooks import DELIVERY_TIMEOUT_S, Delivery, Watch, WebhookSpec, deliveries_for, send

if TYPE_CHECKING:
    from .brokers.base import Broker

logger = logging.getLogger("fasttask.webhooks")

EVERY_S = 0.25
"""How often each loop looks for work: the delay a job's change or a due retry may wait."""
QUIET_EVERY_S = 1.0
"""How often a watched job that has not changed for a few rounds is looked at (each look costs a few
Redis commands in the Redis queue)."""
WATCH_LEASE_S = 30.0
DELIVERY_LEASE_S = 60.0
"""A claimed delivery is hidden from other processes this long; if its process dies meanwhile, another
sends it again after that (with the same `webhook-id`, so the receiver can tell)."""
AFTER_WAIT_S = 0.5
"""How soon a `completed` waiting on its job's `start` delivery looks again."""
MISSING_GRACE_S = 60.0
"""A watched job that cannot be found this long after its submit was never accepted, or expired."""
BATCH = 64
MAX_IN_FLIGHT = 64


class WebhookStore(ABC):
    """Where watches and deliveries wait; claims are atomic, so each is handled by one process at a time."""

    @abstractmethod
    async def watch(self, job_id: str, watch: Watch) -> None: ...

    @abstractmethod
    async def unwatch(self, job_id: str) -> None:
        """Forget a watch (its submit was refused)."""

    @abstractmethod
    async def claim_watches(self, now: float, until: float, limit: int) -> list[tuple[str, str]]:
        """Watches due by `now`, as (job id, watch text), hidden from other claims until `until`."""

    @abstractmethod
    async def advance(
        self, job_id: str, old: str, new: Watch | None, deliveries: list[Delivery], next_at: float
    ) -> bool:
        """If the watch is still `old`: store `new` (None ends it), due again at `next_at`, and the deliveries."""

    @abstractmethod
    async def claim_deliveries(self, now: float, until: float, limit: int) -> list[Delivery]: ...

    @abstractmethod
    async def pending(self, delivery_id: str) -> bool:
        """Whether the delivery still waits to be delivered or given up."""

    @abstractmethod
    async def retry(self, delivery: Delivery, due: float) -> None:
        """Keep the delivery (its attempts counted) and make it due again at `due`."""

    @abstractmethod
    async def settle(self, delivery: Delivery) -> None:
        """The delivery is done with: delivered, or given up."""

    @abstractmethod
    async def record_state(self, job_id: str, state: dict[str, Any]) -> None:
        """The job JSON's `webhook` field, after an attempt of its `completed` delivery."""

    @abstractmethod
    async def stop(self, job_id: str) -> None:
        """A 410: no more deliveries of this job are sent."""

    @abstractmethod
    async def stopped(self, job_id: str) -> bool: ...

    @abstractmethod
    async def backlog(self) -> int:
        """Watches and deliveries not done with yet (0: nothing left to send)."""


class MemoryStore(WebhookStore):
    """The embedded queue's store: dicts on the event loop; `on_state` updates the job's record."""

    def __init__(self, on_state: Callable[[str, dict[str, Any]], None]) -> None:
        self._on_state = on_state
        self._watches: dict[str, tuple[float, str]] = {}
        self._deliveries: dict[str, tuple[float, Delivery]] = {}
        self._stopped: dict[str, float] = {}

    async def watch(self, job_id: str, watch: Watch) -> None:
        self._watches[job_id] = (0.0, watch.dumps())

    async def unwatch(self, job_id: str) -> None:
        self._watches.pop(job_id, None)

    async def claim_watches(self, now: float, until: float, limit: int) -> list[tuple[str, str]]:
        due = [(job_id, text) for job_id, (at, text) in self._watches.items() if at <= now][:limit]
        for job_id, text in due:
            self._watches[job_id] = (until, text)
        return due

    async def advance(
        self, job_id: str, old: str, new: Watch | None, deliveries: list[Delivery], next_at: float
    ) -> bool:
        current = self._watches.get(job_id)
        if current is None or current[1] != old:
            return False
        if new is None:
            del self._watches[job_id]
        else:
            self._watches[job_id] = (next_at, new.dumps())
        for delivery in deliveries:
            self._deliveries[delivery.id] = (0.0, delivery)
        return True

    async def claim_deliveries(self, now: float, until: float, limit: int) -> list[Delivery]:
        due = [delivery for at, delivery in self._deliveries.values() if at <= now][:limit]
        for delivery in due:
            self._deliveries[delivery.id] = (until, delivery)
        return due

    async def pending(self, delivery_id: str) -> bool:
        return delivery_id in self._deliveries

    async def retry(self, delivery: Delivery, due: float) -> None:
        self._deliveries[delivery.id] = (due, delivery)

    async def settle(self, delivery: Delivery) -> None:
        self._deliveries.pop(delivery.id, None)

    async def record_state(self, job_id: str, state: dict[str, Any]) -> None:
        self._on_state(job_id, state)

    async def stop(self, job_id: str) -> None:
        now = time.time()
        for old in [key for key, at in self._stopped.items() if at < now - 86400]:
            del self._stopped[old]  # a day is longer than any retry schedule worth keeping
        self._stopped[job_id] = now

    async def stopped(self, job_id: str) -> bool:
        return job_id in self._stopped

    async def backlog(self) -> int:
        return len(self._watches) + len(self._deliveries)


class WebhookService:
    """A process's webhook loops over one store; they report in the broker's `LoopHealth`."""

    def __init__(
        self, store: WebhookStore, broker: Broker, settings: Settings, loops: LoopHealth, metrics: JobMetrics | None
    ) -> None:
        self.store = store
        self._broker = broker
        self._keys = settings.webhook_secret
        self._retry_s = settings.webhook_retry_s
        self._allow_private = settings.allow_private_urls
        self._loops = loops
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._sending: set[str] = set()
        """Deliveries whose attempt is under way (an id stays when its attempt is cut short by shutdown)."""
        self._client: httpx.AsyncClient | None = None

    async def watch(self, job_id: str, spec: WebhookSpec) -> None:
        await self.store.watch(job_id, Watch(spec.url, list(spec.events), time.time()))

    def start(self) -> None:
        timeout = httpx.Timeout(DELIVERY_TIMEOUT_S)
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        self._tasks = [
            asyncio.create_task(run_forever(self._loops, "webhook events", self._scan, EVERY_S), name="ft-wh-events"),
            asyncio.create_task(run_forever(self._loops, "webhook deliveries", self._send, EVERY_S), name="ft-wh-send"),
        ]

    async def close(self) -> None:
        in_flight = dict(self._in_flight)
        await stop_tasks([*self._tasks, *in_flight])
        # attempts cut short are due again at once, for the next process, rather than when their claim runs out
        for delivery in in_flight.values():
            if delivery.id in self._sending:
                with contextlib.suppress(Exception):
                    await self.store.retry(delivery, time.time())
        if self._client is not None:
            await self._client.aclose()

    # -- the events loop ---------------------------------------------------------------------------
    async def _scan(self) -> object:
        now = time.time()
        claimed = await self.store.claim_watches(now, now + WATCH_LEASE_S, BATCH)
        # a round that found nothing still worked: the store answered (a loop that failed recovers by it)
        await asyncio.gather(*(self._advance(job_id, text, now) for job_id, text in claimed))
        return None

    async def _advance(self, job_id: str, text: str, now: float) -> None:
        try:
            watch = Watch.loads(text)
        except (ValueError, TypeError) as exc:  # written by another version: dropped, not retried forever
            logger.warning("webhook watch of job %s cannot be read (%s); it ends", job_id, exc)
            await self.store.advance(job_id, text, None, [], now)
            return
        job, outputs = await self._snapshot(job_id, watch.outputs)
        if job is None:
            gone = now - watch.since > MISSING_GRACE_S
            await self.store.advance(job_id, text, None if gone else watch, [], now + QUIET_EVERY_S)
            return
        new, made = deliveries_for(watch, job, outputs, now)
        next_at = now + EVERY_S
        if new is not None:
            new.quiet = 0 if made or new != watch else watch.quiet + 1
            next_at = now + min(EVERY_S * 2**new.quiet, QUIET_EVERY_S)
        await self.store.advance(job_id, text, new, made, next_at)

    async def _snapshot(self, job_id: str, after_outputs: int) -> tuple[dict[str, Any] | None, list[Any]]:
        """The job JSON and its outputs past `after_outputs`, read as a stream reads them (None: no such job)."""
        try:
            events = await self._broker.open_stream(job_id, after_outputs)
        except JobNotFound:
            return None, []
        outputs: list[Any] = []
        try:
            async for event in events:
                if event.kind == "output":
                    outputs.append(event.data)
                else:
                    return event.data, outputs
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        return None, []

    # -- the deliveries loop -----------------------------------------------------------------------
    async def _send(self) -> object:
        room = MAX_IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return SKIPPED
        now = time.time()
        claimed = await self.store.claim_deliveries(now, now + DELIVERY_LEASE_S, min(room, BATCH))
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(delivery), name=f"ft-wh-{delivery.id}")
            self._in_flight[task] = delivery
            task.add_done_callback(self._forget)
        return None

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            await self._attempt(delivery)
        except Exception as exc:  # the store is away: the claim runs out and the delivery comes round again
            logger.warning("webhook delivery %s of job %s: %s", delivery.id, delivery.job_id, exc)

    async def _attempt(self, delivery: Delivery) -> None:
        store = self.store
        if await store.stopped(delivery.job_id):
            await store.settle(delivery)
            return
        if delivery.after is not None and await store.pending(delivery.after):
            await store.retry(delivery, time.time() + AFTER_WAIT_S)  # not an attempt: its start comes first
            return
        assert self._client is not None
        self._sending.add(delivery.id)
        try:
            attempt = await send(self._client, delivery, self._keys, self._allow_private)
        except asyncio.CancelledError:
            raise  # shutting down: it stays marked, and close() makes it due again
        except BaseException:
            self._sending.discard(delivery.id)
            raise
        self._sending.discard(delivery.id)
        delivery.attempts += 1
        more = attempt.status != 410 and delivery.attempts <= len(self._retry_s)
        outcome = "delivered" if attempt.delivered else "retried" if more else "gave_up"
        if self._metrics is not None:
            self._metrics.webhook_attempts[(delivery.endpoint, outcome)] += 1
        if not attempt.delivered:
            answer = attempt.error if attempt.status is None else f"HTTP {attempt.status}"
            logger.info("webhook delivery %s of job %s: %s (%s)", delivery.id, delivery.job_id, answer, outcome)
        if delivery.completed:
            state = {"attempts": delivery.attempts, "last_status": attempt.status, "delivered": attempt.delivered}
            await store.record_state(delivery.job_id, state)
        if attempt.status == 410:
            await store.stop(delivery.job_id)
        if outcome == "retried":
            await store.retry(delivery, time.time() + self._retry_s[delivery.attempts - 1])
        else:
            await store.settle(delivery)

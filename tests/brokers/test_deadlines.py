"""`Deadlines`: the embedded queue's waits share one event-loop timer; each still ends at its own deadline."""

from __future__ import annotations

import asyncio
import time

from fasttask import FastTaskAPI
from fasttask.brokers.deadlines import GRANULARITY_S, Deadlines
from fasttask.brokers.local import LocalBroker
from fasttask.jobs import JobStatus


def test_a_wait_ends_at_its_deadline_never_before() -> None:
    async def main() -> None:
        deadlines = Deadlines(asyncio.get_running_loop())
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        deadlines.add(waiter, 0.12)
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - started >= 0.12 - 0.002  # the monotonic clocks of loop and test may differ by µs
        deadlines.close()

    asyncio.run(main())


def test_waits_end_in_the_order_of_their_deadlines_with_one_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        ended: list[float] = []
        timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
        waiters = []
        for timeout in (0.3, 0.1, 0.2, 0.1 + GRANULARITY_S / 3):  # the last shares the 0.1 group
            waiter: asyncio.Future[None] = loop.create_future()
            waiter.add_done_callback(lambda _, timeout=timeout: ended.append(timeout))
            deadlines.add(waiter, timeout)
            waiters.append(waiter)
        assert len(loop._scheduled) - timers_before <= 2  # type: ignore[attr-defined]  # one armed (+ one cancelled)
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        assert sorted(ended[:2]) == [0.1, 0.1 + GRANULARITY_S / 3]  # one group or two: either order in it
        assert ended[2:] == [0.2, 0.3]
        deadlines.close()

    asyncio.run(main())


def test_a_discarded_wait_is_left_alone_and_leaves_nothing_behind() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        kept: asyncio.Future[None] = loop.create_future()
        dropped: asyncio.Future[None] = loop.create_future()
        deadlines.add(kept, 0.15)
        deadlines.discard(dropped, deadlines.add(dropped, 0.05))
        for _ in range(1000):  # waits that ended early (their jobs did) keep nothing
            early: asyncio.Future[None] = loop.create_future()
            deadlines.discard(early, deadlines.add(early, 30))
        assert len(deadlines._groups) == 1  # only kept's
        await asyncio.sleep(0.1)
        assert not dropped.done(), "a discarded wait is not woken"
        await asyncio.wait_for(kept, 5)
        deadlines.close()

    asyncio.run(main())


def test_a_wait_added_after_the_timer_fired_is_woken_too() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        for _ in range(3):  # the timer re-arms after each time it ran dry
            waiter: asyncio.Future[None] = loop.create_future()
            deadlines.add(waiter, 0.02)
            await asyncio.wait_for(waiter, 5)
        deadlines.close()

    asyncio.run(main())


def test_a_broker_started_again_on_a_new_loop_still_waits() -> None:
    """An app served twice (two TestClients, two `asyncio.run`s): its waits use the new loop, not the old one."""
    app = FastTaskAPI(title="twice")

    @app.task_endpoint("/slow")
    def slow() -> str:
        time.sleep(0.05)  # still running when the wait begins: the wait needs its deadline
        return "ok"

    broker = LocalBroker(app.tasks, app.settings)

    async def session() -> None:
        await broker.start()
        try:
            record = await broker.submit(app.tasks["/slow"], {})
            assert (await broker.wait(record.id, 0.01)).status is not JobStatus.FINISHED  # its deadline came
            assert (await broker.wait(record.id, 10)).status is JobStatus.FINISHED
        finally:
            await broker.close()

    asyncio.run(session())
    asyncio.run(session())

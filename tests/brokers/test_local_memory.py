"""What the embedded queue keeps of an ended job until its `result_ttl_s`, and how it forgets it.

A queue that serves thousands of jobs a second holds every ended job for an hour by default: each object a
kept job holds is one more the garbage collector walks through on every full collection, so a kept job must
hold its record and little else (no events, locks, timers, tasks or closures).
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Iterator

import pytest

from fasttask import FastTaskAPI, JobProgress
from fasttask.brokers.expiry import PURGES_PER_TURN, Expiries
from fasttask.brokers.local import LocalBroker
from fasttask.errors import JobNotFound
from fasttask.jobs import JobStatus


def _app() -> FastTaskAPI:
    app = FastTaskAPI(title="memory")

    @app.task_endpoint("/sync", queue_size=1000)
    def sync_task(job_progress: JobProgress) -> str:
        job_progress.set_status(0.5, "half")
        return "ok"

    @app.task_endpoint("/async", queue_size=1000)
    async def async_task() -> str:
        return "ok"

    @app.task_endpoint("/parts", queue_size=1000)
    def parts() -> Iterator[int]:
        yield from range(3)

    return app


def test_an_ended_job_keeps_its_record_and_little_else() -> None:
    app = _app()

    async def main() -> tuple[Counter[str], int]:
        broker = LocalBroker(app.tasks, app.settings)
        await broker.start()
        try:
            for _ in range(3):  # warm: every thread of the pool started, caches filled
                warm = [await broker.submit(app.tasks[path], {}) for path in ("/sync", "/async", "/parts") * 4]
                await asyncio.gather(*(broker.wait(record.id, 10) for record in warm))
            gc.collect()
            before = Counter(type(item).__name__ for item in gc.get_objects())
            jobs = 300
            for index in range(jobs):
                record = await broker.submit(app.tasks[("/sync", "/async", "/parts")[index % 3]], {})
                record = await broker.wait(record.id, 10)
                assert record.status is JobStatus.FINISHED
            await asyncio.sleep(0.05)  # the runs' own ends
            gc.collect()
            after = Counter(type(item).__name__ for item in gc.get_objects())
            return after - before, jobs
        finally:
            await broker.close()

    grown, jobs = asyncio.run(main())
    # the job and its record; a generator job its outputs and its result (a list each); nothing of asyncio or
    # threading, no closures: before, a kept job held 22 objects the collector tracks
    assert grown["LocalJob"] == grown["JobRecord"] == jobs, grown.most_common(12)
    assert grown["list"] <= 2 * jobs // 3 + 10, grown.most_common(12)
    rest = sum(grown.values()) - 2 * jobs - grown["list"]
    assert rest < jobs // 2, grown.most_common(12)  # (a few dozen come from the test run itself)
    for kind in ("Event", "Condition", "Task", "coroutine", "TimerHandle", "Future", "function", "cell"):
        assert grown[kind] < jobs // 20, (kind, grown[kind])


def test_streams_and_waits_still_follow_a_running_job() -> None:
    app = _app()

    async def main() -> None:
        broker = LocalBroker(app.tasks, app.settings)
        await broker.start()
        try:
            record = await broker.submit(app.tasks["/parts"], {})
            events = [event async for event in await broker.open_stream(record.id)]
            assert [event.kind for event in events][-1] == "end"
            assert [event.data for event in events if event.kind == "output"] == [0, 1, 2]
            again = [event async for event in await broker.open_stream(record.id, after_outputs=1)]
            assert [event.data for event in again if event.kind == "output"] == [1, 2]
            waits = [broker.wait((await broker.submit(app.tasks["/sync"], {})).id, 10) for _ in range(5)]
            assert all(done.status is JobStatus.FINISHED for done in await asyncio.gather(*waits))
        finally:
            await broker.close()

    asyncio.run(main())


def test_expiries_purge_in_order_with_one_timer_for_several_ttls() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        purged: list[str] = []
        expiries = Expiries(purged.append)
        expiries.add(loop, 0.3, "late-1")
        expiries.add(loop, 0.3, "late-2")
        expiries.add(loop, 0.05, "early")  # a shorter TTL added later re-arms the timer earlier
        await asyncio.sleep(0.15)
        assert purged == ["early"]
        await asyncio.sleep(0.3)
        assert purged == ["early", "late-1", "late-2"]
        expiries.add(loop, 0.05, "closed")
        expiries.close()
        await asyncio.sleep(0.1)
        assert purged == ["early", "late-1", "late-2"], "closed: nothing more is purged"

    asyncio.run(main())


def test_a_purge_that_fails_stops_neither_the_others_nor_later_ones(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        purged: list[str] = []

        def purge(job_id: str) -> None:
            if job_id == "broken":
                raise OSError("a result file would not close")
            purged.append(job_id)

        expiries = Expiries(purge)
        for job_id in ("first", "broken", "after"):
            expiries.add(loop, 0.01, job_id)
        await asyncio.sleep(0.1)
        expiries.add(loop, 0.01, "later")
        await asyncio.sleep(0.1)
        assert purged == ["first", "after", "later"]

    asyncio.run(main())
    assert "purging job broken failed" in caplog.text


def test_a_burst_of_expiries_is_purged_over_several_turns() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        purged: list[str] = []
        expiries = Expiries(purged.append)
        for index in range(PURGES_PER_TURN + 10):
            expiries.add(loop, 0.0, f"job-{index}")
        await asyncio.sleep(0.01)
        assert len(purged) == PURGES_PER_TURN + 10
        assert purged[:3] == ["job-0", "job-1", "job-2"]

    asyncio.run(main())


def test_the_broker_forgets_a_job_after_its_result_ttl() -> None:
    app = FastTaskAPI(title="ttl")

    @app.task_endpoint("/short", result_ttl=0.2)
    def short() -> str:
        return "ok"

    async def main() -> None:
        broker = LocalBroker(app.tasks, app.settings)
        await broker.start()
        try:
            record = await broker.wait((await broker.submit(app.tasks["/short"], {})).id, 10)
            assert (await broker.get(record.id)).status is JobStatus.FINISHED
            await asyncio.sleep(0.4)
            try:
                await broker.get(record.id)
            except JobNotFound:
                return
            raise AssertionError("the job was kept past its result_ttl_s")
        finally:
            await broker.close()

    asyncio.run(main())

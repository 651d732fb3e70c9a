"""`JobThreads`: the threads `def` tasks run on, and the hop there and back from an event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from fasttask.threads import JobThreads


def test_a_call_runs_on_a_thread_and_hands_back_its_value_or_its_error() -> None:
    async def main() -> None:
        threads = JobThreads(2, "test-job")
        try:
            name = await threads.run(lambda: threading.current_thread().name)
            assert name.startswith("test-job_") and name != threading.current_thread().name
            assert await threads.run(divmod, 7, 2) == (3, 1)
            with pytest.raises(ZeroDivisionError):
                await threads.run(divmod, 1, 0)
            with pytest.raises(KeyboardInterrupt):  # a BaseException reaches the caller, the thread lives on
                await threads.run(_raise, KeyboardInterrupt())
            assert await threads.run(int, "5") == 5
        finally:
            threads.shutdown()

    asyncio.run(main())


def _raise(exc: BaseException) -> None:
    raise exc


def test_threads_start_as_calls_need_them_and_never_more_than_size() -> None:
    async def main() -> None:
        threads = JobThreads(3, "test-job")
        try:
            for _ in range(20):  # one call at a time: one thread does
                await threads.run(int, "1")
            assert len(threads._threads) == 1
            gate = threading.Event()
            running = [threads.run(gate.wait, 5) for _ in range(6)]
            tasks = [asyncio.ensure_future(call) for call in running]
            await asyncio.sleep(0.1)
            assert len(threads._threads) == 3, "at most size threads, however many calls wait"
            gate.set()
            assert await asyncio.gather(*tasks) == [True] * 6
            names = {thread.name for thread in threads._threads}
            assert len(names) == 3
        finally:
            threads.shutdown()

    asyncio.run(main())


def test_what_a_call_schedules_on_the_loop_comes_before_its_end() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[Any] = []
        threads = JobThreads(1, "test-job")

        def generate() -> str:
            for item in range(50):
                loop.call_soon_threadsafe(seen.append, item)
            return "end"

        try:
            for _ in range(20):
                seen.clear()
                result = await threads.run(generate)
                assert (seen, result) == (list(range(50)), "end")
        finally:
            threads.shutdown()

    asyncio.run(main())


def test_shutdown_cancels_calls_not_started_and_lets_running_ones_end() -> None:
    async def main() -> None:
        threads = JobThreads(1, "test-job")
        gate, ran = threading.Event(), []
        running = asyncio.ensure_future(threads.run(gate.wait, 5))
        waiting = asyncio.ensure_future(threads.run(ran.append, "never"))
        await asyncio.sleep(0.05)
        threads.shutdown()
        gate.set()
        assert await running is True
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert ran == []
        with pytest.raises(RuntimeError, match="shut down"):
            await threads.run(int, "1")
        threads._threads[0].join(5)
        assert not threads._threads[0].is_alive(), "the thread exits after its call"

    asyncio.run(main())


def test_a_call_whose_caller_went_away_does_not_stop_the_threads() -> None:
    threads = JobThreads(1, "test-job")
    gate = threading.Event()

    async def abandon() -> None:  # the loop closes while the call still runs
        pending = asyncio.ensure_future(threads.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        assert not pending.done()

    asyncio.run(abandon())
    gate.set()  # the call ends and finds its loop closed

    async def again() -> int:
        return await threads.run(int, "7")

    try:
        assert asyncio.run(again()) == 7
    finally:
        threads.shutdown()

"""The threads `def` tasks run on, and the hop from an event loop to one of them and back."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class JobThreads:
    """At most `size` threads, started as calls need them and kept, running calls handed over from an event loop.

    What `loop.run_in_executor` does, for a third of its cost per call: no `concurrent.futures.Future` (a
    lock and a condition per call) chained to an asyncio one by callbacks; a thread takes the call from a
    queue and hands the outcome back with one `call_soon_threadsafe`. Outcomes are handed back in the
    order the calls ended, after anything the call itself scheduled on the loop that way (a generator's
    outputs). A call whose awaiting task is cancelled still runs to its end: a thread cannot be interrupted.
    """

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("JobThreads needs at least one thread")
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        """Calls handed over and not ended yet: a new thread starts only when every one is taken."""
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on one of the threads; its return value, or what it raised."""
        if self._closed:
            raise RuntimeError(f"{self.name}: the threads were shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._busy += 1
            if self._busy > len(self._threads) and len(self._threads) < self.size:
                self._start_thread()
        self._queue.put((loop, future, fn, args))
        return await future

    def shutdown(self) -> None:
        """Calls not started yet are cancelled; running ones end on their own; each thread exits after."""
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                loop, future, _, _ = item
                _hand_back(loop, _cancel, future)
        for _ in self._threads:
            self._queue.put(None)

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, fn, args = item
            try:
                value = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, as an executor would
                self._ended()
                _hand_back(loop, _fail, future, exc)
            else:
                self._ended()
                _hand_back(loop, _succeed, future, value)
            del item, future, fn, args  # nothing of a finished call stays alive in an idle thread

    def _ended(self) -> None:
        with self._lock:
            self._busy -= 1


def _hand_back(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle, *args)


def _succeed(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future[Any]) -> None:
    future.cancel()

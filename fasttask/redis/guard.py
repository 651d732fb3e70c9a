"""Stopping the running job from outside it: timeouts, cancels and the shutdown grace period.

A task is asked first (its next `set_status` raises), then interrupted (an exception raised in the
thread running it, or the cancellation of an async task), and if the code still does not let go,
the worker process replaces itself so that nothing stays stuck.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("fasttask.worker")

ASK_FIRST_S = 1.0
"""How long a stopped task gets to notice on its own (at a `set_status`) before it is interrupted."""


class JobInterrupted(BaseException):
    """Raised inside a task the worker had to stop (timeout, cancel or shutdown)."""


@dataclass(eq=False)
class Watch:
    """What the guard knows of the job in hand."""

    job_id: str
    deadline: float | None
    stop: threading.Event
    interrupt: Callable[[], None]
    reason: str | None = None
    asked_at: float | None = None
    interrupted_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Guard(threading.Thread):
    """Watches the running job's deadline and stop requests from a thread of its own."""

    def __init__(
        self,
        on_timeout: Callable[[str], None],
        on_shutdown_deadline: Callable[[str], None],
        replace_process: Callable[[str], None],
        stuck_after_s: float,
    ) -> None:
        super().__init__(name="fasttask-guard", daemon=True)
        self._on_timeout = on_timeout
        self._on_shutdown_deadline = on_shutdown_deadline
        self._replace_process = replace_process
        self._stuck_after_s = stuck_after_s
        self._lock = threading.Condition()
        self._watch: Watch | None = None
        self._shutdown_deadline: float | None = None
        self._closed = False

    def watch(self, watch: Watch) -> None:
        with self._lock:
            self._watch = watch
            self._lock.notify()

    def release(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.done.set()
            self._watch = None
            self._lock.notify()

    def request_stop(self, job_id: str, reason: str) -> bool:
        """Stop the job in hand if it is `job_id` (a cancel). Returns whether it was."""
        with self._lock:
            watch = self._watch
            if watch is None or watch.job_id != job_id:
                return False
            self._ask(watch, reason)
            self._lock.notify()
            return True

    def shutdown_after(self, grace_s: float) -> None:
        with self._lock:
            self._shutdown_deadline = time.monotonic() + grace_s
            self._lock.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()

    def run(self) -> None:
        with self._lock:
            while not self._closed:
                self._lock.wait(self._next_check())
                try:
                    self._check()
                except Exception:  # the guard must outlive any failure: without it no job is ever stopped
                    logger.exception("checking the job in hand failed; the guard goes on")

    def _check(self) -> None:
        """One look at the job in hand (with the lock held): deadlines, then asking, interrupting, replacing."""
        watch = self._watch
        if watch is None:
            return
        now = time.monotonic()
        if watch.reason is None and watch.deadline is not None and now >= watch.deadline:
            self._ask(watch, "timeout")
            self._call_unlocked(self._on_timeout, watch.job_id)
        if watch.reason is None and self._shutdown_deadline is not None and now >= self._shutdown_deadline:
            self._ask(watch, "shutdown")
            self._call_unlocked(self._on_shutdown_deadline, watch.job_id)
        if watch.done.is_set() or watch.asked_at is None:
            return
        # the task gets a moment to notice at its next set_status (JobCancelled) before it is interrupted
        if watch.interrupted_at is None and now >= watch.asked_at + ASK_FIRST_S:
            watch.interrupted_at = now
            watch.interrupt()
        elif watch.interrupted_at is not None and now >= watch.interrupted_at + self._stuck_after_s:
            logger.error("job %s ignores being stopped (%s); replacing this process", watch.job_id, watch.reason)
            self._call_unlocked(self._replace_process, watch.job_id)
            watch.interrupted_at = now  # if replacing is not possible here, try again later

    def _ask(self, watch: Watch, reason: str) -> None:
        watch.reason = reason
        watch.asked_at = time.monotonic()
        watch.stop.set()

    def _call_unlocked(self, action: Callable[[str], None], job_id: str) -> None:
        self._lock.release()
        try:
            action(job_id)
        except Exception:
            logger.exception("while stopping job %s", job_id)
        finally:
            self._lock.acquire()

    def _next_check(self) -> float:
        watch = self._watch
        if watch is None:
            return 1.0
        moments = [time.monotonic() + 0.1] if watch.asked_at is not None else []
        if watch.deadline is not None:
            moments.append(watch.deadline)
        if self._shutdown_deadline is not None:
            moments.append(self._shutdown_deadline)
        if not moments:
            return 1.0
        return max(0.0, min(moments) - time.monotonic())


def interrupter(thread: threading.Thread, use_signal: bool) -> Callable[[], None]:
    """A function that raises JobInterrupted in `thread` at its next Python instruction.

    In the main thread a signal does it, which also breaks out of `time.sleep` and blocking waits;
    elsewhere the interpreter's asynchronous-exception hook does (after the blocking call returns).
    """
    ident = thread.ident
    assert ident is not None
    if use_signal:
        return lambda: signal.pthread_kill(ident, signal.SIGUSR1)

    def raise_in_thread() -> None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(JobInterrupted))

    return raise_in_thread


def install_interrupt_signal(is_stopping: Callable[[], bool]) -> None:
    """Make SIGUSR1 raise JobInterrupted in the main thread while the job in hand is being stopped."""

    def handler(signum: int, frame: object) -> None:
        if is_stopping():
            raise JobInterrupted("the job was stopped")

    signal.signal(signal.SIGUSR1, handler)

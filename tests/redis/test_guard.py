"""The worker's stop guard on its own: asking a task to stop, interrupting it, replacing the process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from fasttask.redis import guard as guard_module
from fasttask.redis.guard import Guard, Watch


class Calls:
    """What the guard did, as events a test can wait on."""

    def __init__(self) -> None:
        self.timed_out: list[str] = []
        self.cut_off: list[str] = []
        self.replaced: list[str] = []
        self.interrupted = threading.Event()
        self.replaced_event = threading.Event()
        self.timeout_event = threading.Event()
        self.shutdown_event = threading.Event()

    def on_timeout(self, job_id: str) -> None:
        self.timed_out.append(job_id)
        self.timeout_event.set()

    def on_shutdown(self, job_id: str) -> None:
        self.cut_off.append(job_id)
        self.shutdown_event.set()

    def replace(self, job_id: str) -> None:
        self.replaced.append(job_id)
        self.replaced_event.set()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def guard(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    monkeypatch.setattr(guard_module, "ASK_FIRST_S", 0.05)
    running = Guard(calls.on_timeout, calls.on_shutdown, calls.replace, stuck_after_s=0.1)
    running.start()
    yield running
    running.close()
    running.join(5)
    assert not running.is_alive()


def watch(calls: Calls, job_id: str = "job-1", deadline: float | None = None) -> Watch:
    return Watch(job_id, deadline, threading.Event(), calls.interrupted.set)


def test_a_cancel_asks_then_interrupts_then_replaces_the_process(guard: Guard, calls: Calls) -> None:
    job = watch(calls)
    guard.watch(job)
    assert guard.request_stop("another-job", "cancelled") is False
    assert not job.stop.is_set(), "only the job in hand is stopped"
    assert guard.request_stop("job-1", "cancelled") is True
    assert job.stop.is_set(), "asked at once: the task's next set_status raises"
    assert job.reason == "cancelled"
    assert calls.interrupted.wait(10), "then interrupted"
    assert calls.replaced_event.wait(10), "then, still holding on, the process is replaced"
    assert calls.replaced[0] == "job-1"
    assert calls.timed_out == calls.cut_off == []


def test_a_task_that_lets_go_when_asked_is_not_interrupted(guard: Guard, calls: Calls) -> None:
    job = watch(calls)
    guard.watch(job)
    assert guard.request_stop("job-1", "cancelled")
    guard.release()  # the task returned at its next set_status
    time.sleep(0.5)  # ten times the asking period
    assert not calls.interrupted.is_set()
    assert calls.replaced == []


def test_the_deadline_of_the_job_in_hand_times_it_out(guard: Guard, calls: Calls) -> None:
    job = watch(calls, deadline=time.monotonic() + 0.05)
    guard.watch(job)
    assert calls.timeout_event.wait(10)
    assert calls.timed_out == ["job-1"]
    assert (job.stop.is_set(), job.reason) == (True, "timeout")
    guard.release()


def test_the_shutdown_grace_period_cuts_off_the_job_in_hand(guard: Guard, calls: Calls) -> None:
    job = watch(calls)
    guard.watch(job)
    guard.shutdown_after(0.05)
    assert calls.shutdown_event.wait(10)
    assert calls.cut_off == ["job-1"]
    assert (job.stop.is_set(), job.reason) == (True, "shutdown")
    guard.release()
    assert calls.timed_out == []


def test_without_a_job_in_hand_nothing_is_stopped(guard: Guard, calls: Calls) -> None:
    guard.shutdown_after(0.0)
    assert guard.request_stop("job-1", "cancelled") is False
    time.sleep(0.3)
    assert calls.cut_off == calls.timed_out == calls.replaced == []

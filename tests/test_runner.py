"""The job runner on its own: task kinds, outputs, files, progress throttling, stops, timeouts, errors, and
a call that carries two jobs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from fasttask import JobProgress, MediaFile
from fasttask.errors import JobCancelled
from fasttask.progress import ProgressThrottle
from fasttask.runner import Call, CallJob, error_info, run_call, run_call_here
from fasttask.tasks import TaskDef
from fasttask.threads import JobThreads


class Seen:
    """What one job of a call handed back to its host while it ran."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str | None]] = []
        self.outputs: list[Any] = []
        self.output_threads: list[int] = []
        self.files: list[MediaFile] = []

    def report(self, progress: float, message: str | None) -> None:
        self.reports.append((progress, message))

    def output(self, value: Any) -> None:
        self.outputs.append(value)
        self.output_threads.append(threading.get_ident())

    def store(self, media: MediaFile) -> dict[str, Any]:
        self.files.append(media)
        return {"file_name": media.file_name, "url": f"/files/{len(self.files) - 1}"}


def one_job(task: TaskDef, job_id: str = "job-1", **params: Any) -> tuple[Call, Seen]:
    seen = Seen()
    return Call(task, [CallJob(job_id, params, seen.report, seen.output, seen.store)]), seen


def run_on_loop(call: Call, before: Callable[[asyncio.AbstractEventLoop], None] | None = None) -> None:
    """Run the call with `run_call` on a fresh event loop and a pool of two threads."""

    async def main() -> None:
        if before is not None:
            before(asyncio.get_running_loop())
        threads = JobThreads(2, "test-job")
        try:
            await run_call(call, threads)
        finally:
            threads.shutdown()

    asyncio.run(main())


# -- the task kinds ---------------------------------------------------------------------------------------
def plain(job_progress: JobProgress, n: int) -> dict[str, Any]:
    job_progress.set_status(0.5, "half")
    return {"n": n, "thread": threading.current_thread().name}


async def coroutine(job_progress: JobProgress, n: int) -> int:
    job_progress.set_status(0.25)
    await asyncio.sleep(0)
    return n * 10


def counting(n: int) -> Iterator[int]:
    yield from range(n)


async def acounting(n: int) -> AsyncIterator[dict[str, int]]:
    for i in range(n):
        await asyncio.sleep(0)
        yield {"i": i}


def test_a_def_task_runs_on_one_of_the_threads_and_its_result_is_json() -> None:
    call, seen = one_job(TaskDef("/plain", plain), n=3)
    run_on_loop(call)
    job = call.jobs[0]
    assert job.error is None and job.result["n"] == 3
    assert job.result["thread"] != threading.current_thread().name
    assert seen.reports == [(0.5, "half")]


def test_an_async_task_runs_on_the_loop() -> None:
    call, seen = one_job(TaskDef("/co", coroutine), n=4)
    run_on_loop(call)
    assert (call.jobs[0].result, call.jobs[0].error) == (40, None)
    assert seen.reports == [(0.25, None)]


@pytest.mark.parametrize("fn", [counting, acounting])
def test_every_yield_reaches_the_sink_on_the_loop_before_the_call_ends(fn: Callable[..., Any]) -> None:
    call, seen = one_job(TaskDef("/gen", fn), n=3)
    loop_thread: list[int] = []
    run_on_loop(call, lambda _: loop_thread.append(threading.get_ident()))
    expected = [0, 1, 2] if fn is counting else [{"i": 0}, {"i": 1}, {"i": 2}]
    assert seen.outputs == expected, "the last outputs must not be overtaken by the call's end"
    assert call.jobs[0].result == expected
    assert set(seen.output_threads) == set(loop_thread)


def test_run_call_here_runs_a_def_task_in_the_calling_thread() -> None:
    call, seen = one_job(TaskDef("/gen", counting), n=2)
    run_call_here(call)
    assert call.jobs[0].result == [0, 1] == seen.outputs
    assert set(seen.output_threads) == {threading.get_ident()}


def test_run_call_here_runs_an_async_task_on_the_given_loop() -> None:
    call, _ = one_job(TaskDef("/co", coroutine), n=1)
    with pytest.raises(ValueError, match="give the loop"):
        run_call_here(call)
    loop = asyncio.new_event_loop()
    try:
        run_call_here(call, loop)
    finally:
        loop.close()
    assert call.jobs[0].result == 10


def test_file_results_go_through_the_jobs_store() -> None:
    def picture() -> dict[str, Any]:
        return {"image": MediaFile.from_bytes(b"png", "a.png", "image/png"), "when": 1.5}

    call, seen = one_job(TaskDef("/picture", picture))
    run_on_loop(call)
    assert call.jobs[0].result == {"image": {"file_name": "a.png", "url": "/files/0"}, "when": 1.5}
    try:
        assert [media.to_bytes() for media in seen.files] == [b"png"]
    finally:
        for media in seen.files:
            media.close()


# -- progress throttling ------------------------------------------------------------------------------------
class ManualTimers:
    """A scheduler whose callbacks the test fires: what was scheduled, with which delay."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[float, Callable[[], None], threading.Event]] = []

    def __call__(self, delay_s: float, callback: Callable[[], None]) -> Any:
        cancelled = threading.Event()
        self.scheduled.append((delay_s, callback, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled.set()

        return Handle()

    def fire(self) -> None:
        due, self.scheduled = self.scheduled, []
        for _, callback, cancelled in due:
            if not cancelled.is_set():
                callback()


def test_reports_inside_the_window_wait_and_the_latest_is_delivered_when_it_ends() -> None:
    delivered: list[tuple[float, str | None]] = []
    timers = ManualTimers()
    throttle = ProgressThrottle(lambda p, m: delivered.append((p, m)), interval_s=60.0, schedule=timers)
    for step in range(1, 6):
        throttle.report(step / 5, f"step {step}")
    assert delivered == [(0.2, "step 1")], "the first goes out at once, the rest wait for the window"
    assert len(timers.scheduled) == 1 and 0 < timers.scheduled[0][0] <= 60.0
    assert throttle.pending == (1.0, "step 5")
    timers.fire()
    assert delivered == [(0.2, "step 1"), (1.0, "step 5")]
    assert throttle.pending is None


def test_without_a_scheduler_the_host_flushes_or_takes_the_waiting_report() -> None:
    delivered: list[tuple[float, str | None]] = []
    throttle = ProgressThrottle(lambda p, m: delivered.append((p, m)), interval_s=60.0)
    throttle.report(0.1, None)
    throttle.report(0.2, "a")
    throttle.flush()
    assert delivered == [(0.1, None), (0.2, "a")]
    throttle.report(0.3, "b")
    assert throttle.take() == (0.3, "b") and throttle.pending is None
    throttle.flush()
    assert delivered == [(0.1, None), (0.2, "a")], "a taken report is the caller's to deliver"


def test_a_closed_throttle_drops_what_waits_and_ignores_later_reports() -> None:
    delivered: list[tuple[float, str | None]] = []
    timers = ManualTimers()
    throttle = ProgressThrottle(lambda p, m: delivered.append((p, m)), interval_s=60.0, schedule=timers)
    throttle.report(0.1, None)
    throttle.report(0.2, None)
    throttle.close()
    throttle.report(0.3, None)
    timers.fire()
    throttle.flush()
    assert delivered == [(0.1, None)]


def test_not_inline_every_report_is_coalesced_into_one_scheduled_delivery() -> None:
    delivered: list[tuple[float, str | None]] = []
    timers = ManualTimers()
    throttle = ProgressThrottle(lambda p, m: delivered.append((p, m)), schedule=timers, inline=False)
    for step in range(100):
        throttle.report(step / 100, None)
    assert delivered == [] and len(timers.scheduled) == 1
    timers.fire()
    assert delivered == [(0.99, None)]
    throttle.report(1.0, "done")
    assert len(timers.scheduled) == 1, "a new report after a delivery schedules again"


def test_a_real_timer_delivers_the_trailing_report() -> None:
    delivered: list[tuple[float, str | None]] = []
    done = threading.Event()

    def deliver(progress: float, message: str | None) -> None:
        delivered.append((progress, message))
        if progress == 1.0:
            done.set()

    def schedule(delay_s: float, callback: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(delay_s, callback)
        timer.start()
        return timer

    throttle = ProgressThrottle(deliver, interval_s=0.05, schedule=schedule)
    throttle.report(0.5, None)
    throttle.report(0.7, None)
    throttle.report(1.0, None)
    assert done.wait(5)
    assert delivered == [(0.5, None), (1.0, None)]


# -- stops and timeouts -------------------------------------------------------------------------------------
def test_a_stopped_job_raises_job_cancelled_at_its_next_report(caplog: pytest.LogCaptureFixture) -> None:
    started = threading.Event()

    def loop_until_stopped(job_progress: JobProgress) -> str:
        started.set()
        while True:
            job_progress.set_status(0.1)
            time.sleep(0.005)

    call, _ = one_job(TaskDef("/loop", loop_until_stopped))

    def stop_when_started(loop: asyncio.AbstractEventLoop) -> None:
        async def stop() -> None:
            await asyncio.to_thread(started.wait, 5)
            call.stop_job(call.jobs[0])

        loop.create_task(stop())

    with caplog.at_level(logging.INFO, logger="fasttask.jobs"):
        run_on_loop(call, stop_when_started)
    job = call.jobs[0]
    assert isinstance(job.error, JobCancelled) and job.stopped
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a stop is not a failure"


def test_a_call_stopped_before_it_starts_never_calls_the_task() -> None:
    calls: list[int] = []

    def record(n: int) -> int:
        calls.append(n)
        return n

    for fn in (record, coroutine):
        call, _ = one_job(TaskDef("/x", fn), n=1)
        call.stop_job(call.jobs[0])
        run_on_loop(call)
        assert call.jobs[0].stopped
    assert calls == []


def test_stopping_an_async_call_cancels_it() -> None:
    async def forever() -> None:
        await asyncio.sleep(60)

    call, _ = one_job(TaskDef("/forever", forever))

    async def main() -> None:
        running = asyncio.ensure_future(run_call(call, None))
        await asyncio.sleep(0.01)
        call.stop_job(call.jobs[0])
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(main())


def test_the_timeout_stops_every_job_and_tells_the_host() -> None:
    async def forever() -> None:
        await asyncio.sleep(60)

    call, _ = one_job(TaskDef("/slow", forever, timeout_s=0.05))
    told: list[str] = []

    async def main() -> None:
        call.arm_timeout(asyncio.get_running_loop(), lambda job: told.append(job.job_id))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(run_call(call, None))

    asyncio.run(main())
    assert call.timed_out and told == ["job-1"] and call.jobs[0].stop.is_set()


def test_a_disarmed_timeout_never_fires() -> None:
    call, _ = one_job(TaskDef("/co", coroutine, timeout_s=0.01), n=1)
    told: list[str] = []

    async def main() -> None:
        call.arm_timeout(asyncio.get_running_loop(), lambda job: told.append(job.job_id))
        await run_call(call, None)
        call.disarm()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert (call.jobs[0].result, call.timed_out, told) == (10, False, [])


# -- errors -------------------------------------------------------------------------------------------------
def broken(n: int) -> int:
    raise ValueError(f"bad {n}")


@pytest.mark.parametrize("may_retry", [False, True])
def test_a_raising_call_is_the_jobs_error_and_is_logged_with_its_id(
    caplog: pytest.LogCaptureFixture, may_retry: bool
) -> None:
    call, _ = one_job(TaskDef("/broken", broken), job_id="job-7", n=2)
    call.may_retry = may_retry
    with caplog.at_level(logging.ERROR, logger="fasttask.jobs"):
        run_on_loop(call)
    job = call.jobs[0]
    assert isinstance(job.error, ValueError) and not job.stopped and job.retrying is may_retry
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.job_id == "job-7" and record.endpoint == "/broken"  # type: ignore[attr-defined]
    assert ("runs again" in record.getMessage()) is may_retry


def test_a_result_json_cannot_carry_fails_the_job() -> None:
    call, _ = one_job(TaskDef("/odd", lambda: object()))
    run_on_loop(call)
    assert isinstance(call.jobs[0].error, TypeError)


def test_error_info_carries_the_traceback_only_when_debugging() -> None:
    try:
        broken(1)
    except ValueError as exc:
        assert error_info(exc, debug=False) == {"type": "ValueError", "message": "bad 1"}
        assert "Traceback" in error_info(exc, debug=True)["traceback"]


# -- a call with several jobs -------------------------------------------------------------------------------
def doubled(job_progress: JobProgress, x: list[int]) -> list[Any]:
    job_progress.set_status(0.5, "both")
    return [value * 2 if value >= 0 else ValueError(f"negative {value}") for value in x]


def two_jobs(task: TaskDef, first: int, second: int) -> tuple[Call, list[Seen]]:
    seen = [Seen(), Seen()]
    jobs = [
        CallJob(f"job-{i}", {"x": value}, s.report, s.output, s.store)
        for i, (value, s) in enumerate(zip((first, second), seen, strict=True))
    ]
    return Call(task, jobs), seen


def test_a_call_for_two_jobs_hands_each_its_own_entry(caplog: pytest.LogCaptureFixture) -> None:
    call, seen = two_jobs(TaskDef("/doubled", doubled), 3, -1)
    with caplog.at_level(logging.ERROR, logger="fasttask.jobs"):
        run_on_loop(call)
    ok, bad = call.jobs
    assert (ok.result, ok.error) == (6, None)
    assert bad.result is None and isinstance(bad.error, ValueError) and str(bad.error) == "negative -1"
    assert [s.reports for s in seen] == [[(0.5, "both")], [(0.5, "both")]], "progress reaches every job"
    assert [getattr(r, "job_id", None) for r in caplog.records] == ["job-1"], "only the failed job is logged"


def test_a_wrong_length_return_fails_every_job_of_the_call() -> None:
    call, _ = two_jobs(TaskDef("/one", lambda x: [1]), 1, 2)
    run_on_loop(call)
    assert all(isinstance(job.error, TypeError) and "returned 1 entries" in str(job.error) for job in call.jobs)


def test_one_stopped_job_does_not_stop_a_call_for_two() -> None:
    call, _ = two_jobs(TaskDef("/doubled", doubled), 1, 2)
    call.stop_job(call.jobs[0])
    assert not call.stop.is_set()
    call.stop_job(call.jobs[1])
    assert call.stop.is_set()


def test_a_generator_task_runs_one_job_per_call() -> None:
    with pytest.raises(ValueError, match="one job per call"):
        two_jobs(TaskDef("/gen", counting), 1, 2)


def test_a_stop_from_another_thread_cancels_async_code_on_its_loop() -> None:
    async def forever() -> None:
        await asyncio.sleep(60)

    call, _ = one_job(TaskDef("/forever", forever))
    stopper = threading.Timer(0.05, call.stop_job, [call.jobs[0]])
    loop = asyncio.new_event_loop()
    try:
        stopper.start()
        with pytest.raises(asyncio.CancelledError):
            run_call_here(call, loop)
    finally:
        stopper.join()
        loop.close()


def test_a_failed_delivery_keeps_the_report_for_the_next_try(caplog: pytest.LogCaptureFixture) -> None:
    delivered: list[tuple[float, str | None]] = []
    failures = [ConnectionError("store away")]

    def deliver(progress: float, message: str | None) -> None:
        if failures:
            raise failures.pop()
        delivered.append((progress, message))

    throttle = ProgressThrottle(deliver, interval_s=0.0)
    with caplog.at_level(logging.WARNING, logger="fasttask.progress"):
        throttle.report(0.4, "x")  # the task's set_status does not see the failure
    assert delivered == [] and throttle.pending == (0.4, "x") and throttle.last == (0.0, None)
    assert "store away" in caplog.text
    throttle.flush()
    assert delivered == [(0.4, "x")] and throttle.pending is None and throttle.last == (0.4, "x")

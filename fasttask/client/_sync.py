"""Client: calls a fasttask service from synchronous code."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any

from . import _core as core
from ._errors import ClientError, ConnectionFailed
from ._http import HTTPTransport
from ._models import JobState, StreamEvent
from ._progress import Progress, ProgressDisplay, batch_display, job_display
from ._runpod import RunpodTransport
from ._runpod_protocol import DEFAULT_POLL_INTERVAL_S, RUNPOD_API_URL, RunpodOptions, endpoint_url
from ._transport import Transport

DEFAULT_CONCURRENCY = 8


class Job:
    """A handle on one job of a service: read it, wait for its result, stream its events or cancel it."""

    def __init__(self, transport: Transport, job_id: str, state: JobState | None = None) -> None:
        self._transport = transport
        self.id = job_id
        self._final = state if state is not None and state.is_final else None

    def status(self) -> JobState:
        """The job as the service reports it now."""
        if self._final is not None:
            return self._final  # a final job does not change any more
        return self._seen(self._transport.get(self.id))

    def result(self, timeout: float | None = None, progress: Progress = False) -> Any:
        """Wait for the job to end and return its result (file results download lazily).

        Raises JobFailed when it failed, was cancelled or timed out, and ResultTimeout when `timeout` seconds
        pass first (the job goes on). `progress` shows a bar: True on stderr, or a text file to draw it in.
        Waiting is a long poll of at most 60 s a round; with a bar, the job's event stream. On runpod
        (`Client.for_runpod`), which has no long poll, it polls /status with a bounded backoff instead.
        """
        return core.outcome(self._wait(timeout, job_display(progress)))

    def wait(self, timeout: float | None = None, progress: Progress = False) -> JobState:
        """Wait for the job to end and return its final state, whatever it is (`result` without raising
        JobFailed); ResultTimeout when `timeout` passes first."""
        return self._wait(timeout, job_display(progress))

    def _wait(self, timeout: float | None, display: ProgressDisplay | None) -> JobState:
        if self._final is not None:
            if display is not None:
                display.update(self._final)
                display.close()
            return self._final
        deadline = core.Deadline(timeout)
        try:
            state = None
            if display is not None and self._transport.streams_progress:  # else get() feeds the bar
                state = self._follow(deadline, display)
            while state is None or not state.is_final:
                state = self._seen(self._transport.get(self.id, deadline.poll_wait()))
                if display is not None:
                    display.update(state)
                if not state.is_final and deadline.expired:
                    raise deadline.timeout_error(self.id, state)
            return state
        finally:
            if display is not None:
                display.close()

    def cancel(self) -> JobState:
        """Cancel the job (a queued one at once, a running one as soon as it can be stopped).

        A job that already ended is left as it is; either way its state is returned.
        """
        return self._seen(self._transport.cancel(self.id))

    def stream(self) -> Iterator[StreamEvent]:
        """The job's events as they happen: `progress`, `output` (one per yield of a generator task), `end`."""
        events = self._transport.events(self.id)
        try:
            for event in events:
                if event.job is not None:
                    self._seen(event.job)
                yield event
        finally:
            events.close()

    def _follow(self, deadline: core.Deadline, display: ProgressDisplay) -> JobState | None:
        """Show progress from the event stream until the end; None when the stream broke off early."""
        events = self._transport.events(self.id, deadline.stream_read_timeout())
        try:
            for event in events:
                if event.job is None:
                    continue
                display.update(self._seen(event.job))
                if event.job.is_final:
                    return event.job
                if deadline.expired:
                    raise deadline.timeout_error(self.id, event.job)
        except ConnectionFailed:
            pass  # the long poll takes over, and tells if the service is really gone
        finally:
            events.close()
        return None

    def _seen(self, state: JobState) -> JobState:
        if state.is_final:
            self._final = state
        return state

    def __repr__(self) -> str:
        return f"Job({self.id!r})"


class Client:
    """A client of a fasttask service.

    `Client("http://127.0.0.1:8000", api_key=...)`: a 429 (queue full) is retried after its Retry-After for up
    to `retry_429_s` seconds in all, a 503 (the service's queue or storage unreachable) with exponential backoff
    for up to `retry_503_s`; `timeout` bounds each request (a long poll waits that much longer). Safe to share
    between threads; close it, or use it as a context manager.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_429_s: float = 60.0,
        retry_503_s: float = 30.0,
    ) -> None:
        settings = core.ClientSettings(base_url, api_key, timeout, retry_429_s, retry_503_s)
        self._transport: Transport = HTTPTransport(settings)

    @classmethod
    def for_runpod(
        cls,
        endpoint_id: str | None,
        api_key: str | None,
        base_url: str = RUNPOD_API_URL,
        *,
        status_method: str = "GET",
        timeout: float = 30.0,
        retry_429_s: float = 60.0,
        retry_503_s: float = 30.0,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> Client:
        """A client of a fasttask app deployed on runpod serverless (FTAPI_BACKEND=runpod), with the same job
        handles: `submit` is runpod's `/run` with `{"input": {"path": path, **params}}`, then `/status/{id}`,
        `/stream/{id}` and `/cancel/{id}` under `base_url/endpoint_id`, with `Authorization: Bearer <api_key>`.

        runpod's statuses become fasttask's (IN_QUEUE → queued, IN_PROGRESS → running, COMPLETED → finished,
        FAILED → failed with runpod's error string as the message, CANCELLED → cancelled, TIMED_OUT → timeout).
        File parameters go inline as base64 (runpod takes JSON only; its /run body is limited to 10 MB); file
        results are RemoteFiles, inline base64 or a bucket URL fetched without the runpod key.

        runpod has no long poll: `result()` polls /status, pausing 0.25 s at first and longer after each poll
        that saw no change, at most `poll_interval_s`; the progress bar shows what /status reports. `stream()`
        polls /stream likewise: it streams with FTAPI_RUNPOD_STREAM=1 on the worker, where a job's result is
        the list of its outputs. 429 and 503 are retried as by `Client`.

        `status_method` is the method of /status and /stream: GET on runpod's hosted API, POST for runpod's
        local test API (`--rp_serve_api`), which is reached with `endpoint_id=None` and its own URL as
        `base_url`. That local API runs a job inside the first /status or /stream request that reads it (so
        `timeout` must outlast the job there), forgets it afterwards, and has no /cancel.
        """
        settings = core.ClientSettings(endpoint_url(endpoint_id, base_url), api_key, timeout, retry_429_s, retry_503_s)
        return cls._over(RunpodTransport(settings, RunpodOptions(status_method, poll_interval_s)))

    @classmethod
    def _over(cls, transport: Transport) -> Client:
        client = cls.__new__(cls)
        client._transport = transport
        return client

    def submit(
        self,
        path: str,
        /,
        idempotency_key: str | None = None,
        *,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        **params: Any,
    ) -> Job:
        """Start a job of the task at `path`. Paths, bytes, binary file objects and MediaFiles go up as files.

        The submit carries an `Idempotency-Key` (`idempotency_key`, or a new random one), so it is sent again
        after a connection error or a 5xx without ever making a second job; a key given here makes a later
        `submit` with the same key and parameters answer with the same job.

        With `webhook`, the service POSTs the job's events (`webhook_events`, default `["completed"]`) there.
        """
        return self.submit_params(
            path, params, idempotency_key=idempotency_key, webhook=webhook, webhook_events=webhook_events
        )

    def submit_params(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        as_form: bool = False,
        idempotency_key: str | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
    ) -> Job:
        """`submit` with the parameters as a mapping (any names, `progress` too).

        `as_form` sends a plain form, as `curl -d` does: values are strings, and lists of strings repeat.
        """
        hook = core.webhook_request(webhook, webhook_events)
        return self._submit(path, params, as_form, core.SubmitOptions.fresh(idempotency_key, webhook=hook))

    def _submit(self, path: str, params: Mapping[str, Any], as_form: bool, options: core.SubmitOptions) -> Job:
        state = self._transport.submit(path, params, as_form=as_form, options=options)
        return Job(self._transport, state.id, state)

    def job(self, job_id: str) -> Job:
        """The handle of an existing job, by its id."""
        return Job(self._transport, job_id)

    def call(self, path: str, /, progress: Progress = False, **params: Any) -> Any:
        """Submit a job and wait for its result; see `Job.result`. The submit itself waits for the job
        (`Prefer: wait`), so a short job takes one request."""
        options = core.SubmitOptions.fresh(wait_s=core.call_wait_s(progress))
        return self._submit(path, params, False, options).result(progress=progress)

    def map(
        self,
        path: str,
        many_params: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: Progress = True,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run one job per parameter set, at most `concurrency` at once, and return the results in order.

        One bar counts the jobs that ended. The first failure raises, after cancelling the jobs still running,
        unless `return_exceptions` puts each failure's ClientError in its place in the list.
        """
        items = [dict(params) for params in many_params]
        results: list[Any] = [None] * len(items)
        bar = batch_display(progress, len(items), path)
        batch = _Batch(self, path)
        pool = ThreadPoolExecutor(max(1, min(concurrency, len(items))), thread_name_prefix="fasttask-map")
        try:
            futures: dict[Future[Any], int] = {pool.submit(batch.run, params): i for i, params in enumerate(items)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.__getitem__):
                    try:
                        results[futures[future]] = future.result()
                    except ClientError as exc:
                        if not return_exceptions:
                            raise
                        results[futures[future]] = exc
                    if bar is not None:
                        bar.advance(failed=isinstance(results[futures[future]], ClientError))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            batch.abandon()
            raise
        finally:
            pool.shutdown(wait=True)
            if bar is not None:
                bar.close()
        return results

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class _Batch:
    """The jobs of one `map` in flight, so that a failure can cancel the rest."""

    def __init__(self, client: Client, path: str) -> None:
        self._client = client
        self._path = path
        self._lock = threading.Lock()
        self._running: set[Job] = set()
        self._stopped = False

    def run(self, params: Mapping[str, Any]) -> Any:
        if self._stopped:
            return None
        job = self._client.submit_params(self._path, params)
        with self._lock:
            self._running.add(job)
            stopped = self._stopped
        try:
            if stopped:  # the batch was abandoned while this job was being submitted
                job.cancel()
                return None
            return job.result()
        finally:
            with self._lock:
                self._running.discard(job)

    def abandon(self) -> None:
        """Stop starting jobs and cancel the ones running."""
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for job in running:
            with contextlib.suppress(ClientError):  # it may be gone already; the batch is failing anyway
                job.cancel()

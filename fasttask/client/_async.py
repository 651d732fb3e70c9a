"""AsyncClient: calls a fasttask service from asyncio code. Client's twin; the rules they share live in `_core`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from . import _core as core
from ._errors import ClientError, ConnectionFailed
from ._http import AsyncHTTPTransport
from ._models import JobState, StreamEvent
from ._progress import Progress, ProgressDisplay, batch_display, job_display
from ._runpod import AsyncRunpodTransport
from ._runpod_protocol import DEFAULT_POLL_INTERVAL_S, RUNPOD_API_URL, RunpodOptions, endpoint_url
from ._sync import DEFAULT_CONCURRENCY
from ._transport import AsyncTransport


class AsyncJob:
    """A handle on one job of a service, for asyncio: Job's methods as coroutines."""

    def __init__(self, transport: AsyncTransport, job_id: str, state: JobState | None = None) -> None:
        self._transport = transport
        self.id = job_id
        self._final = state if state is not None and state.is_final else None

    async def status(self) -> JobState:
        """The job as the service reports it now."""
        if self._final is not None:
            return self._final
        return self._seen(await self._transport.get(self.id))

    async def result(self, timeout: float | None = None, progress: Progress = False) -> Any:
        """Wait for the job to end and return its result; see `Job.result`."""
        return core.outcome(await self._wait(timeout, job_display(progress)))

    async def wait(self, timeout: float | None = None, progress: Progress = False) -> JobState:
        """Wait for the job to end and return its final state; see `Job.wait`."""
        return await self._wait(timeout, job_display(progress))

    async def _wait(self, timeout: float | None, display: ProgressDisplay | None) -> JobState:
        if self._final is not None:
            if display is not None:
                display.update(self._final)
                display.close()
            return self._final
        deadline = core.Deadline(timeout)
        try:
            state = None
            if display is not None and self._transport.streams_progress:  # else get() feeds the bar
                state = await self._follow(deadline, display)
            while state is None or not state.is_final:
                state = self._seen(await self._transport.get(self.id, deadline.poll_wait()))
                if display is not None:
                    display.update(state)
                if not state.is_final and deadline.expired:
                    raise deadline.timeout_error(self.id, state)
            return state
        finally:
            if display is not None:
                display.close()

    async def cancel(self) -> JobState:
        """Cancel the job; one that already ended is left as it is. Returns its state."""
        return self._seen(await self._transport.cancel(self.id))

    async def stream(self) -> AsyncIterator[StreamEvent]:
        """The job's events as they happen: `progress`, `output`, `end`."""
        events = self._transport.events(self.id)
        try:
            async for event in events:
                if event.job is not None:
                    self._seen(event.job)
                yield event
        finally:
            await events.aclose()

    async def _follow(self, deadline: core.Deadline, display: ProgressDisplay) -> JobState | None:
        """Show progress from the event stream until the end; None when the stream broke off or time ran out."""

        async def follow() -> JobState | None:
            events = self._transport.events(self.id)
            try:
                async for event in events:
                    if event.job is not None:
                        display.update(self._seen(event.job))
                        if event.job.is_final:
                            return event.job
            finally:
                await events.aclose()
            return None

        try:
            return await asyncio.wait_for(follow(), deadline.remaining())
        except (ConnectionFailed, asyncio.TimeoutError):
            return None  # the long poll takes over: it raises ResultTimeout, or tells if the service is gone

    def _seen(self, state: JobState) -> JobState:
        if state.is_final:
            self._final = state
        return state

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"


class AsyncClient:
    """A client of a fasttask service for asyncio code; the settings are Client's. Close it with `aclose()`
    or use it as an async context manager."""

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
        self._transport: AsyncTransport = AsyncHTTPTransport(settings)

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
    ) -> AsyncClient:
        """An AsyncClient of a fasttask app deployed on runpod serverless; see `Client.for_runpod` (waiting
        polls /status with a bounded backoff: runpod has no long poll)."""
        settings = core.ClientSettings(endpoint_url(endpoint_id, base_url), api_key, timeout, retry_429_s, retry_503_s)
        return cls._over(AsyncRunpodTransport(settings, RunpodOptions(status_method, poll_interval_s)))

    @classmethod
    def _over(cls, transport: AsyncTransport) -> AsyncClient:
        client = cls.__new__(cls)
        client._transport = transport
        return client

    async def submit(
        self,
        path: str,
        /,
        idempotency_key: str | None = None,
        *,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        **params: Any,
    ) -> AsyncJob:
        """Start a job of the task at `path`; see `Client.submit`."""
        return await self.submit_params(
            path, params, idempotency_key=idempotency_key, webhook=webhook, webhook_events=webhook_events
        )

    async def submit_params(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        as_form: bool = False,
        idempotency_key: str | None = None,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
    ) -> AsyncJob:
        """`submit` with the parameters as a mapping; see `Client.submit_params`."""
        hook = core.webhook_request(webhook, webhook_events)
        return await self._submit(path, params, as_form, core.SubmitOptions.fresh(idempotency_key, webhook=hook))

    async def _submit(
        self, path: str, params: Mapping[str, Any], as_form: bool, options: core.SubmitOptions
    ) -> AsyncJob:
        state = await self._transport.submit(path, params, as_form=as_form, options=options)
        return AsyncJob(self._transport, state.id, state)

    def job(self, job_id: str) -> AsyncJob:
        """The handle of an existing job, by its id."""
        return AsyncJob(self._transport, job_id)

    async def call(self, path: str, /, progress: Progress = False, **params: Any) -> Any:
        """Submit a job and wait for its result; see `Client.call`."""
        job = await self._submit(path, params, False, core.SubmitOptions.fresh(wait_s=core.call_wait_s(progress)))
        return await job.result(progress=progress)

    async def map(
        self,
        path: str,
        many_params: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: Progress = True,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Run one job per parameter set, at most `concurrency` at once, results in order; see `Client.map`."""
        items = [dict(params) for params in many_params]
        bar = batch_display(progress, len(items), path)
        slots = asyncio.Semaphore(max(1, concurrency))
        running: set[AsyncJob] = set()

        async def run(params: Mapping[str, Any]) -> Any:
            async with slots:
                job = await self.submit_params(path, params)
                running.add(job)
                try:
                    value = await job.result()
                except ClientError as exc:
                    if not return_exceptions:
                        raise
                    value = exc
                finally:
                    running.discard(job)
            if bar is not None:
                bar.advance(failed=isinstance(value, ClientError))
            return value

        tasks = [asyncio.ensure_future(run(params)) for params in items]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            in_flight = list(running)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for job in in_flight:
                with contextlib.suppress(ClientError):
                    await job.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()

    async def aclose(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

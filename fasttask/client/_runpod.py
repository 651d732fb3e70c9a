"""The transports to a fasttask app deployed on runpod serverless (FTAPI_BACKEND=runpod): the job handles of
Client / AsyncClient over runpod's queue API instead of fasttask's HTTP API.

    Client.for_runpod("abc123xyz", api_key="rpa_…")

How fasttask's job handles map to runpod's routes and statuses, and the requests and answers themselves,
are in `_runpod_protocol.py`; here they meet I/O, once blocking and once async.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from typing import Any

import httpx

from ..jobs import JobStatus
from . import _core as core
from ._errors import APIError
from ._files import AsyncRemoteFile, RemoteFile
from ._http import NO_OPTIONS, AsyncHTTPSession, HTTPSession
from ._models import JobState, StreamEvent
from ._runpod_protocol import (
    Poll,
    RunpodOptions,
    StreamReader,
    cancel_request,
    error_note,
    parse_record,
    read_answer,
    run_request,
    status_request,
    stream_request,
    task_path,
)


class RunpodTransport(HTTPSession):
    """Client's transport to a runpod serverless endpoint serving a fasttask app (FTAPI_BACKEND=runpod)."""

    streams_progress = False  # /stream serves only streaming handlers and has no progress: get() feeds the bar

    def __init__(self, settings: core.ClientSettings, options: RunpodOptions | None = None) -> None:
        super().__init__(settings)
        self.options = options or RunpodOptions()

    def submit(
        self, path: str, params: Mapping[str, Any], *, as_form: bool = False, options: core.SubmitOptions = NO_OPTIONS
    ) -> JobState:
        """`POST /run`; `as_form` does not apply (runpod takes JSON only), nor do `options` but the webhook
        (runpod knows neither idempotency keys nor `Prefer: wait`). Runpod's own webhook is sent when the job
        ends, whatever events are asked for."""
        answer = read_answer(self._send(run_request(path, params, options.webhook)))
        return parse_record(answer, self._wrap_file, task_path(path))

    def get(self, job_id: str, wait_s: float = 0.0) -> JobState:
        """`/status`, polled with a bounded backoff until the job ends or changes, or `wait_s` passes."""
        poll = Poll(wait_s, self.options)
        while True:
            state = self._record(job_id)
            pause = poll.pause(state)
            if pause is None:
                return state
            time.sleep(pause)

    def cancel(self, job_id: str) -> JobState:
        try:
            state = parse_record(read_answer(self._send(cancel_request(job_id))), self._wrap_file)
        except APIError as exc:
            if exc.status_code not in (400, 409):  # runpod refusing to cancel a job that already ended
                raise
            return self.get(job_id)
        if state.is_final and state.status is not JobStatus.CANCELLED:
            return self.get(job_id)  # it ended first: its record has the result
        return state

    def events(self, job_id: str, read_timeout_s: float | None = None) -> Generator[StreamEvent, None, None]:
        """The job's events from `/stream`, polled with a bounded backoff; see StreamReader."""
        reader = StreamReader(job_id, self._wrap_file, self.options)
        while not reader.done:
            try:
                answer = read_answer(self._send(stream_request(job_id, self.options)))
            except APIError as exc:
                if reader.final is None or exc.status_code != 404:
                    raise
                break  # the job is gone after its final answer
            yield from reader.feed(answer)
            if not reader.done and reader.final is None:
                time.sleep(reader.backoff.next())
        record = None
        if reader.needs_record:
            with contextlib.suppress(APIError):  # else the stream's own final answer stands
                record = self._record(job_id)
        yield reader.end(record)

    def _record(self, job_id: str) -> JobState:
        return parse_record(read_answer(self._send(status_request(job_id, self.options))), self._wrap_file)

    def _wrap_file(self, info: dict[str, Any]) -> RemoteFile:
        return RemoteFile(info, self)

    def _error_note(self, response: httpx.Response) -> str:
        return error_note(response)


class AsyncRunpodTransport(AsyncHTTPSession):
    """AsyncClient's transport to a runpod serverless endpoint: RunpodTransport's twin."""

    streams_progress = False

    def __init__(self, settings: core.ClientSettings, options: RunpodOptions | None = None) -> None:
        super().__init__(settings)
        self.options = options or RunpodOptions()

    async def submit(
        self, path: str, params: Mapping[str, Any], *, as_form: bool = False, options: core.SubmitOptions = NO_OPTIONS
    ) -> JobState:
        answer = read_answer(await self._send(run_request(path, params, options.webhook)))
        return parse_record(answer, self._wrap_file, task_path(path))

    async def get(self, job_id: str, wait_s: float = 0.0) -> JobState:
        poll = Poll(wait_s, self.options)
        while True:
            state = await self._record(job_id)
            pause = poll.pause(state)
            if pause is None:
                return state
            await asyncio.sleep(pause)

    async def cancel(self, job_id: str) -> JobState:
        try:
            state = parse_record(read_answer(await self._send(cancel_request(job_id))), self._wrap_file)
        except APIError as exc:
            if exc.status_code not in (400, 409):
                raise
            return await self.get(job_id)
        if state.is_final and state.status is not JobStatus.CANCELLED:
            return await self.get(job_id)
        return state

    async def events(self, job_id: str, read_timeout_s: float | None = None) -> AsyncGenerator[StreamEvent, None]:
        reader = StreamReader(job_id, self._wrap_file, self.options)
        while not reader.done:
            try:
                answer = read_answer(await self._send(stream_request(job_id, self.options)))
            except APIError as exc:
                if reader.final is None or exc.status_code != 404:
                    raise
                break
            for event in reader.feed(answer):
                yield event
            if not reader.done and reader.final is None:
                await asyncio.sleep(reader.backoff.next())
        record = None
        if reader.needs_record:
            with contextlib.suppress(APIError):
                record = await self._record(job_id)
        yield reader.end(record)

    async def _record(self, job_id: str) -> JobState:
        return parse_record(read_answer(await self._send(status_request(job_id, self.options))), self._wrap_file)

    def _wrap_file(self, info: dict[str, Any]) -> AsyncRemoteFile:
        return AsyncRemoteFile(info, self)

    def _error_note(self, response: httpx.Response) -> str:
        return error_note(response)

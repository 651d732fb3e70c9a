"""The transports to a fasttask service's HTTP API: one on httpx.Client, its twin on httpx.AsyncClient.

Each only sends what `_core` builds, reads the answers with `_core`, and sleeps where `RetryPolicy` says.
`HTTPSession` / `AsyncHTTPSession` are the part any HTTP transport shares (sending with the retries of 429 and
503, downloading file results): the runpod transport (`_runpod`) is built on them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from typing import Any

import httpx

from . import _core as core
from ._errors import APIError, ConnectionFailed
from ._files import AsyncRemoteFile, RemoteFile
from ._models import JobState, StreamEvent

NO_OPTIONS = core.SubmitOptions()


class HTTPSession:
    """One httpx.Client (safe to share between threads) and what every HTTP transport does with it: send a
    request again after a 429 or 503 while the limits allow, and download file results."""

    def __init__(self, settings: core.ClientSettings) -> None:
        self.settings = settings
        self._http = httpx.Client(**settings.http_options())

    @contextmanager
    def download(self, url: str) -> Iterator[Iterator[bytes]]:
        response = self._send(core.download_request(url, self.settings), stream=True)
        try:
            yield self._chunks(response)
        finally:
            response.close()

    def close(self) -> None:
        self._http.close()

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise core.connection_failed(exc, response.request) from exc

    def _send(self, spec: core.RequestSpec, stream: bool = False) -> httpx.Response:
        """Send `spec`, again after a 429 or 503 while the retry limits allow; an error status raises APIError."""
        policy = core.RetryPolicy(self.settings, spec=spec)
        while True:
            with ExitStack() as stack:
                request = spec.build(self._http, stack)
                try:
                    response = self._http.send(request, stream=stream)
                except httpx.TransportError as exc:
                    delay = policy.connection_delay()
                    if delay is None:
                        note = policy.note()
                        raise core.connection_failed(exc, request, note) from exc
                    time.sleep(delay)
                    continue
                except httpx.HTTPError as exc:
                    raise core.connection_failed(exc, request) from exc
            if response.status_code < 300:
                return response
            try:
                response.read()
            except httpx.HTTPError as exc:
                raise core.connection_failed(exc, request) from exc
            finally:
                response.close()
            delay = policy.delay(response)
            if delay is None:
                raise core.api_error(response, policy.note(response) or self._error_note(response))
            time.sleep(delay)

    def _error_note(self, response: httpx.Response) -> str:
        """A hint for the error of an answer with an error status; none here."""
        return ""


class HTTPTransport(HTTPSession):
    """Client's transport: the fasttask HTTP API through one httpx.Client (safe to share between threads)."""

    streams_progress = True

    def submit(
        self, path: str, params: Mapping[str, Any], *, as_form: bool = False, options: core.SubmitOptions = NO_OPTIONS
    ) -> JobState:
        return self._job(self._send(core.submit_request(path, params, as_form, options, self.settings)))

    def get(self, job_id: str, wait_s: float = 0.0) -> JobState:
        return self._job(self._send(core.job_request(job_id, wait_s, self.settings)))

    def cancel(self, job_id: str) -> JobState:
        try:
            return self._job(self._send(core.cancel_request(job_id)))
        except APIError as exc:
            if exc.status_code != 409:  # 409: it already ended
                raise
        return self.get(job_id)

    def events(self, job_id: str, read_timeout_s: float | None = None) -> Generator[StreamEvent, None, None]:
        response = self._send(core.stream_request(job_id, read_timeout_s), stream=True)
        decoder = core.SSEDecoder()
        try:
            for line in response.iter_lines():
                raw = decoder.feed(line)
                event = None if raw is None else core.read_event(raw, self._wrap_file)
                if event is not None:
                    yield event
                    if event.kind == "end":
                        return
        except httpx.HTTPError as exc:
            raise core.connection_failed(exc, response.request) from exc
        finally:
            response.close()
        raise ConnectionFailed(f"the stream of job {job_id} ended before the job did")

    def _job(self, response: httpx.Response) -> JobState:
        return core.read_job(response, self._wrap_file)

    def _wrap_file(self, info: dict[str, Any]) -> RemoteFile:
        return RemoteFile(info, self)


class AsyncHTTPSession:
    """HTTPSession's twin on httpx.AsyncClient."""

    def __init__(self, settings: core.ClientSettings) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(**settings.http_options())

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[AsyncIterator[bytes]]:
        response = await self._send(core.download_request(url, self.settings), stream=True)
        try:
            yield self._chunks(response)
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self._http.aclose()

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise core.connection_failed(exc, response.request) from exc

    async def _send(self, spec: core.RequestSpec, stream: bool = False) -> httpx.Response:
        """Send `spec`, again after a 429 or 503 while the retry limits allow; an error status raises APIError."""
        policy = core.RetryPolicy(self.settings, spec=spec)
        while True:
            with ExitStack() as stack:
                request = spec.build(self._http, stack)
                try:
                    response = await self._http.send(request, stream=stream)
                except httpx.TransportError as exc:
                    delay = policy.connection_delay()
                    if delay is None:
                        note = policy.note()
                        raise core.connection_failed(exc, request, note) from exc
                    await asyncio.sleep(delay)
                    continue
                except httpx.HTTPError as exc:
                    raise core.connection_failed(exc, request) from exc
            if response.status_code < 300:
                return response
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                raise core.connection_failed(exc, request) from exc
            finally:
                await response.aclose()
            delay = policy.delay(response)
            if delay is None:
                raise core.api_error(response, policy.note(response) or self._error_note(response))
            await asyncio.sleep(delay)

    def _error_note(self, response: httpx.Response) -> str:
        """A hint for the error of an answer with an error status; none here."""
        return ""


class AsyncHTTPTransport(AsyncHTTPSession):
    """AsyncClient's transport: HTTPTransport's twin on httpx.AsyncClient."""

    streams_progress = True

    async def submit(
        self, path: str, params: Mapping[str, Any], *, as_form: bool = False, options: core.SubmitOptions = NO_OPTIONS
    ) -> JobState:
        return self._job(await self._send(core.submit_request(path, params, as_form, options, self.settings)))

    async def get(self, job_id: str, wait_s: float = 0.0) -> JobState:
        return self._job(await self._send(core.job_request(job_id, wait_s, self.settings)))

    async def cancel(self, job_id: str) -> JobState:
        try:
            return self._job(await self._send(core.cancel_request(job_id)))
        except APIError as exc:
            if exc.status_code != 409:  # 409: it already ended
                raise
        return await self.get(job_id)

    async def events(self, job_id: str, read_timeout_s: float | None = None) -> AsyncGenerator[StreamEvent, None]:
        response = await self._send(core.stream_request(job_id, read_timeout_s), stream=True)
        decoder = core.SSEDecoder()
        try:
            async for line in response.aiter_lines():
                raw = decoder.feed(line)
                event = None if raw is None else core.read_event(raw, self._wrap_file)
                if event is not None:
                    yield event
                    if event.kind == "end":
                        return
        except httpx.HTTPError as exc:
            raise core.connection_failed(exc, response.request) from exc
        finally:
            await response.aclose()
        raise ConnectionFailed(f"the stream of job {job_id} ended before the job did")

    def _job(self, response: httpx.Response) -> JobState:
        return core.read_job(response, self._wrap_file)

    def _wrap_file(self, info: dict[str, Any]) -> AsyncRemoteFile:
        return AsyncRemoteFile(info, self)

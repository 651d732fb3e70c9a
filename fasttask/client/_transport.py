"""The seam between the client's job handles and the way a service is reached.

`Job`, `Client.call` and `Client.map` only ever talk to a Transport. The fasttask HTTP API is one
implementation (`_http.py`); runpod serverless is another (`_runpod.py`, with `_runpod_protocol.py`
translating runpod's job records into JobState), and every handle method works unchanged on top of it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol

from ._core import SubmitOptions
from ._models import JobState, StreamEvent


class Transport(Protocol):
    """How Client reaches a service."""

    @property
    def streams_progress(self) -> bool:
        """Whether `events` reports progress for any job, so that a progress bar follows it there. When not
        (runpod: its /stream only serves streaming handlers, and carries no progress), the bar is fed by `get`."""

    def submit(
        self, path: str, params: Mapping[str, Any], *, as_form: bool = False, options: SubmitOptions = ...
    ) -> JobState:
        """Start a job of the task at `path`; 429 and 503 are retried within the client's limits. `options`:
        what the service is asked besides (an Idempotency-Key, `Prefer: wait`, a webhook); a transport may ignore it."""

    def get(self, job_id: str, wait_s: float = 0.0) -> JobState:
        """The job now, or once it ends if that happens within `wait_s` (at most 60).

        A transport that polls may answer as soon as the job changed (status, progress or message) instead."""

    def cancel(self, job_id: str) -> JobState:
        """Cancel the job; one that already ended is left as it is. Returns its state."""

    def events(self, job_id: str, read_timeout_s: float | None = None) -> Generator[StreamEvent, None, None]:
        """The job's events up to and including `end`; raises ConnectionFailed if the stream breaks off."""

    def download(self, url: str) -> AbstractContextManager[Iterator[bytes]]:
        """The content of a file result, in chunks."""

    def close(self) -> None:
        """Release connections."""


class AsyncTransport(Protocol):
    """How AsyncClient reaches a service: Transport's methods as coroutines."""

    @property
    def streams_progress(self) -> bool: ...

    async def submit(
        self, path: str, params: Mapping[str, Any], *, as_form: bool = False, options: SubmitOptions = ...
    ) -> JobState: ...

    async def get(self, job_id: str, wait_s: float = 0.0) -> JobState: ...

    async def cancel(self, job_id: str) -> JobState: ...

    def events(self, job_id: str, read_timeout_s: float | None = None) -> AsyncGenerator[StreamEvent, None]: ...

    def download(self, url: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def close(self) -> None: ...

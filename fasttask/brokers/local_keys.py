"""The embedded queue's Idempotency-Keys: in this process, for as long as their jobs are kept."""

from __future__ import annotations

from ..idempotency import KeyedJob, in_flight

_IN_FLIGHT = None
"""A key's value while its first request reads its parameters."""


class KeyTable:
    """Keys by (endpoint, key), each an in-flight mark or the job it made; a job's key goes with the job.

    Everything runs on the broker's event loop without awaiting in between, so a check and the change that
    follows it are one step."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], KeyedJob | None] = {}
        self._by_job: dict[str, tuple[str, str]] = {}

    def hold(self, endpoint: str, key: str) -> KeyedJob | None:
        name = (endpoint, key)
        if name not in self._keys:
            self._keys[name] = _IN_FLIGHT
            return None
        held = self._keys[name]
        if held is _IN_FLIGHT:
            raise in_flight(endpoint)
        return held

    def made(self, endpoint: str, key: str) -> KeyedJob | None:
        """The job the key made already, if any (an in-flight mark is this request's own)."""
        return self._keys.get((endpoint, key))

    def remember(self, endpoint: str, key: str, job: KeyedJob) -> None:
        self._keys[(endpoint, key)] = job
        self._by_job[job.job_id] = (endpoint, key)

    def release(self, endpoint: str, key: str, held: KeyedJob | None) -> None:
        name = (endpoint, key)
        if name in self._keys and self._keys[name] == held:
            del self._keys[name]

    def forget_job(self, job_id: str) -> None:
        name = self._by_job.pop(job_id, None)
        if name is not None:
            self._keys.pop(name, None)

"""The embedded queue's Idempotency-Keys: in this process, for as long as their jobs are kept."""

from __future__ import annotations

from ..idempotency import KeyedJob, in_flight

_IN_FLIGHT = ""
"""A key's value while its first request reads its parameters."""


class KeyTable:
    """Keys by endpoint and key, each an in-flight mark or the job it made; a job's key goes with the job.

    Everything runs on the broker's event loop without awaiting in between, so a check and the change that
    follows it are one step. Names and values are plain strings (`KeyedJob.encode`): a table as large as the
    jobs kept adds nothing for the garbage collector to walk."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}
        self._by_job: dict[str, str] = {}

    def hold(self, endpoint: str, key: str) -> KeyedJob | None:
        name = _name(endpoint, key)
        held = self._keys.get(name)
        if held is None:
            self._keys[name] = _IN_FLIGHT
            return None
        if held == _IN_FLIGHT:
            raise in_flight(endpoint)
        return KeyedJob.decode(held)

    def made(self, endpoint: str, key: str) -> KeyedJob | None:
        """The job the key made already, if any (an in-flight mark is this request's own)."""
        held = self._keys.get(_name(endpoint, key))
        return KeyedJob.decode(held) if held else None

    def remember(self, endpoint: str, key: str, job: KeyedJob) -> None:
        name = _name(endpoint, key)
        self._keys[name] = job.encode()
        self._by_job[job.job_id] = name

    def release(self, endpoint: str, key: str, held: KeyedJob | None) -> None:
        name = _name(endpoint, key)
        if self._keys.get(name) == (_IN_FLIGHT if held is None else held.encode()):
            del self._keys[name]

    def forget_job(self, job_id: str) -> None:
        name = self._by_job.pop(job_id, None)
        if name is not None:
            self._keys.pop(name, None)


def _name(endpoint: str, key: str) -> str:
    return f"{endpoint} {key}"  # a key has no space, so the name is unambiguous

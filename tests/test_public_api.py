"""The public surface: what `from fasttask import ...` offers is declared, and stays import-light."""

from __future__ import annotations

from types import ModuleType

import fasttask


def test_public_names_are_declared_and_sorted() -> None:
    exported = {name for name, value in vars(fasttask).items() if not name.startswith("_")}
    exported = {name for name in exported if not isinstance(getattr(fasttask, name), ModuleType)}
    assert set(fasttask.__all__) - {"__version__"} == exported
    assert fasttask.__all__ == sorted(fasttask.__all__, key=lambda name: (name.startswith("_"), name))


def test_errors_carry_their_http_status() -> None:
    expected = {
        fasttask.InvalidInput: 422,
        fasttask.JobNotFound: 404,
        fasttask.JobAlreadyFinal: 409,
        fasttask.QueueFull: 429,
        fasttask.PayloadTooLarge: 413,
        fasttask.Unauthorized: 401,
        fasttask.BackendUnavailable: 503,
    }
    for error, status in expected.items():
        assert issubclass(error, fasttask.FastTaskError)
        assert error.status_code == status

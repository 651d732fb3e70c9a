"""Progress displays: a tqdm bar for one job, one overall bar for a batch, plain lines for logs."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, Protocol, TextIO

from ..jobs import JobStatus
from ._errors import describe_job_error
from ._models import JobState

if TYPE_CHECKING:
    from tqdm import tqdm

Progress = bool | TextIO
"""`progress=` of result, call and map: True for a bar on stderr, a text file for a bar there, False for none."""

JOB_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}"


class ProgressDisplay(Protocol):
    """Shows one job's progress as its states come in."""

    def update(self, state: JobState) -> None: ...

    def close(self) -> None: ...


def _tqdm(**options: Any) -> tqdm[Any]:
    try:
        from tqdm import tqdm
    except ModuleNotFoundError as exc:  # pragma: no cover - tqdm is a dependency of the client
        raise ModuleNotFoundError("progress bars need tqdm: `pip install tqdm`") from exc
    return tqdm(**options)


class JobBar:
    """A tqdm bar of one job: its progress in percent and its latest message."""

    def __init__(self, file: IO[str] | None = None, label: str | None = None) -> None:
        self._file = file
        self._label = label
        self._bar: tqdm[Any] | None = None
        self._shown: tuple[int, str] | None = None

    def update(self, state: JobState) -> None:
        if self._bar is None:
            label = self._label or state.endpoint or state.id[:8]
            self._bar = _tqdm(total=100, desc=label, file=self._file, bar_format=JOB_BAR_FORMAT, leave=True)
        status = state.status
        percent = 100 if status is JobStatus.FINISHED else min(max(round(state.progress * 100), 0), 100)
        if status.is_final and status is not JobStatus.FINISHED:
            text = status.value + (f": {describe_job_error(state)}" if state.error else "")
        elif status is JobStatus.QUEUED:
            text = "queued"
        else:
            text = state.message or ""
        if (percent, text) == self._shown:
            return
        self._shown = (percent, text)
        self._bar.n = percent
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class ProgressLines:
    """One plain line per change of status, progress or message, for output that is not a terminal."""

    def __init__(self, file: IO[str], prefix: str = "") -> None:
        self._file = file
        self._prefix = prefix
        self._shown: tuple[str, int, str | None] | None = None

    def update(self, state: JobState) -> None:
        percent = min(max(round(state.progress * 100), 0), 100)
        shown = (state.status.value, percent, state.message)
        if shown == self._shown:
            return
        self._shown = shown
        line = f"{self._prefix}{state.status.value} {percent:3d}%"
        if state.message:
            line += f" {state.message}"
        print(line, file=self._file, flush=True)

    def close(self) -> None:
        pass


class BatchBar:
    """One bar over a batch of jobs: how many ended, and how many of those failed."""

    def __init__(self, total: int, label: str, file: IO[str] | None = None) -> None:
        self._bar = _tqdm(total=total, desc=label, unit="job", file=file, leave=True)
        self._failed = 0

    def advance(self, failed: bool = False) -> None:
        if failed:
            self._failed += 1
            self._bar.set_postfix_str(f"{self._failed} failed", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def job_display(progress: Progress) -> JobBar | None:
    if isinstance(progress, bool):
        return JobBar() if progress else None
    return JobBar(progress)


def batch_display(progress: Progress, total: int, label: str) -> BatchBar | None:
    if isinstance(progress, bool):
        return BatchBar(total, label) if progress else None
    return BatchBar(total, label, progress)

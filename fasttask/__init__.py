"""fasttask: long-running Python work behind a web API, embedded or distributed."""

from ._version import __version__
from .app import FastTaskAPI
from .errors import (
    BackendUnavailable,
    ConfigError,
    FastTaskError,
    InvalidInput,
    JobAlreadyFinal,
    JobCancelled,
    JobNotFound,
    MissingExtra,
    PayloadTooLarge,
    QueueFull,
    Unauthorized,
)
from .files import AudioFile, ImageFile, MediaFile, VideoFile
from .jobs import JobStatus
from .progress import JobProgress
from .settings import Settings

__all__ = [
    "AudioFile",
    "BackendUnavailable",
    "ConfigError",
    "FastTaskAPI",
    "FastTaskError",
    "ImageFile",
    "InvalidInput",
    "JobAlreadyFinal",
    "JobCancelled",
    "JobNotFound",
    "JobProgress",
    "JobStatus",
    "MediaFile",
    "MissingExtra",
    "PayloadTooLarge",
    "QueueFull",
    "Settings",
    "Unauthorized",
    "VideoFile",
    "__version__",
]

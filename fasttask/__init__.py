"""fasttask: long-running Python work behind a web API, embedded or distributed."""

from ._version import __version__
from .app import FastTaskAPI
from .client import (
    APIError,
    AsyncClient,
    AsyncJob,
    AsyncRemoteFile,
    Client,
    ClientError,
    ConnectionFailed,
    InvalidArgument,
    Job,
    JobFailed,
    JobState,
    RemoteFile,
    ResultTimeout,
    StreamEvent,
)
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
from .tasks import Batch

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncJob",
    "AsyncRemoteFile",
    "AudioFile",
    "BackendUnavailable",
    "Batch",
    "Client",
    "ClientError",
    "ConfigError",
    "ConnectionFailed",
    "FastTaskAPI",
    "FastTaskError",
    "ImageFile",
    "InvalidArgument",
    "InvalidInput",
    "Job",
    "JobAlreadyFinal",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobProgress",
    "JobState",
    "JobStatus",
    "MediaFile",
    "MissingExtra",
    "PayloadTooLarge",
    "QueueFull",
    "RemoteFile",
    "ResultTimeout",
    "Settings",
    "StreamEvent",
    "Unauthorized",
    "VideoFile",
    "__version__",
]

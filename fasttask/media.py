"""media-toolkit interop (the `media` extra): numpy arrays and media-toolkit objects for file parameters.

The only module that imports media_toolkit (and through it opencv and PyAV), and only when a task
asks for it, so the core package and API-only processes never load them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import MissingExtra

if TYPE_CHECKING:
    from .files import MediaFile


def _toolkit() -> ModuleType:
    try:
        return importlib.import_module("media_toolkit")
    except ImportError as exc:
        raise MissingExtra("this needs media-toolkit (numpy, opencv, PyAV): pip install 'fasttask[media]'") from exc


def is_toolkit_object(value: Any) -> bool:
    """True for a media-toolkit file, without importing media-toolkit (a task may return one)."""
    return type(value).__module__.startswith("media_toolkit.") and callable(getattr(value, "to_bytes", None))


def to_toolkit(media: MediaFile) -> Any:
    """The media-toolkit object of the same kind (ImageFile, AudioFile, VideoFile or MediaFile)."""
    toolkit = _toolkit()
    kind = getattr(toolkit, type(media).__name__, toolkit.MediaFile)
    converted = kind().from_bytes(media.to_bytes())
    converted.file_name = media.file_name
    converted.content_type = media.content_type
    return converted


def from_toolkit(value: Any, kind: type[MediaFile], kinds: Mapping[str, type[MediaFile]]) -> MediaFile:
    """A fasttask file holding a media-toolkit object's content, of the matching kind in `kinds` (by class
    name, `files.KINDS`), else `kind`."""
    for base in type(value).__mro__:
        if base.__name__ in kinds:
            kind = kinds[base.__name__]
            break
    name = getattr(value, "file_name", None) or None
    content_type = getattr(value, "content_type", None) or None
    return kind.from_bytes(value.to_bytes(), name, content_type)


def to_np_array(media: MediaFile, **options: Any) -> Any:
    """Decode the file into a numpy array the way media-toolkit does for its kind (images: BGR, like opencv)."""
    return to_toolkit(media).to_np_array(**options)


def from_np_array(kind: type[MediaFile], array: Any, kinds: Mapping[str, type[MediaFile]], **options: Any) -> MediaFile:
    """Encode a numpy array as a file of `kind` with media-toolkit (for images, `img_type="png"` and so on)."""
    toolkit = _toolkit()
    converted = getattr(toolkit, kind.__name__, toolkit.MediaFile)().from_np_array(array, **options)
    return from_toolkit(converted, kind, kinds)

"""Turning what a task returns into JSON, with files replaced by download references."""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from .files import KINDS, MediaFile
from .media import from_toolkit, is_toolkit_object

FileStore = Callable[[MediaFile], dict[str, Any]]
"""Keeps a result file and returns its `{file_name, content_type, size, url}` reference."""


def to_json_value(value: Any, store_file: FileStore) -> Any:
    """A JSON-ready copy of `value`; raises TypeError for what JSON cannot carry."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, MediaFile):
        return store_file(value)
    if isinstance(value, dict):
        return {str(key): to_json_value(item, store_file) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(item, store_file) for item in value]
    if isinstance(value, BaseModel):
        return to_json_value(value.model_dump(mode="python"), store_file)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return to_json_value(fields, store_file)
    if isinstance(value, Enum):
        return to_json_value(value.value, store_file)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | PurePath):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if is_toolkit_object(value):  # a media-toolkit file a task returned
        return store_file(from_toolkit(value, MediaFile, KINDS))
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if callable(tolist):
        return to_json_value(tolist(), store_file)
    raise TypeError(f"a task result of type {type(value).__name__} cannot be sent as JSON")

"""File parameters and results: MediaFile and its typed kinds.

A file's bytes live in a spooled temporary file: small ones in memory, larger ones on disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
import shutil
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import Self

from .errors import PayloadTooLarge, size_text
from .spool import Spool

CHUNK_BYTES = 64 * 1024

_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[^,]*)?;base64,", re.IGNORECASE)
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=_\-\s]*$")


class MediaFile:
    """A file given to or returned by a task."""

    default_content_type = "application/octet-stream"

    def __init__(self, file_name: str | None = None, content_type: str | None = None) -> None:
        self.file_name = file_name or "file"
        self.content_type = content_type or _guess_type(self.file_name) or self.default_content_type
        self._buffer = Spool()
        self._size = 0
        self.source_url: str | None = None
        """Set on a parameter given as a URL until the API process has downloaded it."""
        self.object_key: str | None = None
        """Set while the content lives in object storage (between the API process and a worker)."""

    # -- building -----------------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, file_name: str | None = None, content_type: str | None = None) -> MediaFile:
        media = cls(file_name, content_type)
        media.write(data)
        return media

    @classmethod
    def from_file(cls, path: str | Path, content_type: str | None = None) -> MediaFile:
        """Read a file from the local disk (for tasks; never from request input)."""
        source = Path(path)
        media = cls(source.name, content_type)
        with source.open("rb") as handle:
            media.write_stream(handle)
        return media

    @classmethod
    def from_stream(
        cls,
        stream: IO[bytes],
        file_name: str | None = None,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> MediaFile:
        media = cls(file_name, content_type)
        media.write_stream(stream, max_bytes)
        return media

    @classmethod
    def from_base64(
        cls,
        text: str,
        file_name: str | None = None,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> MediaFile:
        """Decode plain base64 or a `data:<type>;base64,` URI."""
        match = _DATA_URI.match(text)
        if match:
            content_type = content_type or match.group("type")
            text = text[match.end() :]
        if max_bytes is not None and len(text) * 3 // 4 > max_bytes + 3:
            raise PayloadTooLarge(f"file is larger than {size_text(max_bytes)}")
        compact = "".join(text.split())
        if not compact or not _BASE64_CHARS.match(compact):
            raise ValueError("not a base64 string or data URI")
        try:
            altchars = b"-_" if ("-" in compact or "_" in compact) else None
            data = base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not a valid base64 string") from None
        if max_bytes is not None and len(data) > max_bytes:  # the check above leaves room for padding
            raise PayloadTooLarge(f"file is larger than {size_text(max_bytes)}")
        return cls.from_bytes(data, file_name, content_type)

    def write(self, data: bytes) -> None:
        self._buffer.write(data)
        self._size += len(data)

    def write_stream(self, stream: IO[bytes], max_bytes: int | None = None) -> None:
        while chunk := stream.read(CHUNK_BYTES):
            if max_bytes is not None and self._size + len(chunk) > max_bytes:
                raise PayloadTooLarge(f"file is larger than {size_text(max_bytes)}")
            self.write(chunk)

    # -- reading ------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    def open(self) -> BinaryIO:
        """A binary stream over the content, from its start. Each call gives an independent reader."""
        return self._buffer.reader()

    @property
    def disk_path(self) -> str | None:
        """Where the content sits on local disk, when it is large enough to be there (read it, never move it)."""
        return self._buffer.path

    def iter_chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        yield from self.iter_range(0, self.size, chunk_bytes)

    def iter_range(self, start: int, end: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes [start, end) in chunks."""
        with self.open() as stream:
            stream.seek(start)
            remaining = end - start
            while remaining > 0 and (chunk := stream.read(min(chunk_bytes, remaining))):
                remaining -= len(chunk)
                yield chunk

    def to_bytes(self) -> bytes:
        with self.open() as stream:
            return stream.read()

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")

    def save(self, path: str | Path) -> Path:
        """Write the content to `path` (a directory gets the file's own name) and return the file's path."""
        target = Path(path)
        if target.is_dir():
            target = target / Path(self.file_name).name
        with self.open() as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, CHUNK_BYTES)
        return target

    def close(self) -> None:
        self._buffer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- media-toolkit (the `media` extra) ------------------------------------------------------------
    def to_np_array(self, **options: Any) -> Any:
        """The decoded content as a numpy array (images in opencv's BGR order); needs `fasttask[media]`."""
        from .media import to_np_array

        return to_np_array(self, **options)

    def to_media_toolkit(self) -> Any:
        """The same file as a media-toolkit object of the matching kind; needs `fasttask[media]`."""
        from .media import to_toolkit

        return to_toolkit(self)

    @classmethod
    def from_np_array(cls, array: Any, **options: Any) -> MediaFile:
        """Encode a numpy array as a file of this kind (e.g. `ImageFile.from_np_array(a, img_type="png")`)."""
        from .media import from_np_array

        return from_np_array(cls, array, KINDS, **options)

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(file_name={self.file_name!r}, content_type={self.content_type!r}, size={self.size})"

    # -- pydantic -----------------------------------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # In JSON (a job's parameters on their way to a worker) a file travels as its dict form; dumped with
        # FILE_DIGESTS in the context (an Idempotency-Key's fingerprint), as the digest of its bytes
        serializer = core_schema.plain_serializer_function_ser_schema(_dump_file, info_arg=True, when_used="json")
        return core_schema.with_info_plain_validator_function(cls._validate, serialization=serializer)

    def to_dict(self) -> dict[str, Any]:
        """`{file_name, content_type, content: <base64>}`: the dict form file parameters accept.

        A file already in object storage is `{file_name, content_type, size, object: <key>}` instead, a
        form only workers accept (from job records), never clients.
        """
        if self.object_key is not None:
            return {
                "file_name": self.file_name,
                "content_type": self.content_type,
                "size": self.size,
                "object": self.object_key,
            }
        return {"file_name": self.file_name, "content_type": self.content_type, "content": self.to_base64()}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        kind = cls.__name__
        return {
            "title": kind,
            "description": f"{kind}: a multipart upload, a base64 string or data URI, "
            "or {file_name, content_type, content: <base64>}",
            "anyOf": [
                {"type": "string", "format": "binary"},
                {"type": "string", "description": "base64 or data URI"},
                {
                    "type": "object",
                    "properties": {
                        "file_name": {"type": "string"},
                        "content_type": {"type": "string"},
                        "content": {"type": "string", "description": "base64"},
                    },
                    "required": ["content"],
                },
            ],
        }

    @classmethod
    def _validate(cls, value: Any, info: core_schema.ValidationInfo) -> MediaFile:
        context = info.context if isinstance(info.context, dict) else {}
        media = cls._parse(value, context)
        created = context.get("created_files")
        if isinstance(created, list) and media is not value:
            created.append(media)  # closed by the caller if another field fails validation
        return media

    @classmethod
    def _parse(cls, value: Any, context: dict[str, Any]) -> MediaFile:
        max_bytes = context.get("max_file_bytes")
        try:
            if isinstance(value, MediaFile):
                if isinstance(value, cls):
                    return value
                return cls._adopt(value)
            if isinstance(value, bytes | bytearray):
                if max_bytes is not None and len(value) > max_bytes:
                    raise PayloadTooLarge(f"file is larger than {size_text(max_bytes)}")
                return cls.from_bytes(bytes(value))
            if isinstance(value, str):
                if value.startswith(("http://", "https://")):
                    remote = cls()
                    remote.source_url = value
                    return remote
                return cls.from_base64(value, max_bytes=max_bytes)
            if isinstance(value, dict) and isinstance(value.get("object"), str) and context.get("trusted_objects"):
                stored = cls(value.get("file_name"), value.get("content_type"))
                stored.object_key = value["object"]
                stored._size = int(value.get("size") or 0)
                return stored
            if isinstance(value, dict) and isinstance(value.get("content"), str):
                return cls.from_base64(
                    value["content"], value.get("file_name"), value.get("content_type"), max_bytes=max_bytes
                )
        except ValueError as exc:
            raise PydanticCustomError("file_parsing", "{reason}", {"reason": str(exc)}) from None
        raise PydanticCustomError(
            "file_type", "expected a file: an upload, a base64 string, a data URI or {file_name, content}"
        )

    def take_content(self, other: MediaFile) -> None:
        """Hold `other`'s content from now on (a downloaded parameter), keeping this file's kind."""
        self._buffer.close()
        self.__dict__.update({k: v for k, v in other.__dict__.items() if k in ("_buffer", "_size", "file_name")})
        if other.content_type != other.default_content_type or self.content_type == self.default_content_type:
            self.content_type = other.content_type
        self.source_url = None
        self.object_key = None

    @classmethod
    def _adopt(cls, other: MediaFile) -> MediaFile:
        """Give another MediaFile's content this class, sharing the buffer (no copy)."""
        media = cls.__new__(cls)
        media.__dict__.update(other.__dict__)
        return media


FILE_DIGESTS = "file_digests"
"""A serialization context key: files dump as `{"sha256": <hex of their bytes>}` instead of their content."""


def _dump_file(media: MediaFile, info: core_schema.SerializationInfo) -> dict[str, Any]:
    context = info.context
    if context and context.get(FILE_DIGESTS):
        digest = hashlib.sha256()
        for chunk in media.iter_chunks():
            digest.update(chunk)
        return {"sha256": digest.hexdigest()}
    return media.to_dict()


class ImageFile(MediaFile):
    """An image file."""

    default_content_type = "image/png"


class AudioFile(MediaFile):
    """An audio file."""

    default_content_type = "audio/mpeg"


class VideoFile(MediaFile):
    """A video file."""

    default_content_type = "video/mp4"


KINDS: dict[str, type[MediaFile]] = {"ImageFile": ImageFile, "AudioFile": AudioFile, "VideoFile": VideoFile}


def iter_files(value: Any) -> Iterator[MediaFile]:
    """The MediaFiles in `value`, also inside lists, tuples and dicts."""
    if isinstance(value, MediaFile):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_files(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_files(item)


def close_files(values: Iterable[Any], keep: Collection[MediaFile] = ()) -> None:
    """Close the files among `values` (also inside lists and dicts), except those in `keep`."""
    for value in values:
        if isinstance(value, MediaFile):
            if not any(value is kept for kept in keep):
                value.close()
        elif isinstance(value, list | tuple):
            close_files(value, keep)
        elif isinstance(value, dict):
            close_files(value.values(), keep)


def _guess_type(file_name: str) -> str | None:
    return mimetypes.guess_type(file_name, strict=False)[0]

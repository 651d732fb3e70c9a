"""Files both ways: parameters that go up as multipart parts (or inline as base64, for runpod), and file
results that download on demand (or decode on demand, when runpod returned them inline)."""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from ..files import MediaFile
from ..jobs import is_file_result
from ._errors import ClientError, InvalidArgument

if TYPE_CHECKING:
    from ._transport import AsyncTransport, Transport

OCTET_STREAM = "application/octet-stream"

FilePartSource = Path | bytes | MediaFile | IO[bytes]


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart upload. It is opened anew for each attempt, so a retried request sends it whole."""

    file_name: str
    content_type: str
    source: FilePartSource
    position: int = 0

    def open(self, stack: ExitStack) -> tuple[str, IO[bytes] | bytes, str]:
        """The `(file name, content, content type)` httpx uploads; `stack` closes what was opened."""
        content: IO[bytes] | bytes
        if isinstance(self.source, bytes):
            content = self.source
        elif isinstance(self.source, Path):
            content = stack.enter_context(self.source.open("rb"))
        elif isinstance(self.source, MediaFile):
            content = stack.enter_context(self.source.open())
        else:
            self.source.seek(self.position)
            content = self.source
        return self.file_name, content, self.content_type

    def inline(self) -> dict[str, str]:
        """The file as `{file_name, content_type, content: <base64>}`, the form a JSON-only API (runpod) takes."""
        with ExitStack() as stack:
            _, content, _ = self.open(stack)
            data = content if isinstance(content, bytes) else content.read()
        return {
            "file_name": self.file_name,
            "content_type": self.content_type,
            "content": base64.b64encode(data).decode("ascii"),
        }


Encoded = tuple[Any, dict[str, Any] | None, list[tuple[str, FilePart]]]
"""A submit's body: JSON, or form fields and file parts."""


def encode_params(params: Mapping[str, Any], as_form: bool = False) -> Encoded:
    """JSON when no parameter is a file (and `as_form` is off); otherwise form fields plus file parts.

    In a form, models, dicts and lists travel as JSON text, which the service reads back for such parameters;
    with `as_form` (the `fasttask call` command) a list of strings becomes repeated fields instead.
    """
    fields: dict[str, Any] = {}
    files: list[tuple[str, FilePart]] = []
    for name, value in params.items():
        parts = file_parts(name, value)
        if parts is None:
            fields[name] = value
        else:
            files.extend((name, part) for part in parts)
    if not files and not as_form:
        return to_jsonable_python(fields), None, []
    data = {name: _form_value(value, as_form) for name, value in fields.items() if value is not None}
    return None, data, files


def inline_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as one JSON object, each file (a path, bytes, a file object, a MediaFile, or a list of
    them) as `{file_name, content_type, content: <base64>}`: what a JSON-only API (runpod) takes. The files
    are read whole into the request."""
    body: dict[str, Any] = {}
    for name, value in params.items():
        parts = file_parts(name, value)
        if parts is None:
            body[name] = to_jsonable_python(value)
        elif isinstance(value, list | tuple):
            body[name] = [part.inline() for part in parts]
        else:
            body[name] = parts[0].inline()
    return body


def file_parts(name: str, value: Any) -> list[FilePart] | None:
    """The parts of a file parameter (a list of files gives several), or None when `value` is no file."""
    if isinstance(value, list | tuple) and value:
        parts = [file_part(name, item) for item in value]
        if all(part is not None for part in parts):
            return [part for part in parts if part is not None]
        return None
    part = file_part(name, value)
    return None if part is None else [part]


def file_part(name: str, value: Any) -> FilePart | None:
    """A path, bytes, a binary file object or a MediaFile as an upload; None for anything else."""
    if isinstance(value, MediaFile):
        return FilePart(value.file_name, value.content_type, value)
    if isinstance(value, PurePath):
        path = Path(value)
        return FilePart(path.name, _guess_type(path.name), path)
    if isinstance(value, bytes | bytearray | memoryview):
        return FilePart(name, OCTET_STREAM, bytes(value))
    if callable(getattr(value, "read", None)):
        raw_name = getattr(value, "name", None)
        file_name = Path(raw_name).name if isinstance(raw_name, str) and raw_name else name
        content_type = _guess_type(file_name) if file_name != name else OCTET_STREAM
        seekable = getattr(value, "seekable", None)
        if callable(seekable) and seekable():
            return FilePart(file_name, content_type, value, value.tell())
        data = value.read()  # a pipe or socket can be read once only: keep its content for retries
        if not isinstance(data, bytes):
            raise InvalidArgument(f"parameter {name!r}: open files in binary mode ('rb') to upload them")
        return FilePart(file_name, content_type, data)
    return None


def _form_value(value: Any, as_form: bool) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if as_form and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)  # repeated form fields, as `curl -d k=a -d k=b` sends them
    plain = to_jsonable_python(value)
    if isinstance(plain, str):
        return plain
    return json.dumps(plain, separators=(",", ":"), ensure_ascii=False)


def _guess_type(file_name: str) -> str:
    return mimetypes.guess_type(file_name, strict=False)[0] or OCTET_STREAM


# -- results ---------------------------------------------------------------------------------------------
INLINE_CHUNK_CHARS = 4 * 256 * 1024
"""Base64 characters decoded at a time (1 MiB of content), so an inline result is never decoded whole at once."""


def is_inline_file(value: Any) -> bool:
    """Whether `value` is a file result with its content inline: `{file_name, content_type, content: <base64>}`
    (what fasttask's runpod handler returns without a bucket)."""
    return (
        isinstance(value, dict)
        and value.keys() == {"file_name", "content_type", "content"}
        and isinstance(value["content"], str)
    )


def is_any_file_result(value: Any) -> bool:
    """A file result to download (`{file_name, content_type, size, url}`) or one with its content inline."""
    return is_file_result(value) or is_inline_file(value)


class _RemoteFileBase:
    """A file result's metadata: `{file_name, content_type, size, url}`, or `{file_name, content_type,
    content}` with the content inline as base64 (then `url` is None and `size` is the decoded length)."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.file_name = str(info["file_name"])
        self.content_type = str(info["content_type"])
        self._inline: str | None = None
        self.url: str | None
        if "url" in info:
            self.size = int(info["size"])
            self.url = str(info["url"])
        else:
            self._inline = "".join(str(info["content"]).split())  # base64 may come wrapped in lines
            self.size = _decoded_size(self._inline)
            self.url = None

    def to_dict(self) -> dict[str, Any]:
        """The file result as the service sent it."""
        if self._inline is not None:
            return {"file_name": self.file_name, "content_type": self.content_type, "content": self._inline}
        return {"file_name": self.file_name, "content_type": self.content_type, "size": self.size, "url": self.url}

    def _decoded_chunks(self, inline: str) -> Iterator[bytes]:
        for start in range(0, len(inline), INLINE_CHUNK_CHARS):
            try:
                yield base64.b64decode(inline[start : start + INLINE_CHUNK_CHARS], validate=True)
            except (binascii.Error, ValueError):
                raise ClientError(f"the content of file result {self.file_name!r} is not valid base64") from None

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(file_name={self.file_name!r}, content_type={self.content_type!r}, size={self.size})"


def _decoded_size(text: str) -> int:
    """How many bytes a base64 text decodes to, without decoding it."""
    return max(len(text) // 4 * 3 - text[-2:].count("="), 0)


class RemoteFile(_RemoteFileBase):
    """A file a job returned. Its content downloads when asked for, through the client that read the job
    (an inline one, from runpod, is decoded when asked for)."""

    def __init__(self, info: Mapping[str, Any], transport: Transport) -> None:
        super().__init__(info)
        self._transport = transport

    def iter_bytes(self) -> Iterator[bytes]:
        if self.url is None:  # inline: decoded now, piece by piece
            yield from self._decoded_chunks(self._inline or "")
            return
        with self._transport.download(self.url) as chunks:
            yield from chunks

    def to_bytes(self) -> bytes:
        return b"".join(self.iter_bytes())

    def save(self, path: str | Path) -> Path:
        """Write the file to `path` and return where it went: a directory, or a path ending in `/` (created when
        missing), gets the file under its own name."""
        target = save_target(path, self.file_name)
        with _writing(target) as sink:
            for chunk in self.iter_bytes():
                sink.write(chunk)
        return target


class AsyncRemoteFile(_RemoteFileBase):
    """A file a job returned, for AsyncClient: `await file.save(path)`, `await file.to_bytes()`."""

    def __init__(self, info: Mapping[str, Any], transport: AsyncTransport) -> None:
        super().__init__(info)
        self._transport = transport

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        if self.url is None:  # inline: decoded now, piece by piece
            for piece in self._decoded_chunks(self._inline or ""):
                yield piece
            return
        async with self._transport.download(self.url) as chunks:
            async for chunk in chunks:
                yield chunk

    async def to_bytes(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_bytes()])

    async def save(self, path: str | Path) -> Path:
        """Write the file to `path` and return where it went: a directory, or a path ending in `/` (created when
        missing), gets the file under its own name."""
        target = save_target(path, self.file_name)
        with _writing(target) as sink:
            async for chunk in self.iter_bytes():
                sink.write(chunk)
        return target


def save_target(path: str | Path, file_name: str) -> Path:
    """Where `save(path)` writes: inside `path` under the file's own name when `path` is a directory or ends
    with a separator (`"out/"`, created when missing), else at `path` (its missing parents created)."""
    text = os.fspath(path)
    target = Path(text)
    if target.is_dir() or text.endswith(("/", os.sep)):
        target.mkdir(parents=True, exist_ok=True)
        return target / safe_file_name(file_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def safe_file_name(file_name: str) -> str:
    """The file name without any directory part, so a result can never be written outside the target directory."""
    name = PurePath(file_name.replace("\\", "/")).name.strip()
    return name if name not in ("", ".", "..") else "file"


@contextmanager
def _writing(target: Path) -> Iterator[IO[bytes]]:
    """`target` open for writing; removed again when writing fails, so no half file is left behind."""
    try:
        with target.open("wb") as sink:
            yield sink
    except BaseException:
        target.unlink(missing_ok=True)
        raise

"""Streaming multipart/form-data parsing that writes file parts straight into their destination.

Starlette spools every upload to a temporary file before anyone can look at it; here each file part is
written into a `MediaFile` as it arrives, and refused with 413 the moment it grows past the limit, so
an oversized upload costs neither memory nor a full copy on disk. Everything else (plain fields, part
headers, and file parts for parameters that take no file) counts against one cap for the body's other
content, with 413 the moment it is passed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import InvalidInput, PayloadTooLarge, size_text
from ..files import MediaFile, close_files
from .limits import MAX_FIELDS, MAX_FILES


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.file: MediaFile | None = None
        self.data = bytearray()


class MultipartReader:
    """Collects `(name, value)` pairs of a multipart body: values are strings, or MediaFiles for files.

    File parts of `file_params` may each take `max_file_bytes`; all the rest together `other_bytes`
    (beyond it, `too_large` is raised)."""

    def __init__(
        self,
        boundary: bytes,
        max_file_bytes: int,
        other_bytes: int,
        too_large: PayloadTooLarge,
        file_params: frozenset[str],
    ) -> None:
        self.items: list[tuple[str, Any]] = []
        self._max_file_bytes = max_file_bytes
        self._other_left = other_bytes
        self._too_large = too_large
        self._file_params = file_params
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._fields = 0
        self._files = 0
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        }
        self._parser = MultipartParser(boundary, callbacks)

    async def read(self, stream: AsyncIterator[bytes]) -> list[tuple[str, Any]]:
        try:
            async for chunk in stream:
                self._parser.write(chunk)
            self._parser.finalize()
        except PayloadTooLarge:
            self.close()
            raise
        except Exception as exc:  # python-multipart's own parse errors, and ours
            self.close()
            raise InvalidInput(f"could not parse the multipart body: {exc}") from None
        return self.items

    def close(self) -> None:
        close_files([value for _, value in self.items])
        if self._part.file is not None:
            self._part.file.close()

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _spend(self, n_bytes: int) -> None:
        self._other_left -= n_bytes
        if self._other_left < 0:
            raise self._too_large

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._spend(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._spend(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        part = self._part
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise ValueError("a part without a name in its Content-Disposition")
        part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self._files += 1
            if self._files > MAX_FILES:
                raise PayloadTooLarge(f"the form has more than {MAX_FILES} files")
            content_type = part.headers.get(b"content-type", b"").decode("latin-1") or None
            part.file = MediaFile(options[b"filename"].decode("utf-8", "replace"), content_type)
        else:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise PayloadTooLarge(f"the form has more than {MAX_FIELDS} fields")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is not None:
            if part.name not in self._file_params:  # a file for a parameter that takes none: bounded as the rest
                self._spend(end - start)
            elif part.file.size + (end - start) > self._max_file_bytes:
                name = (part.file.file_name or "")[:100]
                raise PayloadTooLarge(f"file {name!r} is larger than {size_text(self._max_file_bytes)}")
            part.file.write(data[start:end])
            return
        self._spend(end - start)
        part.data += data[start:end]

    def _on_part_end(self) -> None:
        part = self._part
        if part.file is not None:
            self.items.append((part.name, part.file))
            part.file = None
        else:
            self.items.append((part.name, part.data.decode("utf-8", "replace")))


def boundary_of(content_type_header: str) -> bytes:
    _, options = parse_options_header(content_type_header)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart/form-data without a boundary")
    return boundary

"""A file's content, in memory while small and in a temporary file of its own beyond that."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from typing import IO, BinaryIO

SPOOL_IN_MEMORY_BYTES = 1024 * 1024
"""Files up to this size stay in memory; larger ones go to a temporary file on disk."""


class Spool:
    """File content: in memory up to SPOOL_IN_MEMORY_BYTES, then in a temporary file of its own.

    Unlike tempfile.SpooledTemporaryFile, the file on disk has a path, so every reader opens its own
    handle with its own position, and closing a reader never closes the content.
    """

    def __init__(self) -> None:
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        self._path: str | None = None
        self.closed = False

    def write(self, data: bytes) -> None:
        if self._file is not None:
            self._file.write(data)
            return
        self._memory += data
        if len(self._memory) > SPOOL_IN_MEMORY_BYTES:
            descriptor, self._path = tempfile.mkstemp(prefix="fasttask-")
            self._file = os.fdopen(descriptor, "wb")
            self._file.write(self._memory)
            self._memory = bytearray()

    @property
    def path(self) -> str | None:
        """The temporary file holding the content once it outgrew memory."""
        if self._file is not None:
            self._file.flush()
        return self._path

    def reader(self) -> BinaryIO:
        if self.closed:
            raise ValueError("the file was closed")
        if self._file is None:
            return io.BytesIO(bytes(self._memory))
        self._file.flush()
        assert self._path is not None
        return open(self._path, "rb")

    def __del__(self) -> None:
        if not self.closed:
            warnings.warn(f"unclosed MediaFile content {self!r}", ResourceWarning, stacklevel=1, source=self)
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._memory = bytearray()
        if self._file is not None:
            self._file.close()
            assert self._path is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

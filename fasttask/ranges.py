"""HTTP `Range` requests on downloads: one byte range per request, as resumable downloads use."""

from __future__ import annotations

from .errors import RangeNotSatisfiable


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [start, end) a `Range: bytes=...` header asks for, or None to send the whole file.

    Forms we do not serve (several ranges, other units) get the whole file, which RFC 9110 allows.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":  # the last N bytes
            length = int(last)
            if length <= 0:
                raise RangeNotSatisfiable(f"range {header!r} is empty")
            return max(0, size - length), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        raise RangeNotSatisfiable(f"range {header!r} is outside the file's {size} bytes")
    return start, min(end, size)

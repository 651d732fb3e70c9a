"""What one request may bring, and reading it within those bounds.

Every cap answers 413 with a JSON detail, and is checked before the work it protects: a body whose
declared length or bytes read so far pass its cap is refused at once, without reading the rest; a JSON
text that could hold more values than the request may carry is refused before it is parsed. JSON is
parsed by pydantic-core's parser, which refuses NaN, Infinity and lone surrogates and stops at a few
hundred levels of nesting instead of exhausting the stack; numbers out of range (`1e400`) and nesting past
MAX_DEPTH are refused after it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import params
from fastapi.routing import APIRoute
from pydantic_core import from_json
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, size_text
from .responses import error_response

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_FIELDS = 1000
"""Parameters one request may name, in its body and in its query string each (form fields, JSON members)."""
MAX_FILES = 100
"""File parts one multipart body may carry."""
MAX_DEPTH = 32
"""Deepest nesting of JSON arrays and objects, in a body or in a form or query value."""
MAX_VALUES = 100_000
"""JSON values one request may carry in all (items of arrays and members of objects, at any depth).
Validation reports an error per bad item, and a 422 listing millions of them costs seconds and gigabytes."""

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_STRING_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


@dataclass(frozen=True)
class InputLimits:
    """What a request may bring: its body, the largest file, and whether URLs may point at private addresses."""

    max_file_bytes: int
    allow_private_urls: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def body_cap(self, takes_files: bool) -> int:
        """Largest JSON or urlencoded body, and largest total of a multipart body's non-file fields: the
        body limit, plus, for an endpoint with file parameters, the base64 of one file of the largest size
        (files in JSON or in plain form fields travel as base64)."""
        if not takes_files:
            return self.max_body_bytes
        return self.max_body_bytes + base64_length(self.max_file_bytes)

    def body_too_large(self, takes_files: bool) -> PayloadTooLarge:
        cap = size_text(self.body_cap(takes_files))
        if not takes_files:
            return PayloadTooLarge(f"the request body is larger than {cap} (FTAPI_MAX_BODY_MB)")
        return PayloadTooLarge(
            f"the request body is larger than {cap}: {size_text(self.max_body_bytes)} (FTAPI_MAX_BODY_MB) plus "
            f"one file of {size_text(self.max_file_bytes)} (FTAPI_MAX_FILE_MB) as base64; "
            "send several large files as multipart uploads"
        )


def base64_length(n_bytes: int) -> int:
    return 4 * ((n_bytes + 2) // 3)


async def read_body(request: Request, limits: InputLimits, takes_files: bool) -> bytearray:
    """The request body, refused with 413 as soon as its declared length or the bytes read pass its cap."""
    cap = limits.body_cap(takes_files)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > cap):
        raise limits.body_too_large(takes_files)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise limits.body_too_large(takes_files)
    return body


def bound_route_body(route: APIRoute, limits: InputLimits) -> None:
    """Cap the body of a route FastAPI reads itself (an `@app.endpoint` function) like a task's."""
    takes_files = any(isinstance(field.field_info, params.File) for field in route.dependant.body_params)
    route.app = _BodyCap(route.app, limits, takes_files)


class _BodyCap:
    """413 for a body past the cap: at once when its length says so, else when the bytes read pass it
    (raised into FastAPI's body reading, which answers it as JSON)."""

    def __init__(self, app: ASGIApp, limits: InputLimits, takes_files: bool) -> None:
        self.app = app
        self.limits = limits
        self.takes_files = takes_files
        self.cap = limits.body_cap(takes_files)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > self.cap):
            response = error_response(self.limits.body_too_large(self.takes_files))
            assert response is not None
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.cap:
                raise HTTPException(413, self.limits.body_too_large(self.takes_files).detail)
            return message

        await self.app(scope, counted, send)


def query_pairs(request: Request, limits: InputLimits) -> list[tuple[str, str]]:
    """The query string's parameters, within the body limit and MAX_FIELDS."""
    raw: bytes = request.scope.get("query_string", b"")
    if not raw:
        return []
    if len(raw) > limits.max_body_bytes:
        raise PayloadTooLarge(f"the query string is larger than {size_text(limits.max_body_bytes)} (FTAPI_MAX_BODY_MB)")
    return form_pairs(raw, "query string")


def form_pairs(raw: bytes | bytearray, where: str = "form") -> list[tuple[str, str]]:
    """The fields of an urlencoded text (a form body or a query string), at most MAX_FIELDS of them."""
    try:
        return parse_qsl(
            raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace", max_num_fields=MAX_FIELDS
        )
    except ValueError:  # the only one parse_qsl raises with these arguments: too many fields
        raise PayloadTooLarge(f"the {where} has more than {MAX_FIELDS} fields") from None


def check_field_count(count: int, where: str) -> None:
    if count > MAX_FIELDS:
        raise PayloadTooLarge(f"the {where} has more than {MAX_FIELDS} fields")


class ValueBudget:
    """How many more JSON values one request may bring; its body, form fields and query share it."""

    def __init__(self, values: int = MAX_VALUES) -> None:
        self.left = values

    def take(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise PayloadTooLarge(
                f"the request holds more than {MAX_VALUES} JSON values (array items and object members); "
                "send large arrays as a file"
            )


def parse_json(text: bytes | bytearray | str, budget: ValueBudget) -> Any:
    """Parse a JSON text within the request's budget of values.

    Raises ValueError for a text that is not JSON, nests deeper than MAX_DEPTH or holds a number out of
    range, and PayloadTooLarge (before parsing, where the text shows it) for one with too many values.
    """
    if len(text) > budget.left:  # only a text this long can hold more values than the budget has left
        bound = _values_at_most(text, budget.left)
        if bound > budget.left:
            budget.take(bound)
    value = from_json(text, allow_inf_nan=False)
    budget.take(_checked_values(value))
    return value


def _values_at_most(text: bytes | bytearray | str, enough: int) -> int:
    """An upper bound of the values in a JSON text: its separators and openers, outside strings once the
    quick count (which counts those inside strings too) passes `enough`."""
    if isinstance(text, str):
        bound = text.count(",") + text.count("[") + text.count("{")
        if bound > enough:
            bare = _JSON_STRING_TEXT.sub("", text)
            bound = bare.count(",") + bare.count("[") + bare.count("{")
        return bound
    bound = text.count(b",") + text.count(b"[") + text.count(b"{")
    if bound > enough:
        stripped = _JSON_STRING.sub(b"", text)
        bound = stripped.count(b",") + stripped.count(b"[") + stripped.count(b"{")
    return bound


def _checked_values(value: Any) -> int:
    """How many values `value` holds below its top; raises ValueError past MAX_DEPTH or for a number
    out of range (the parser turns `1e400` into infinity, which JSON cannot carry back)."""
    count = 0
    level = [value] if isinstance(value, dict | list | float) else []
    depth = 0
    while level:
        below: list[Any] = []
        for node in level:
            if isinstance(node, float):
                if not math.isfinite(node):
                    raise ValueError("a number is out of range")
                continue
            if depth == MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            children = node.values() if isinstance(node, dict) else node
            count += len(children)
            below += [child for child in children if isinstance(child, dict | list | float)]
        level = below
        depth += 1
    return count

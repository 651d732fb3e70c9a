"""Reading a task's parameters from a request: JSON, a form (urlencoded or multipart) or a query string."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.requests import Request

from .errors import InvalidInput, PayloadTooLarge
from .fetch import UrlRefused, download
from .files import close_files, iter_files
from .multipart import MultipartReader, boundary_of
from .responses import RequestValidationFailed
from .tasks import TaskDef, validation_errors

BODY_OVERHEAD_BYTES = 1024 * 1024
"""Besides one file's base64 (4/3 of FTAPI_MAX_FILE_MB), what a JSON or urlencoded body may hold."""


def body_limit(max_file_bytes: int) -> int:
    """Largest JSON or urlencoded body: one file of the largest size as base64, plus the other fields."""
    return max_file_bytes * 4 // 3 + BODY_OVERHEAD_BYTES


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (before it is all in memory)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit // (1024 * 1024)} MB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit // (1024 * 1024)} MB")
    return bytes(body)


@dataclass(frozen=True)
class InputLimits:
    """What a request may bring: the largest file, and whether URLs may point at private addresses."""

    max_file_bytes: int
    allow_private_urls: bool = False


async def read_params(request: Request, task: TaskDef, limits: InputLimits) -> dict[str, Any]:
    """The validated keyword arguments of a task call, URL file parameters downloaded."""
    max_file_bytes = limits.max_file_bytes
    data: dict[str, Any] = _multi_dict(request.query_params.multi_items(), task)
    location = "query"
    content_type_header = request.headers.get("content-type", "")
    content_type = content_type_header.split(";", 1)[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        body = await read_body(request, body_limit(max_file_bytes))
        if body.strip():
            location = "body"
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                raise RequestValidationFailed(
                    [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {exc}"}]
                ) from None
            if not isinstance(parsed, dict):
                raise RequestValidationFailed(
                    [{"type": "model_attributes_type", "loc": ["body"], "msg": "the body must be a JSON object"}]
                )
            data.update(parsed)
    elif content_type == "application/x-www-form-urlencoded":
        location = "body"
        body = await read_body(request, body_limit(max_file_bytes))
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace")
        data.update(_multi_dict(pairs, task))
    elif content_type == "multipart/form-data":
        location = "body"
        reader = MultipartReader(boundary_of(content_type_header), max_file_bytes)
        data.update(_multi_dict(await reader.read(request.stream()), task))
    try:
        params = task.validate(data, max_file_bytes)
    except ValidationError as exc:
        close_files(data.values())
        raise RequestValidationFailed(validation_errors(exc, location)) from None
    except BaseException:
        close_files(data.values())
        raise
    try:
        await _download_url_files(params, limits, location)
    except BaseException:
        close_files(params.values())
        raise
    return params


async def _download_url_files(params: dict[str, Any], limits: InputLimits, location: str) -> None:
    for name, value in params.items():
        for media in iter_files(value):
            if media.source_url is None:
                continue
            try:
                downloaded = await download(media.source_url, limits.max_file_bytes, limits.allow_private_urls)
            except InvalidInput as exc:
                kind = "url_refused" if isinstance(exc, UrlRefused) else "url_download"
                raise RequestValidationFailed([{"type": kind, "loc": [location, name], "msg": exc.detail}]) from None
            media.take_content(downloaded)


def _multi_dict(items: list[tuple[str, Any]], task: TaskDef) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in items:
        if key in task.list_params:
            data.setdefault(key, []).append(value)
        else:
            data[key] = value
    return {key: _maybe_json(key, value, task) for key, value in data.items()}


def _maybe_json(key: str, value: Any, task: TaskDef) -> Any:
    """Form and query values are strings; a field that holds a model, dict or list may come as JSON text."""
    if isinstance(value, str) and key not in task.file_params and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list) and len(value) == 1 and key not in task.file_params:
        only = value[0]
        if isinstance(only, str) and only[:1] == "[":
            try:
                return json.loads(only)
            except ValueError:
                return value
    return value

"""Reading a task's parameters from a request: JSON, a form (urlencoded or multipart) or a query string."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from .errors import InvalidInput, PayloadTooLarge
from .files import MediaFile, close_files
from .responses import RequestValidationFailed
from .tasks import TaskDef, validation_errors

MAX_FORM_FIELDS = 1000
MAX_FORM_FILES = 100
MAX_FORM_PART_BYTES = 16 * 1024 * 1024
"""Largest non-file multipart field: base64 files sent as form fields must fit."""


async def read_params(request: Request, task: TaskDef, max_file_bytes: int) -> dict[str, Any]:
    """The validated keyword arguments of a task call."""
    data: dict[str, Any] = _multi_dict(request.query_params.multi_items(), task)
    location = "query"
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        body = await request.body()
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
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        location = "body"
        try:
            form = await request.form(
                max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_PART_BYTES
            )
        except Exception as exc:  # starlette raises its own HTTPException or MultiPartException
            raise InvalidInput(f"could not parse the form: {getattr(exc, 'detail', exc)}") from None
        try:
            data.update(_form_values(form, task, max_file_bytes))
        finally:
            await form.close()  # the uploads' spools were copied into MediaFiles
    try:
        return task.validate(data, max_file_bytes)
    except ValidationError as exc:
        close_files(data.values())
        raise RequestValidationFailed(validation_errors(exc, location)) from None
    except BaseException:
        close_files(data.values())
        raise


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


def _form_values(form: FormData, task: TaskDef, max_file_bytes: int) -> dict[str, Any]:
    items: list[tuple[str, Any]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if value.size is not None and value.size > max_file_bytes:
                raise PayloadTooLarge(f"file {value.filename!r} is larger than {max_file_bytes // (1024 * 1024)} MB")
            value.file.seek(0)
            media = MediaFile.from_stream(value.file, value.filename, value.content_type, max_file_bytes)
            items.append((key, media))
        else:
            items.append((key, value))
    return _multi_dict(items, task)

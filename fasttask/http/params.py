"""Reading a task's parameters from a request: JSON, a form (urlencoded or multipart) or a query string."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from ..errors import InvalidInput, UnsupportedMediaType
from ..fetch import UrlRefused, download
from ..files import close_files, iter_files
from ..tasks import TaskDef, validation_errors
from ..webhooks import WebhookSpec, check_url, split_envelope, webhook_spec
from .limits import (
    InputLimits,
    ValueBudget,
    check_field_count,
    form_pairs,
    parse_json,
    query_pairs,
    read_body,
)
from .multipart import MultipartReader, boundary_of
from .responses import RequestValidationFailed

__all__ = ["InputLimits", "read_params", "read_request_data", "read_submission"]

_NO_NAMES: frozenset[str] = frozenset()


async def read_params(request: Request, task: TaskDef, limits: InputLimits) -> dict[str, Any]:
    """The validated keyword arguments of a task call, URL file parameters downloaded."""
    data, location = await _read_data(request, task, limits)
    return await _validated(data, location, task, limits)


async def read_submission(
    request: Request, task: TaskDef, limits: InputLimits
) -> tuple[dict[str, Any], WebhookSpec | None]:
    """A submit's keyword arguments, as `read_params`, and the webhook it asks for when its body is the
    envelope `{"input", "webhook", "webhook_events_filter"}` (its URL passed the address guard)."""
    data, location = await _read_data(request, task, limits)
    webhook = None
    if location == "body" and "input" in data:
        data, fields = split_envelope(data, task)
        if fields is not None:
            webhook, errors = webhook_spec(fields)
            if webhook is not None:
                try:
                    await check_url(webhook.url, limits.allow_private_urls)
                except UrlRefused as exc:
                    errors = [{"type": "url_refused", "loc": ["body", "webhook"], "msg": exc.detail}]
            if errors:
                close_files(data.values())
                raise RequestValidationFailed(errors)
    return await _validated(data, location, task, limits), webhook


async def _read_data(request: Request, task: TaskDef, limits: InputLimits) -> tuple[dict[str, Any], str]:
    fields = task.params_model.model_fields
    return await read_request_data(request, limits, task.file_params, task.list_params, fields.keys())


async def _validated(data: dict[str, Any], location: str, task: TaskDef, limits: InputLimits) -> dict[str, Any]:
    try:
        params = task.validate(data, limits.max_file_bytes)
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


async def read_request_data(
    request: Request,
    limits: InputLimits,
    file_params: frozenset[str] = _NO_NAMES,
    list_params: frozenset[str] = _NO_NAMES,
    known: Collection[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """A request's parameters before validation, and where they came from (`body` or `query`).

    The query string is read first; a body adds to it: JSON, a form, or, under any other declared type,
    a JSON object (a browser's `fetch()` sends JSON as text/plain unless told otherwise). Any other
    non-empty body is refused with 415 rather than ignored. Bodies are bounded as `limits` says.
    With a body, query parameters whose names are not in `known` (when given) are left out: clients of
    APIPod's protocol add their own (fastSDK 0.4 sends `?details_id=` with every call).
    """
    budget = ValueBudget()
    names = _Names(file_params, list_params, budget)
    query = query_pairs(request, limits)
    data = names.collect(query) if query else {}
    body = await _read_body(request, limits, names)
    if body is None:
        return data, "query"
    if not data:
        return body, "body"
    if known is not None:
        data = {key: value for key, value in data.items() if key in known}
    data.update(body)
    return data, "body"


async def _read_body(request: Request, limits: InputLimits, names: _Names) -> dict[str, Any] | None:
    """The parameters a body brings, or None when there is no body."""
    file_params, budget = names.file_params, names.budget
    header = request.headers.get("content-type", "")
    content_type = header.split(";", 1)[0].strip().lower()
    takes_files = bool(file_params)
    if content_type == "multipart/form-data":
        cap, too_large = limits.body_cap(takes_files), limits.body_too_large(takes_files)
        reader = MultipartReader(boundary_of(header), limits.max_file_bytes, cap, too_large, file_params)
        return names.collect(await reader.read(request.stream()))
    if content_type == "application/x-www-form-urlencoded":
        return names.collect(form_pairs(await read_body(request, limits, takes_files)))
    body = await read_body(request, limits, takes_files)
    if not body or body.isspace():
        return None
    declared_json = content_type == "application/json" or content_type.endswith("+json")
    try:
        parsed = parse_json(body, budget)
    except ValueError as exc:
        if not declared_json:
            raise _unsupported(content_type) from None
        raise RequestValidationFailed(
            [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {exc}"}]
        ) from None
    if not isinstance(parsed, dict):
        if not declared_json:
            raise _unsupported(content_type)
        raise RequestValidationFailed(
            [{"type": "model_attributes_type", "loc": ["body"], "msg": "the body must be a JSON object"}]
        )
    check_field_count(len(parsed), "JSON body")
    return parsed


def _unsupported(content_type: str) -> UnsupportedMediaType:
    declared = f"a {content_type[:100]} body" if content_type else "a body without a Content-Type"
    return UnsupportedMediaType(
        f"{declared} that is not a JSON object: send parameters as JSON (application/json), "
        "a form (application/x-www-form-urlencoded or multipart/form-data), or in the query string"
    )


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


class _Names:
    """Turns the (name, value) pairs of a form or query string into parameters."""

    def __init__(self, file_params: frozenset[str], list_params: frozenset[str], budget: ValueBudget) -> None:
        self.file_params = file_params
        self.list_params = list_params
        self.budget = budget

    def collect(self, items: list[tuple[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in items:
            if key in self.list_params:
                data.setdefault(key, []).append(value)
            else:
                data[key] = value
        return {key: self._maybe_json(key, value) for key, value in data.items()}

    def _maybe_json(self, key: str, value: Any) -> Any:
        """Form and query values are strings; a field that holds a model, dict or list may come as JSON text
        (text that does not parse, or nests too deep, stays a string for validation to judge)."""
        if key in self.file_params:
            return value
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                return parse_json(value, self.budget)
            except ValueError:
                return value
        if isinstance(value, list) and len(value) == 1:
            only = value[0]
            if isinstance(only, str) and only[:1] == "[":
                try:
                    return parse_json(only, self.budget)
                except ValueError:
                    return value
        return value

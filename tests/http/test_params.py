"""The parameter reader on its own: `read_params` (fasttask/http/params.py) and `TaskDef.validate`
(fasttask/tasks.py) called directly on a request built in the test, no server and no route in between.

Each case checks what the reader hands on: the keyword arguments with their types, or the error class and
the field errors (type and location) that become the 422, 413 or 415 a client sees."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Message

from fasttask import ImageFile, JobProgress, MediaFile
from fasttask.errors import PayloadTooLarge, RequestValidationFailed, UnsupportedMediaType
from fasttask.files import close_files
from fasttask.http.limits import MAX_FIELDS
from fasttask.http.params import InputLimits, read_params, read_request_data
from fasttask.tasks import TaskDef, validation_errors
from tests.support.servers import FILE_CONTENT, FileServer

LIMITS = InputLimits(max_file_bytes=1024)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
BOUNDARY = "test-boundary-7f3a"


class Point(BaseModel):
    x: int
    y: int


def convert(
    count: int,
    ratio: float = 1.0,
    flag: bool = False,
    name: str = "unnamed",
    tags: list[int] | None = None,
    point: Point | None = None,
    job_progress: JobProgress | None = None,
) -> None:
    """A task with one parameter of each kind the reader treats apart (the progress one is no parameter)."""


def upscale(image: ImageFile, scale: int = 2, extras: list[MediaFile] | None = None) -> None:
    """A task with file parameters."""


CONVERT = TaskDef("/convert", convert)
UPSCALE = TaskDef("/upscale", upscale)


def make_request(body: bytes = b"", content_type: str | None = None, query: str = "") -> Request:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "method": "POST", "path": "/t", "query_string": query.encode(), "headers": headers}
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


_READ: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def close_what_was_read() -> Iterator[None]:
    """The files a test's reads returned are closed at its end (warnings are errors, unclosed files warn)."""
    yield
    while _READ:
        close_files(_READ.pop().values())


def read(task: TaskDef, request: Request, limits: InputLimits = LIMITS) -> dict[str, Any]:
    params = asyncio.run(read_params(request, task, limits))
    _READ.append(params)
    return params


def read_json(task: TaskDef, payload: Any, content_type: str = "application/json") -> dict[str, Any]:
    return read(task, make_request(json.dumps(payload).encode(), content_type))


def field_errors(task: TaskDef, request: Request) -> list[tuple[str, list[Any]]]:
    """(type, loc) of each field error the reader raises for `request`."""
    with pytest.raises(RequestValidationFailed) as failed:
        read(task, request)
    return [(error["type"], error["loc"]) for error in failed.value.errors]


def multipart(fields: list[tuple[str, str | tuple[str, bytes, str]]]) -> bytes:
    parts = []
    for name, value in fields:
        if isinstance(value, str):
            parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
            continue
        file_name, content, content_type = value
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{file_name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def test_reader_coerces_json_values_to_the_declared_types_and_fills_defaults() -> None:
    params = read_json(CONVERT, {"count": "3", "ratio": "0.5", "flag": "true", "point": {"x": "1", "y": 2}})
    assert params == {
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "name": "unnamed",
        "tags": None,
        "point": Point(x=1, y=2),
    }
    assert type(params["count"]) is int and type(params["ratio"]) is float
    assert "job_progress" not in params  # filled in by the runner, never read from a request


def test_reader_coerces_form_fields_repeats_list_fields_and_parses_json_text_in_fields() -> None:
    body = urlencode([("count", "7"), ("flag", "yes"), ("tags", "1"), ("tags", "2"), ("point", '{"x": 3, "y": 4}')])
    params = read(CONVERT, make_request(body.encode(), "application/x-www-form-urlencoded"))
    assert params["count"] == 7 and params["flag"] is True
    assert params["tags"] == [1, 2]
    assert params["point"] == Point(x=3, y=4)
    # a list field may also come once, as JSON text
    single = read(
        CONVERT, make_request(urlencode({"count": "1", "tags": "[5, 6]"}).encode(), "application/x-www-form-urlencoded")
    )
    assert single["tags"] == [5, 6]


def test_reader_takes_the_query_string_and_a_body_adds_to_it() -> None:
    assert read(CONVERT, make_request(query="count=2&name=q"))["name"] == "q"
    params = read(CONVERT, make_request(b'{"name": "body"}', "application/json", query="count=2"))
    assert (params["count"], params["name"]) == (2, "body")
    whitespace = asyncio.run(read_request_data(make_request(b" \n ", "text/plain", query="count=2"), LIMITS))
    assert whitespace == ({"count": "2"}, "query")


def test_reader_reads_a_json_object_sent_under_another_content_type() -> None:
    assert read_json(CONVERT, {"count": 4}, "text/plain")["count"] == 4
    assert read_json(CONVERT, {"count": 5}, "application/vnd.api+json")["count"] == 5


def test_a_missing_required_parameter_is_a_missing_field_error_where_it_was_looked_for() -> None:
    assert field_errors(CONVERT, make_request(b'{"name": "x"}', "application/json")) == [("missing", ["body", "count"])]
    assert field_errors(CONVERT, make_request(query="name=x")) == [("missing", ["query", "count"])]


def test_an_unknown_field_is_refused_not_dropped() -> None:
    errors = field_errors(CONVERT, make_request(b'{"count": 1, "colour": "red"}', "application/json"))
    assert errors == [("extra_forbidden", ["body", "colour"])]
    form = make_request(b"count=1&job_progress=1", "application/x-www-form-urlencoded")
    assert field_errors(CONVERT, form) == [("extra_forbidden", ["body", "job_progress"])]


def test_values_that_do_not_fit_their_type_name_the_field_and_keep_the_input() -> None:
    with pytest.raises(RequestValidationFailed) as failed:
        read_json(CONVERT, {"count": "three", "point": {"x": 1}, "tags": [1, "b"]})
    errors = {tuple(error["loc"]): error for error in failed.value.errors}
    assert set(errors) == {("body", "count"), ("body", "point", "y"), ("body", "tags", 1)}
    assert errors[("body", "count")]["type"] == "int_parsing"
    assert errors[("body", "count")]["input"] == "three"
    assert errors[("body", "point", "y")]["type"] == "missing"
    assert errors[("body", "tags", 1)]["type"] == "int_parsing"


def test_form_text_that_is_not_json_stays_text_for_validation_to_judge() -> None:
    form = urlencode({"count": "1", "point": "{not json"}).encode()
    assert field_errors(CONVERT, make_request(form, "application/x-www-form-urlencoded")) == [
        ("model_type", ["body", "point"])
    ]
    text = urlencode({"count": "1", "name": "[x"}).encode()
    assert read(CONVERT, make_request(text, "application/x-www-form-urlencoded"))["name"] == "[x"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"count": 1', "application/json", "json_invalid"),
        (b"[1, 2]", "application/json", "model_attributes_type"),
        (b'"count"', "application/json", "model_attributes_type"),
        (b"null", "application/problem+json", "model_attributes_type"),
    ],
)
def test_a_declared_json_body_that_is_not_an_object_is_a_body_error(
    body: bytes, content_type: str, expected: str
) -> None:
    assert field_errors(CONVERT, make_request(body, content_type)) == [(expected, ["body"])]


@pytest.mark.parametrize(
    ("body", "content_type"), [(b"count=1", "text/plain"), (b"[1]", None), (b"\x00\x01", "application/octet-stream")]
)
def test_an_undeclared_body_that_is_not_a_json_object_is_unsupported(body: bytes, content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        read(CONVERT, make_request(body, content_type))
    assert "JSON" in refused.value.detail and refused.value.status_code == 415


def test_a_json_body_with_more_fields_than_allowed_is_too_large() -> None:
    payload = {f"f{i}": i for i in range(MAX_FIELDS + 1)}
    with pytest.raises(PayloadTooLarge):
        read_json(CONVERT, payload)


def test_file_parameters_come_as_uploads_base64_data_uris_or_objects() -> None:
    body = multipart([("image", ("in.png", PNG, "image/png")), ("scale", "3")])
    uploaded = read(UPSCALE, make_request(body, f"multipart/form-data; boundary={BOUNDARY}"))
    assert isinstance(uploaded["image"], ImageFile)
    assert (uploaded["image"].to_bytes(), uploaded["image"].file_name, uploaded["scale"]) == (PNG, "in.png", 3)

    encoded = base64.b64encode(PNG).decode()
    as_string = read_json(UPSCALE, {"image": encoded})["image"]
    assert isinstance(as_string, ImageFile) and as_string.to_bytes() == PNG
    as_uri = read_json(UPSCALE, {"image": f"data:image/png;base64,{encoded}"})["image"]
    assert (as_uri.to_bytes(), as_uri.content_type) == (PNG, "image/png")
    as_object = read_json(UPSCALE, {"image": {"file_name": "a.png", "content": encoded}, "extras": [encoded, encoded]})
    assert (as_object["image"].file_name, as_object["image"].to_bytes()) == ("a.png", PNG)
    assert [extra.to_bytes() for extra in as_object["extras"]] == [PNG, PNG]


def test_file_parameters_that_are_not_files_are_field_errors() -> None:
    request = make_request(json.dumps({"image": 12, "extras": ["%%%"]}).encode(), "application/json")
    assert sorted(field_errors(UPSCALE, request)) == [
        ("file_parsing", ["body", "extras", 0]),
        ("file_type", ["body", "image"]),
    ]
    # a file parameter's form text is base64, never parsed as JSON
    form = make_request(b"image=%5B1%5D", "application/x-www-form-urlencoded")
    assert field_errors(UPSCALE, form) == [("file_parsing", ["body", "image"])]


def test_files_read_before_a_validation_error_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str | None] = []
    close = MediaFile.close

    def recording_close(self: MediaFile) -> None:
        closed.append(self.file_name)
        close(self)

    monkeypatch.setattr(MediaFile, "close", recording_close)
    uploads = [("image", ("in.png", PNG, "image/png")), ("extras", ("x.bin", b"x", "application/x-test"))]
    body = multipart([*uploads, ("scale", "not a number")])
    assert field_errors(UPSCALE, make_request(body, f"multipart/form-data; boundary={BOUNDARY}")) == [
        ("int_parsing", ["body", "scale"])
    ]
    assert {name for name in closed if name} == {"in.png", "x.bin"}


def test_a_file_larger_than_the_limit_is_too_large_in_any_form() -> None:
    # base64's size check allows for a few bytes of padding, so the file is well over the limit
    big = bytes(LIMITS.max_file_bytes + 64)
    with pytest.raises(PayloadTooLarge):
        read_json(UPSCALE, {"image": base64.b64encode(big).decode()})
    body = multipart([("image", ("big.png", bytes(LIMITS.max_file_bytes + 1), "image/png"))])
    with pytest.raises(PayloadTooLarge):
        read(UPSCALE, make_request(body, f"multipart/form-data; boundary={BOUNDARY}"))


def test_a_url_file_parameter_is_downloaded_and_a_refused_url_is_a_field_error(file_server: FileServer) -> None:
    url = f"{file_server.url}/file.bin"
    allowed = InputLimits(max_file_bytes=len(FILE_CONTENT), allow_private_urls=True)
    params = read(UPSCALE, make_request(json.dumps({"image": url}).encode(), "application/json"), allowed)
    assert params["image"].to_bytes() == FILE_CONTENT and params["image"].source_url is None
    assert field_errors(UPSCALE, make_request(query=urlencode({"image": url}))) == [("url_refused", ["query", "image"])]
    assert file_server.requests == ["/file.bin"]  # the refused one was never fetched


def test_task_validate_and_validation_errors_on_their_own() -> None:
    assert CONVERT.validate({"count": "9"}) == {
        "count": 9,
        "ratio": 1.0,
        "flag": False,
        "name": "unnamed",
        "tags": None,
        "point": None,
    }
    with pytest.raises(ValidationError) as invalid:
        CONVERT.validate({"count": 1, "flag": "maybe", "extra": 1})
    errors = validation_errors(invalid.value, "body")
    assert [(error["type"], error["loc"], error["input"]) for error in errors] == [
        ("bool_parsing", ["body", "flag"], "maybe"),
        ("extra_forbidden", ["body", "extra"], 1),
    ]
    # object-storage references are for job records only: a request cannot name one
    reference = {"object": "jobs/other/secret.bin", "size": 3}
    with pytest.raises(ValidationError):
        UPSCALE.validate({"image": reference})
    trusted = UPSCALE.validate({"image": reference}, trusted_objects=True)
    _READ.append(trusted)
    assert trusted["image"].object_key == "jobs/other/secret.bin"

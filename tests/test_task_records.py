"""A job's parameters through its record: validated once by the API, dumped to JSON, decoded by a worker."""

from __future__ import annotations

import base64
import enum
import json
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import pytest
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from fasttask import ImageFile
from fasttask.files import close_files
from fasttask.tasks import TaskDef, is_json_native


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Box(BaseModel):
    width: int
    height: int


calls: list[str] = []


def shout(value: str) -> str:
    calls.append(value)
    return value + "!"


def through_record(task: TaskDef, request: dict[str, Any]) -> dict[str, Any]:
    """What a worker gets: the API's validation, the record's JSON, the worker's decoding."""
    validated = task.validate(request)
    try:
        record = json.loads(json.dumps(task.dump_params(validated)))
    finally:
        close_files(validated.values())  # the API's copies: the worker's are its own
    return task.decode_params(record)


@pytest.mark.parametrize(
    ("annotation", "native"),
    [
        (str, True),
        (int | None, True),
        (list[dict[str, float]], True),
        (Literal["a", "b"], True),
        (Annotated[int, AfterValidator(abs)], True),
        (Any, True),
        (tuple[int, int], False),
        (dict[int, str], False),
        (Color, False),
        (Box, False),
        (datetime, False),
        (ImageFile, False),
        (list[ImageFile], False),
        (str | Box, False),
    ],
)
def test_only_what_json_carries_as_it_is_passes_through(annotation: Any, native: bool) -> None:
    assert is_json_native(annotation) is native


def test_values_come_back_as_the_api_validated_them() -> None:
    def task(
        text: str,
        count: int,
        ratio: float,
        size: tuple[int, int],
        color: Color,
        box: Box,
        when: datetime,
        image: ImageFile,
        tags: list[str] | None = None,
    ) -> None: ...

    definition = TaskDef("/t", task)
    png = base64.b64encode(b"\x89PNG-not-really").decode()
    request = {
        "text": "hi",
        "count": "3",
        "ratio": 2,
        "size": [1, 2],
        "color": "blue",
        "box": {"width": 3, "height": 4},
        "when": "2026-12-05T10:00:00Z",
        "image": {"file_name": "a.png", "content": png},
    }
    params = through_record(definition, request)
    image = params.pop("image")
    assert params == {
        "text": "hi",
        "count": 3,
        "ratio": 2.0,
        "size": (1, 2),
        "color": Color.BLUE,
        "box": Box(width=3, height=4),
        "when": datetime(2026, 12, 5, 10, tzinfo=timezone.utc),
        "tags": None,
    }
    assert type(params["ratio"]) is float
    assert isinstance(image, ImageFile)
    assert (image.file_name, image.to_bytes()) == ("a.png", b"\x89PNG-not-really")
    image.close()


def test_a_worker_does_not_validate_again() -> None:
    """A validator with an effect (here: counting, and changing the value) runs once, in the API."""
    calls.clear()

    def task(text: Annotated[str, AfterValidator(shout)], image: ImageFile | None = None) -> None: ...

    definition = TaskDef("/t", task)
    assert through_record(definition, {"text": "hi"}) == {"text": "hi!", "image": None}
    assert calls == ["hi"]


def test_files_may_name_stored_objects_only_in_a_record() -> None:
    def task(image: ImageFile) -> None: ...

    definition = TaskDef("/t", task)
    stored = {"image": {"file_name": "a.png", "content_type": "image/png", "object": "in/j1/a.png", "size": 3}}
    with pytest.raises(ValidationError):
        definition.validate(stored)  # a request may not point a job at the bucket's objects
    image = definition.decode_params(stored)["image"]
    assert (image.object_key, image.file_name, image.size) == ("in/j1/a.png", "a.png", 3)
    image.close()


def test_annotated_constraints_hold() -> None:
    def task(count: Annotated[int, Field(ge=1, le=10)]) -> None: ...

    definition = TaskDef("/t", task)
    assert definition.validate({"count": 10}) == {"count": 10}
    with pytest.raises(ValidationError):
        definition.validate({"count": 11})


def test_a_record_without_every_parameter_is_validated_whole() -> None:
    def task(text: str, count: int = 2) -> None: ...

    definition = TaskDef("/t", task)
    assert definition.decode_params({"text": "hi"}) == {"text": "hi", "count": 2}
    with pytest.raises(ValidationError):
        definition.decode_params({"count": "x"})

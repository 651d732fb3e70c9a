"""Task definitions: what the decorator records about a function, and how its parameters validate."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .errors import ConfigError
from .files import MediaFile, close_files
from .progress import JobProgress

DEFAULT_QUEUE_SIZE = 100
DEFAULT_RESULT_TTL_S = 3600
MAX_BATCH_SIZE = 4096
"""Most jobs one batched call may take: far above what one model call holds, low enough that a typo
(`max_size=10**6`) fails at start-up instead of building a call that holds a whole queue."""
MAX_BATCH_WAIT_MS = 60_000
"""Longest `max_wait_ms`: a job waits for its batch at most a minute, never unbounded."""


class TaskKind(str, Enum):
    """How a task function runs: each kind is driven differently."""

    SYNC = "sync"
    ASYNC = "async"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async_generator"


def task_kind(fn: Callable[..., Any]) -> TaskKind:
    if inspect.isasyncgenfunction(fn):
        return TaskKind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(fn):
        return TaskKind.GENERATOR
    if inspect.iscoroutinefunction(fn):
        return TaskKind.ASYNC
    return TaskKind.SYNC


@dataclass(frozen=True)
class Batch:
    """Run up to `max_size` queued jobs of an endpoint as one call, waiting up to `max_wait_ms` (counted from
    the oldest job's submit) for a batch to fill. The task's parameters are then annotated `list[T]`: it gets
    the batch's values, one per job, and returns one result per job."""

    max_size: int
    max_wait_ms: float

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int):
            raise ConfigError(f"Batch max_size must be an int, not {type(self.max_size).__name__}")
        if not 1 <= self.max_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"Batch max_size must be between 1 and {MAX_BATCH_SIZE}, not {self.max_size}")
        if isinstance(self.max_wait_ms, bool) or not isinstance(self.max_wait_ms, int | float):
            raise ConfigError(f"Batch max_wait_ms must be a number, not {type(self.max_wait_ms).__name__}")
        if not 0 <= self.max_wait_ms <= MAX_BATCH_WAIT_MS:  # also refuses NaN
            raise ConfigError(f"Batch max_wait_ms must be between 0 and {MAX_BATCH_WAIT_MS}, not {self.max_wait_ms}")

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000


def is_progress_parameter(name: str, annotation: Any) -> bool:
    return name == "job_progress" or annotation is JobProgress


def is_file_annotation(annotation: Any) -> bool:
    """True for MediaFile and its kinds, also inside list[...] and Optional[...]."""
    if isinstance(annotation, type) and issubclass(annotation, MediaFile):
        return True
    return any(is_file_annotation(arg) for arg in typing.get_args(annotation))


def is_list_annotation(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(is_list_annotation(arg) for arg in typing.get_args(annotation) if arg is not type(None))


JSON_SCALARS: tuple[Any, ...] = (str, int, float, bool, type(None), Any)


def is_json_native(annotation: Any) -> bool:
    """True when a validated value of this type comes back from its JSON form as the same Python value.

    Scalars, `Literal`s of them, and lists, dicts with string keys and unions of such types: a worker can
    take them from a job record as they are. Anything else (files, models, enums, dates, tuples...) is
    rebuilt from its JSON form.
    """
    if annotation in JSON_SCALARS:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return is_json_native(args[0])
    if origin is typing.Literal:
        return all(type(arg) in (str, int, bool, type(None)) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return all(is_json_native(arg) for arg in args)
    if origin is list:
        return not args or is_json_native(args[0])
    if origin is dict:
        return not args or (args[0] is str and is_json_native(args[1]))
    return False


class _ParamsBase(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


@dataclass(frozen=True)
class TaskDef:
    """One task endpoint: the function and its options. Calling it calls the function."""

    path: str
    fn: Callable[..., Any]
    queue_size: int = DEFAULT_QUEUE_SIZE
    timeout_s: float | None = None
    retries: int = 0
    result_ttl_s: float = DEFAULT_RESULT_TTL_S
    methods: tuple[str, ...] = ("POST",)
    batch: Batch | None = None
    kind: TaskKind = field(init=False)
    progress_param: str | None = field(init=False)
    params_model: type[BaseModel] = field(init=False)
    file_params: frozenset[str] = field(init=False)
    list_params: frozenset[str] = field(init=False)
    record_model: type[BaseModel] | None = field(init=False)
    """The parameters JSON cannot carry as their Python values (files, models, dates...): what a worker
    rebuilds from a job record. None when JSON carries them all."""

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigError(f"task path {self.path!r} must start with '/'")
        if self.queue_size < 0:
            raise ConfigError(f"{self.path}: queue_size must be >= 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError(f"{self.path}: timeout must be positive")
        if self.retries < 0:
            raise ConfigError(f"{self.path}: retries must be >= 0")
        if self.result_ttl_s <= 0:
            raise ConfigError(f"{self.path}: result_ttl must be positive")
        kind = task_kind(self.fn)
        if self.batch is not None and kind in (TaskKind.GENERATOR, TaskKind.ASYNC_GENERATOR):
            raise ConfigError(f"{self.path}: a generator task cannot be batched (its yields belong to one job)")
        progress_param, fields = _signature_fields(self.fn)
        if self.batch is not None:
            fields = {name: (_per_job(self.fn, name, a), default) for name, (a, default) in fields.items()}
        model = create_model(  # type: ignore[call-overload]
            "Params_" + (self.path.strip("/").replace("/", "_").replace("-", "_") or "root"),
            __base__=_ParamsBase,
            **fields,
        )
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once, here
        set_(self, "kind", kind)
        set_(self, "progress_param", progress_param)
        set_(self, "params_model", model)
        set_(self, "file_params", frozenset(n for n, (a, _) in fields.items() if is_file_annotation(a)))
        set_(self, "list_params", frozenset(n for n, (a, _) in fields.items() if is_list_annotation(a)))
        rebuilt = {name: spec for name, spec in fields.items() if not is_json_native(spec[0])}
        record_model = None
        if rebuilt:
            record_model = create_model(  # type: ignore[call-overload]
                model.__name__ + "_record", __base__=_ParamsBase, **rebuilt
            )
        set_(self, "record_model", record_model)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def name(self) -> str:
        return self.fn.__name__

    def validate(
        self,
        data: Mapping[str, Any],
        max_file_bytes: int | None = None,
        trusted_objects: bool = False,
        model: type[BaseModel] | None = None,
    ) -> dict[str, Any]:
        """Validate request data into the task's keyword arguments (raises pydantic's ValidationError).

        `trusted_objects` lets files refer to object-storage keys: only for job records, never requests.
        """
        created: list[MediaFile] = []
        context = {"max_file_bytes": max_file_bytes, "trusted_objects": trusted_objects, "created_files": created}
        try:
            validated = (model or self.params_model).model_validate(data, context=context)
        except BaseException:
            close_files(created)  # files decoded before another field failed: nobody else holds them
            raise
        return {name: getattr(validated, name) for name in type(validated).model_fields}

    def decode_params(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A job record's parameters (`dump_params` of values the API validated) as keyword arguments.

        They were validated once, when the job was submitted: values JSON carries as they are pass through,
        and only the others (files, models, dates...) are rebuilt, with files allowed to name objects in
        storage. A record that does not hold every parameter is validated whole.
        """
        fields = self.params_model.model_fields
        if data.keys() != fields.keys():
            return self.validate(data, trusted_objects=True)
        params = dict(data)
        if self.record_model is not None:
            names = self.record_model.model_fields
            params.update(
                self.validate({name: data[name] for name in names}, trusted_objects=True, model=self.record_model)
            )
        return params

    def dump_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments as JSON-ready data (files in their dict form), for a job record."""
        return self.params_model.model_construct(**params).model_dump(mode="json")

    def call_kwargs(self, params: Mapping[str, Any], progress: JobProgress) -> dict[str, Any]:
        kwargs = dict(params)
        if self.progress_param is not None:
            kwargs[self.progress_param] = progress
        return kwargs


def _signature_fields(fn: Callable[..., Any]) -> tuple[str | None, dict[str, tuple[Any, Any]]]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)  # keep Annotated constraints and validators
    except Exception as exc:  # a bad forward reference should fail at import, with the task's name
        raise ConfigError(f"cannot resolve the type hints of {fn.__qualname__}: {exc}") from exc
    progress_param = None
    fields: dict[str, tuple[Any, Any]] = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ConfigError(f"{fn.__qualname__}: *args and **kwargs cannot be request parameters")
        annotation = hints.get(name, Any)
        if is_progress_parameter(name, annotation):
            progress_param = name
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    return progress_param, fields


def _per_job(fn: Callable[..., Any], name: str, annotation: Any) -> Any:
    """The `T` of a batched task's `list[T]` parameter: what each job's request carries. Constraints written
    around the list (`Annotated[list[int], Field(ge=0)]`) hold for each job's value."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        per_job = _per_job(fn, name, args[0])
        for meta in annotation.__metadata__:  # nested Annotated flattens: one metadata list, in order
            per_job = typing.Annotated[per_job, meta]
        return per_job
    if typing.get_origin(annotation) is list and len(args) == 1:
        return args[0]
    shown = annotation.__name__ if isinstance(annotation, type) else repr(annotation)
    raise ConfigError(
        f"{fn.__qualname__}: with batch=, parameter {name!r} must be annotated list[T] (the batch's values, one T"
        f" per job), not {shown}"
    )


def validation_errors(exc: ValidationError, location: str) -> list[dict[str, Any]]:
    """FastAPI's field-error list for a pydantic ValidationError (inputs as they came: responses trim them)."""
    errors = []
    for error in exc.errors(include_url=False, include_context=False):
        entry: dict[str, Any] = {"type": error["type"], "loc": [location, *error["loc"]], "msg": error["msg"]}
        if "input" in error:
            entry["input"] = error["input"]
        errors.append(entry)
    return errors

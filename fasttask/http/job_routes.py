"""The routes of tasks and jobs: submitting a task, reading, cancelling, streaming a job, its files, and
`/status` (the FastAPI 1.x shape). Each is one entry of the route table, documented where it is declared."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..brokers import Broker, JobEvent
from ..errors import RequestValidationFailed
from ..files import close_files
from ..jobs import JobRecord
from ..metrics import Metrics
from ..ranges import byte_range
from ..tasks import TaskDef
from .hotpath import parse_wait
from .keyed import submit_headers, submit_with_key
from .openapi_schemas import errors, json_body, optional_header, ref
from .params import InputLimits, read_request_data, read_submission
from .responses import json_response
from .routes import Handler, Route

MAX_WAIT_S = 60.0
SSE_KEEPALIVE_S = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_JOB = json_body("The job", ref("Job"))
_LOCATION = {"Location": {"description": "the job's URL, /jobs/{id}", "schema": {"type": "string"}}}
_JOB_ID = {"name": "job_id", "in": "query", "schema": {"type": "string"}, "description": "the job's id"}
_LEGACY = {"200": json_body("The job, FastTaskAPI 1.x shape", ref("LegacyJob")), **errors("404", "422")}
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when an earlier request with this Idempotency-Key made the job (no new job)",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
_APPLIED = {"Preference-Applied": {"description": "`wait=S`: the answer waited", "schema": {"type": "string"}}}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}}
SUBMIT_RESPONSES = {
    "200": {
        **json_body("`Prefer: wait=S`: the job, final within S seconds", ref("Job")),
        "headers": {**_LOCATION, **_APPLIED, **_REPLAYED},
    },
    "202": {**json_body("The job, accepted", ref("Job")), "headers": {**_LOCATION, **_REPLAYED}},
    "400": json_body("An Idempotency-Key that is not 1 to 255 visible ASCII characters", ref("Error")),
    "409": {
        **json_body("The first request with this Idempotency-Key is still being handled", ref("Error")),
        "headers": _RETRY_AFTER,
    },
    **errors("413", "422", "429", "503"),
}
SUBMIT_HEADERS = (
    optional_header("Prefer", "`wait=S`: hold the answer until the job is final or S seconds (at most 60) pass"),
    optional_header(
        "Idempotency-Key",
        "1 to 255 visible ASCII characters: one job per key on this endpoint; a repeat with the same parameters "
        "gets the same job, with other parameters 422",
    ),
)


def task_routes(broker: Broker, task: TaskDef, limits: InputLimits, metrics: Metrics | None) -> list[Route]:
    """A task's submit routes, one per method (so OpenAPI operation ids stay unique), one handler for all."""
    submit = submit_handler(broker, task, limits, metrics)
    summary = (task.fn.__doc__ or task.name).strip().splitlines()[0]
    return [
        Route(
            task.path,
            submit,
            (method,),
            hot=True,
            name=task.name,
            operation_id=f"{task.name}_{method.lower()}",
            summary=summary,
            status_code=202,
            json_response=True,
            responses=SUBMIT_RESPONSES,
            parameters=SUBMIT_HEADERS,
            task=task,
        )
        for method in task.methods
    ]


def submit_handler(broker: Broker, task: TaskDef, limits: InputLimits, metrics: Metrics | None = None) -> Handler:
    stats = metrics.jobs.stats(task.path) if metrics is not None else None

    async def submit(request: Request) -> Response:
        raw_key, wait = submit_headers(request.scope)
        replayed = False
        try:
            if raw_key is None:
                params, webhook = await read_submission(request, task, limits)
                try:
                    record = await broker.submit(task, params, webhook)
                except BaseException:
                    close_files(params.values())  # refused (429, 503, 413): nobody else will read them
                    raise
            else:
                record, replayed = await submit_with_key(
                    broker, task, raw_key, request.scope, lambda: read_submission(request, task, limits)
                )
        except Exception as exc:
            if stats is not None:
                stats.refused(exc)
            raise
        if stats is not None and not replayed:
            stats.submitted += 1
        headers = {"Location": f"/jobs/{record.id}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        if wait is not None and wait > 0:
            if not record.status.is_final:
                record = await broker.wait(record.id, wait)
            if record.status.is_final:
                headers["Preference-Applied"] = f"wait={wait:g}"
                return json_response(record.to_json(), 200, headers)
        return json_response(record.to_json(), 202, headers)

    return submit


def job_routes(broker: Broker, limits: InputLimits) -> list[Route]:
    async def read_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        wait = parse_wait(request.query_params.get("wait"), MAX_WAIT_S)
        record = await (broker.wait(job_id, wait) if wait > 0 else broker.get(job_id))
        return json_response(record.to_json())

    async def cancel_job(job_id: str) -> Response:
        return json_response((await broker.cancel(job_id)).to_json())

    async def stream_job(job_id: str, request: Request) -> StreamingResponse:
        events = await broker.open_stream(job_id, resume_after(request))
        return StreamingResponse(sse(events, named_event), media_type="text/event-stream", headers=SSE_HEADERS)

    async def job_file(job_id: str, index: int, request: Request) -> StreamingResponse:
        file = await broker.result_file(job_id, index)
        name = quote(file.file_name.replace('"', ""))
        headers = {"Accept-Ranges": "bytes", "Content-Disposition": f"attachment; filename*=UTF-8''{name}"}
        span = byte_range(request.headers.get("range"), file.size)
        start, end = span if span is not None else (0, file.size)
        # opened before the answer starts (in a thread: it may be a request to object storage), so that
        # storage being away is a 503, not a download cut off after its headers
        chunks = await asyncio.to_thread(file.read, start, end)
        if span is None:
            headers["Content-Length"] = str(file.size)
            return StreamingResponse(chunks, media_type=file.content_type, headers=headers)
        headers["Content-Length"] = str(end - start)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
        return StreamingResponse(chunks, 206, headers, media_type=file.content_type)

    async def legacy_status(request: Request) -> Response:
        data, _ = await read_request_data(request, limits)
        job_id = data.get("job_id")
        if not job_id or not isinstance(job_id, str):
            raise RequestValidationFailed([{"type": "missing", "loc": ["query", "job_id"], "msg": "Field required"}])
        record: JobRecord = await broker.get(job_id)
        return json_response(record.to_legacy_json(str(request.base_url)))

    jobs = ("jobs",)
    return [
        Route(
            "/jobs/{job_id}",
            read_job,
            ("GET",),
            hot=True,
            tags=jobs,
            summary="A job; ?wait=S (0 to 60) holds the answer until it ends",
            responses={"200": _JOB, **errors("404", "422", "503")},
            parameters=(
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
                },
            ),
        ),
        Route(
            "/jobs/{job_id}/cancel",
            cancel_job,
            ("POST",),
            tags=jobs,
            summary="Cancel a queued or running job",
            responses={
                "200": json_body("The job, cancelled (a running one stops at its next progress report)", ref("Job")),
                **errors("404", "409", "503"),
            },
        ),
        Route(
            "/jobs/{job_id}/stream",
            stream_job,
            ("GET",),
            tags=jobs,
            summary="Server-sent events: progress, output, end",
            responses={
                "200": {
                    "description": "Server-sent events: `progress` (job JSON), `output` (one per yield), `end` (job "
                    "JSON); each event's id counts the outputs sent, for Last-Event-ID",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **errors("404", "503"),
            },
            parameters=(
                optional_header(
                    "Last-Event-ID", "resume: the id of the last event received; outputs up to it are not sent again"
                ),
            ),
        ),
        Route(
            "/jobs/{job_id}/files/{index}",
            job_file,
            ("GET",),
            tags=jobs,
            summary="Download a file the job returned",
            responses={
                "200": {"description": "The file", "content": {"application/octet-stream": {"schema": {}}}},
                "206": {
                    "description": "The bytes a Range header asked for",
                    "content": {"application/octet-stream": {}},
                },
                "416": {
                    "description": "A Range outside the file",
                    "content": {"application/json": {"schema": ref("Error")}},
                },
                **errors("404", "503"),
            },
            parameters=(optional_header("Range", "bytes=a-b"),),
        ),
        *(
            Route(
                "/status",
                legacy_status,
                (method,),
                tags=jobs,
                operation_id=f"legacy_status_{method.lower()}",
                summary="A job in the FastTaskAPI 1.x shape (?job_id=)",
                responses=_LEGACY,
                parameters=(parameter,),
            )
            for method, parameter in (
                ("GET", {**_JOB_ID, "required": True}),
                ("POST", {**_JOB_ID, "required": False, "description": "the job's id (or job_id in the body)"}),
            )
        ),
    ]


def resume_after(request: Request) -> int:
    """How many outputs a reconnecting stream client has: the id of the last event it got (Last-Event-ID)."""
    resume = request.headers.get("last-event-id", "")
    return int(resume) if resume.isdigit() and len(resume) < 10 else 0


def named_event(event: JobEvent) -> str:
    """One event of `/jobs/{id}/stream`: named by its kind, its id the count of outputs sent."""
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.outputs_sent}\nevent: {event.kind}\ndata: {data}\n\n"


async def sse(events: AsyncIterator[JobEvent], render: Callable[[JobEvent], str | None]) -> AsyncIterator[str]:
    """Events as SSE records (`render` gives an event's record, or None to send nothing for it) until the
    job's end, with a comment line when nothing happened for a while to keep proxies open."""
    pending: asyncio.Future[JobEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=SSE_KEEPALIVE_S)
            if not done:
                yield ": keep-alive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            record = render(event)
            if record is not None:
                yield record
            if event.kind == "end":
                return
    finally:
        if pending is not None:
            pending.cancel()

"""APIPod's job protocol beside FastTaskAPI's: `GET /status/{id}`, `POST /cancel/{id}` and `GET /stream/{id}`,
which clients written against APIPod (fastSDK 0.4) follow from a job's `links`. The same jobs as `/jobs/{id}`,
through the same broker, in APIPod's shapes."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..brokers import Broker, JobEvent
from ..jobs import legacy_result
from .job_routes import SSE_HEADERS, resume_after, sse
from .openapi_schemas import errors, json_body, optional_header, ref
from .responses import json_response
from .routes import Route

_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ACTION = {
    "name": "action",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "accepted for APIPod's clients and ignored: a cancel always stops the job",
}


def apipod_routes(broker: Broker) -> list[Route]:
    async def status(request: Request) -> Response:
        record = await broker.get(request.path_params["job_id"])
        return json_response(record.to_apipod_json(str(request.base_url)))

    async def cancel(job_id: str, request: Request) -> Response:
        record = await broker.cancel(job_id)
        return json_response(record.to_apipod_json(str(request.base_url)))

    async def stream(job_id: str, request: Request) -> StreamingResponse:
        events = await broker.open_stream(job_id, resume_after(request))
        base_url = str(request.base_url)

        def output_record(event: JobEvent) -> str | None:
            # only the yields, unnamed; the stream's end is the connection closing
            if event.kind != "output":
                return None
            data = json.dumps(legacy_result(event.data, base_url), separators=(",", ":"), ensure_ascii=False)
            return f"id: {event.outputs_sent}\ndata: {data}\n\n"

        return StreamingResponse(sse(events, output_record), media_type="text/event-stream", headers=SSE_HEADERS)

    tags = ("jobs (APIPod)",)
    return [
        Route(
            "/status/{job_id}",
            status,
            ("GET",),
            hot=True,  # clients poll it
            tags=tags,
            summary="A job in APIPod's shape",
            responses={"200": json_body("The job, APIPod's shape", ref("ApipodJob")), **errors("404", "503")},
            parameters=(_ID,),
        ),
        Route(
            "/cancel/{job_id}",
            cancel,
            ("POST",),
            tags=tags,
            summary="Cancel a queued or running job (APIPod's route)",
            responses={"200": json_body("The job, cancelled", ref("ApipodJob")), **errors("404", "409", "503")},
            parameters=(_ACTION,),
        ),
        Route(
            "/stream/{job_id}",
            stream,
            ("GET",),
            tags=tags,
            summary="Server-sent events: one unnamed record per output, then the stream closes",
            responses={
                "200": {
                    "description": "Server-sent events: one `data:` record (JSON) per yield of a generator task; "
                    "each record's id counts the outputs sent, for Last-Event-ID. The stream closes when the job ends",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **errors("404", "503"),
            },
            parameters=(optional_header("Last-Event-ID", "resume: outputs up to this count are not sent again"),),
        ),
    ]

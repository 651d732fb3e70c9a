"""The fixed parts of the OpenAPI document: the job JSON, errors, pages and the shared responses.

They describe what `jobs.py`, `responses.py` and the views' `to_json` methods produce; docs/http-api.md
describes the same shapes in prose.
"""

from __future__ import annotations

from typing import Any

from ..webhooks import EVENTS as WEBHOOK_EVENTS

STATUSES = ["queued", "running", "finished", "failed", "cancelled", "timeout"]
LEGACY_STATUSES = ["Queued", "Processing", "Finished", "Failed", "Timeout", "Cancelled"]
APIPOD_STATUSES = ["queued", "processing", "finished", "failed", "timeout", "cancelled"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_RESULT_AND_ERROR_TEXT: dict[str, Any] = {  # the older protocols' result and error (FastTaskAPI 1.x, APIPod)
    "result": {"description": "files as {file_name, content_type, content: <absolute download URL>}"},
    "error": {"type": ["string", "null"], "description": "`Type: message`"},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Job": {
        "title": "Job",
        "description": "A job: its state, progress, and once it ended its result or error.",
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "128 random bits, hex"},
            "job_id": {"type": "string", "description": "the same as id (APIPod's clients)"},
            "endpoint": {"type": "string", "description": "the task endpoint the job was submitted to"},
            "status": {"type": "string", "enum": STATUSES},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "message": {"type": ["string", "null"]},
            "result": {"description": "the task's return value as JSON (files as FileResult); null until finished"},
            "error": {"anyOf": [{"type": "null"}, ref("JobError")]},
            "created_at": _TIME,
            "started_at": _TIME_OR_NULL,
            "finished_at": _TIME_OR_NULL,
            "links": {
                "type": "object",
                "properties": {
                    "self": {"type": "string"},
                    "cancel": {"type": "string"},
                    "stream": {"type": "string"},
                    "status": {"type": "string", "description": "/status/<id> (APIPod's clients)"},
                },
                "required": ["self", "cancel", "stream", "status"],
            },
            "refresh_job_url": {"type": "string", "description": "/status?job_id=<id> (FastTaskAPI 1.x clients)"},
            "endpoint_protocol": {"type": "string", "const": "socaity"},
        },
        "required": [
            *("id", "job_id", "endpoint", "status", "progress", "message", "result", "error"),
            *("created_at", "started_at", "finished_at", "links", "refresh_job_url", "endpoint_protocol"),
        ],
    },
    "WebhookSubmit": {
        "title": "WebhookSubmit",
        "description": "A submit whose job's events are POSTed to `webhook` (the envelope Cog and runpod clients "
        "send); a JSON body, files inline as base64.",
        "type": "object",
        "properties": {
            "input": {"type": "object", "description": "the task's parameters, as its JSON body takes them"},
            "webhook": {"type": "string", "format": "uri", "description": "an http(s) URL on a public address"},
            "webhook_events_filter": {
                "type": "array",
                "items": {"type": "string", "enum": list(WEBHOOK_EVENTS)},
                "default": ["completed"],
            },
        },
        "required": ["input", "webhook"],
    },
    "WebhookEvent": {
        "title": "WebhookEvent",
        "description": "What a webhook receives, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`); `data` is the job, with `outputs` for `job.output`.",
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": [f"job.{event}" for event in WEBHOOK_EVENTS]},
            "timestamp": _TIME,
            "data": ref("Job"),
        },
        "required": ["type", "timestamp", "data"],
    },
    "JobError": {
        "title": "JobError",
        "type": "object",
        "properties": {
            "type": {"type": "string", "description": "the exception's class name, e.g. ValueError"},
            "message": {"type": "string"},
            "traceback": {"type": "string", "description": "only with FTAPI_DEBUG=1"},
        },
        "required": ["type", "message"],
    },
    "FileResult": {
        "title": "FileResult",
        "description": "A file a task returned, in place of the file in the job's result.",
        "type": "object",
        "properties": {
            "file_name": {"type": "string"},
            "content_type": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "url": {"type": "string", "description": "a plain GET downloads it (Range is honoured)"},
        },
        "required": ["file_name", "content_type", "size", "url"],
    },
    "LegacyJob": {
        "title": "LegacyJob",
        "description": "A job in the FastTaskAPI 1.x shape, for clients written against it.",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": LEGACY_STATUSES},
            "progress": {
                "type": "object",
                "properties": {"progress": {"type": "number"}, "message": {"type": ["string", "null"]}},
            },
            **_RESULT_AND_ERROR_TEXT,
            "refresh_job_url": {"type": "string"},
            "cancel_job_url": {"type": "string"},
            "created_at": _TIME,
            "queued_at": _TIME,
            "execution_started_at": _TIME_OR_NULL,
            "execution_finished_at": _TIME_OR_NULL,
            "endpoint_protocol": {"type": "string", "const": "socaity"},
        },
        "required": ["id", "status", "progress", "result", "error", "refresh_job_url", "endpoint_protocol"],
    },
    "ApipodJob": {
        "title": "ApipodJob",
        "description": "A job in APIPod's shape, for clients that speak its job protocol (fastSDK 0.4).",
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "status": {"type": "string", "enum": APIPOD_STATUSES},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "message": {"type": ["string", "null"]},
            **_RESULT_AND_ERROR_TEXT,
            "links": {
                "type": "object",
                "properties": {name: {"type": "string"} for name in ("status", "cancel", "stream")},
                "required": ["status", "cancel", "stream"],
            },
        },
        "required": ["job_id", "status", "progress", "message", "result", "error", "links"],
    },
    "JobPage": {
        "title": "JobPage",
        "type": "object",
        "properties": {
            "jobs": {"type": "array", "items": ref("Job")},
            "next_cursor": {"type": ["string", "null"], "description": "pass as ?cursor= for the next page"},
        },
        "required": ["jobs", "next_cursor"],
    },
    "QueueList": {
        "title": "QueueList",
        "type": "object",
        "properties": {
            "queues": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "endpoint": {"type": "string"},
                        "queued": {"type": "integer"},
                        "running": {"type": "integer"},
                        "queue_size": {"type": "integer"},
                        "workers": {"type": "array", "items": {"type": "object"}},
                    },
                    "required": ["endpoint", "queued", "running", "queue_size", "workers"],
                },
            }
        },
        "required": ["queues"],
    },
    "ServiceState": {
        "title": "ServiceState",
        "type": "object",
        "properties": {"status": {"type": "string"}},
        "required": ["status"],
    },
    "Error": {
        "title": "Error",
        "type": "object",
        "properties": {"detail": {"type": "string", "description": "what went wrong, for people"}},
        "required": ["detail"],
    },
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
            "msg": {"type": "string"},
            "input": {},
        },
        "required": ["type", "loc", "msg"],
    },
    "InvalidParameters": {
        "title": "InvalidParameters",
        "description": "A field-error list (FastAPI's shape), or a sentence for input that is not a field "
        "(a bad base64 string, a refused URL, an unknown cursor).",
        "type": "object",
        "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": ref("FieldError")}]}},
        "required": ["detail"],
    },
}


def _error(description: str, schema: str = "Error", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ref(schema)}}}
    if headers:
        response["headers"] = headers
    return response


RESPONSES: dict[str, dict[str, Any]] = {
    "Unauthorized": _error(
        "FTAPI_API_KEY is set and the request lacks `Authorization: Bearer <key>` or `X-API-Key: <key>`",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    ),
    "NotFound": _error("Unknown job id, or the job expired after its result_ttl"),
    "AlreadyFinal": _error("The job already ended; nothing to cancel"),
    "TooLarge": _error("A file (upload, base64 or URL download) or the body is larger than the limit"),
    "InvalidParameters": _error("Parameters that do not validate", "InvalidParameters"),
    "QueueFull": _error(
        "The endpoint's queue is full (queue_size jobs waiting)",
        headers={"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}},
    ),
    "Unavailable": _error("The Redis queue or object storage is unreachable; the service recovers by itself"),
}

CODES = {
    "401": "Unauthorized",
    "404": "NotFound",
    "409": "AlreadyFinal",
    "413": "TooLarge",
    "422": "InvalidParameters",
    "429": "QueueFull",
    "503": "Unavailable",
}


def errors(*codes: str) -> dict[str, Any]:
    """Response entries for these error codes, as references to the shared responses."""
    return {code: {"$ref": f"#/components/responses/{CODES[code]}"} for code in codes}


def optional_header(name: str, description: str) -> dict[str, Any]:
    """A request header a route reads when it is there."""
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}


def json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "FTAPI_API_KEY as `Authorization: Bearer <key>`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "FTAPI_API_KEY as X-API-Key"},
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


WEBHOOK_CALLBACK: dict[str, Any] = {
    "webhook": {
        "{$request.body#/webhook}": {
            "post": {
                "summary": "A job's event, when the submit was a WebhookSubmit",
                "parameters": [
                    {"name": name, "in": "header", "required": required, "schema": {"type": "string"}}
                    for name, required in (
                        ("webhook-id", True),
                        ("webhook-timestamp", True),
                        ("webhook-signature", False),  # with FTAPI_WEBHOOK_SECRET only
                    )
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref("WebhookEvent")}}},
                "responses": {
                    "2XX": {"description": "delivered"},
                    "410": {"description": "stop sending this job's events"},
                    "default": {"description": "retried on FTAPI_WEBHOOK_RETRY_S's schedule"},
                },
            }
        }
    }
}
"""The requests a task's submit with a webhook leads to (OpenAPI's `callbacks`)."""

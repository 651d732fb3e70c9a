"""OpenAPI for task endpoints: each task's real parameter schema as its request body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ._version import __version__

if TYPE_CHECKING:
    from .app import FastTaskAPI

REF_TEMPLATE = "#/components/schemas/{model}"

JOB_SCHEMA: dict[str, Any] = {
    "title": "Job",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "endpoint": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "finished", "failed", "cancelled", "timeout"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "message": {"type": ["string", "null"]},
        "result": {},
        "error": {
            "anyOf": [
                {"type": "null"},
                {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
            ]
        },
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "links": {"type": "object", "additionalProperties": {"type": "string"}},
        "refresh_job_url": {"type": "string"},
        "endpoint_protocol": {"type": "string"},
    },
    "required": ["id", "endpoint", "status", "progress", "created_at", "links"],
}


def install_openapi(api: FastAPI, service: FastTaskAPI) -> None:
    """Replace FastAPI's generator with one that documents task parameters and marks the service."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = get_openapi(title=api.title, version=__version__, routes=api.routes)
        schema["info"]["fast-task-api"] = __version__
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Job"] = JOB_SCHEMA
        job_ref = {"$ref": "#/components/schemas/Job"}
        for task in service.tasks.values():
            params = task.params_model.model_json_schema(ref_template=REF_TEMPLATE)
            for name, definition in params.pop("$defs", {}).items():
                components[name] = definition
            params["title"] = f"{task.name} parameters"
            components[task.params_model.__name__] = params
            ref = {"$ref": REF_TEMPLATE.format(model=task.params_model.__name__)}
            content: dict[str, Any] = {"application/json": {"schema": ref}}
            if task.file_params:
                content["multipart/form-data"] = {"schema": ref}
            else:
                content["application/x-www-form-urlencoded"] = {"schema": ref}
            for method in task.methods:
                operation = schema["paths"][task.path][method.lower()]
                if method in ("POST", "PUT", "PATCH"):
                    operation["requestBody"] = {"required": bool(params.get("required")), "content": content}
                operation["responses"] = {
                    "202": {"description": "The job, accepted", "content": {"application/json": {"schema": job_ref}}},
                    "422": {"description": "Parameters that do not validate"},
                    "429": {"description": "The endpoint's queue is full; see Retry-After"},
                }
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]

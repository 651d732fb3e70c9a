"""The OpenAPI document and the `/docs` page that shows it.

Each task's parameter model is its request body: a JSON body for tasks without files, a multipart form for
tasks that take files (the one body such clients upload files to; JSON with base64 or URLs is still
accepted). Every route says what it answers, errors included, and with an API key set the document
declares it, so Swagger UI's Authorize button sends it.

`/docs` is served from files inside installed packages (Swagger UI's from `fastapi_swagger`), never from a
CDN, so it works on machines without internet access. The page and its files hold no data and need no
key; `/openapi.json` does, and the page asks for the key when the document answers 401.
"""

from __future__ import annotations

import copy
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from ._version import __version__
from .openapi_schemas import RESPONSES, SCHEMAS, SECURITY, SECURITY_SCHEMES, errors, json_body, ref

if TYPE_CHECKING:
    from .app import FastTaskAPI
    from .tasks import TaskDef

REF_TEMPLATE = "#/components/schemas/{model}"

_JOB = json_body("The job", ref("Job"))
_LOCATION = {"Location": {"description": "the job's URL, /jobs/{id}", "schema": {"type": "string"}}}
_JOB_ID = {"name": "job_id", "in": "query", "schema": {"type": "string"}, "description": "the job's id"}

ROUTE_RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("/jobs/{job_id}", "get"): {"200": _JOB, **errors("404", "422", "503")},
    ("/jobs/{job_id}/cancel", "post"): {
        "200": json_body("The job, cancelled (a running one stops at its next progress report)", ref("Job")),
        **errors("404", "409", "503"),
    },
    ("/jobs/{job_id}/stream", "get"): {
        "200": {
            "description": "Server-sent events: `progress` (job JSON), `output` (one per yield), `end` (job JSON); "
            "each event's id counts the outputs sent, for Last-Event-ID",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **errors("404", "503"),
    },
    ("/jobs/{job_id}/files/{index}", "get"): {
        "200": {"description": "The file", "content": {"application/octet-stream": {"schema": {}}}},
        "206": {"description": "The bytes a Range header asked for", "content": {"application/octet-stream": {}}},
        "416": {
            "description": "A Range outside the file",
            "content": {"application/json": {"schema": ref("Error")}},
        },
        **errors("404", "503"),
    },
    ("/status", "get"): {"200": json_body("The job, FastTaskAPI 1.x shape", ref("LegacyJob")), **errors("404", "422")},
    ("/status", "post"): {"200": json_body("The job, FastTaskAPI 1.x shape", ref("LegacyJob")), **errors("404", "422")},
    ("/jobs", "get"): {"200": json_body("Newest first", ref("JobPage")), **errors("422", "503")},
    ("/queues", "get"): {"200": json_body("Per task endpoint", ref("QueueList")), **errors("503")},
    ("/health", "get"): {"200": json_body("The process serves", ref("ServiceState"))},
    ("/ready", "get"): {
        "200": json_body("The queue backend is reachable", ref("ServiceState")),
        "503": json_body("The queue backend is not reachable", ref("Error")),
    },
    ("/metrics", "get"): {
        "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
}
OPEN_ROUTES = {"/health", "/ready"}
"""Routes that need no API key (probes): documented with an empty security requirement."""

EXTRA_PARAMETERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("/jobs/{job_id}/stream", "get"): [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "resume: the id of the last event received; outputs up to it are not sent again",
        }
    ],
    ("/jobs/{job_id}/files/{index}", "get"): [
        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}, "description": "bytes=a-b"}
    ],
    ("/status", "get"): [{**_JOB_ID, "required": True}],
    ("/status", "post"): [{**_JOB_ID, "required": False, "description": "the job's id (or job_id in the body)"}],
}


def build_openapi(api: FastAPI, service: FastTaskAPI) -> dict[str, Any]:
    schema = get_openapi(title=api.title, version=__version__, routes=api.routes)
    # fastSDK 0.2 recognises a FastTaskAPI service by this key; `x-` is how OpenAPI spells an extension
    schema["info"]["fast-task-api"] = __version__
    schema["info"]["x-fast-task-api"] = __version__
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(copy.deepcopy(SCHEMAS))
    components["responses"] = copy.deepcopy(RESPONSES)
    for task in service.tasks.values():
        _document_task(schema, schemas, task)
    for (path, method), responses in ROUTE_RESPONSES.items():
        operation = schema["paths"].get(path, {}).get(method)
        if operation is not None:
            operation["responses"] = copy.deepcopy(responses)
            extra = EXTRA_PARAMETERS.get((path, method), [])
            names = {param["name"] for param in extra}
            kept = [param for param in operation.get("parameters", []) if param["name"] not in names]
            if kept or extra:
                operation["parameters"] = kept + copy.deepcopy(extra)
    if service.settings.api_key:
        components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
        schema["security"] = copy.deepcopy(SECURITY)
        for path, item in schema["paths"].items():
            for operation in item.values():
                if path in OPEN_ROUTES:
                    operation["security"] = []
                else:
                    operation["responses"].update(errors("401"))
    return schema


def _document_task(schema: dict[str, Any], schemas: dict[str, Any], task: TaskDef) -> None:
    params = task.params_model.model_json_schema(ref_template=REF_TEMPLATE)
    for name, definition in params.pop("$defs", {}).items():
        schemas[name] = definition
    params["title"] = f"{task.name} parameters"
    model = task.params_model.__name__
    schemas[model] = params
    if task.file_params:
        form = f"{model}_form"
        schemas[form] = _form_schema(params, task)
        content = {"multipart/form-data": {"schema": ref(form)}}
    else:
        content = {"application/json": {"schema": ref(model)}}
    for method in task.methods:
        operation = schema["paths"][task.path][method.lower()]
        operation["tags"] = ["tasks"]
        if method in ("POST", "PUT", "PATCH"):
            operation["requestBody"] = {"required": bool(params.get("required")), "content": content}
        else:  # parameters come in the query string
            operation["parameters"] = [
                {"name": name, "in": "query", "required": name in params.get("required", []), "schema": prop}
                for name, prop in params.get("properties", {}).items()
            ]
        operation["responses"] = {
            "202": {**json_body("The job, accepted", ref("Job")), "headers": copy.deepcopy(_LOCATION)},
            **errors("413", "422", "429", "503"),
        }


def _form_schema(params: dict[str, Any], task: TaskDef) -> dict[str, Any]:
    """The multipart form of a task's parameters: file parameters as file parts, so form tools offer an upload."""
    form = copy.deepcopy(params)
    form["title"] = f"{task.name} form"
    for name in task.file_params:
        original = form["properties"][name]
        part: dict[str, Any] = {"type": "string", "format": "binary"}
        if name in task.list_params:
            part = {"type": "array", "items": part}
        part["description"] = "a file part (JSON bodies also take base64, a data URI or an http(s) URL)"
        if "title" in original:
            part["title"] = original["title"]
        form["properties"][name] = part
    return form


def install_openapi(api: FastAPI, service: FastTaskAPI) -> None:
    """Replace FastAPI's generator with `build_openapi` (built once) and serve `/docs` from local files."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = build_openapi(api, service)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    _add_docs_routes(api)


DOCS_FILES = {
    "swagger-ui-bundle.js": ("fastapi_swagger.resources", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("fastapi_swagger.resources", "text/css; charset=utf-8"),
    "favicon-32x32.png": ("fastapi_swagger.resources", "image/png"),
    "docs.js": ("fasttask", "text/javascript; charset=utf-8"),
    "docs.css": ("fasttask", "text/css; charset=utf-8"),
}
"""What `/docs/<name>` serves: Swagger UI's files, and the page's own script and styles."""

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Nothing loads from elsewhere; Swagger UI sets inline styles, so those are allowed."""


def _add_docs_routes(api: FastAPI) -> None:
    own = resources.files("fasttask") / "apidocs"
    page = (own / "index.html").read_bytes()
    files = {
        name: (((own if package == "fasttask" else resources.files(package)) / name).read_bytes(), media_type)
        for name, (package, media_type) in DOCS_FILES.items()
    }

    @api.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": DOCS_CSP}
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    @api.get("/docs/{name}", include_in_schema=False)
    async def docs_file(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return Response(b'{"detail":"not found"}', 404, media_type="application/json")
        content, media_type = found
        return Response(content, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})

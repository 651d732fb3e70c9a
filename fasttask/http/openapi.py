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

from .._version import __version__
from .openapi_schemas import RESPONSES, SCHEMAS, SECURITY, SECURITY_SCHEMES, WEBHOOK_CALLBACK, errors, ref
from .routes import Route, RouteTable

if TYPE_CHECKING:
    from ..tasks import TaskDef

REF_TEMPLATE = "#/components/schemas/{model}"


def build_openapi(api: FastAPI, table: RouteTable, api_key: bool) -> dict[str, Any]:
    """FastAPI's document of `api`, with what the route table declares: each task's parameters as its
    request, each route's responses and parameters, and (`api_key`) the key every route but the open ones
    needs."""
    schema = get_openapi(title=api.title, version=__version__, routes=api.routes)
    # fastSDK 0.2 recognises a FastTaskAPI service by this key; `x-` is how OpenAPI spells an extension
    schema["info"]["fast-task-api"] = __version__
    schema["info"]["x-fast-task-api"] = __version__
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(copy.deepcopy(SCHEMAS))
    components["responses"] = copy.deepcopy(RESPONSES)
    for route in table.routes:
        for method in route.methods:
            operation = schema["paths"].get(route.path, {}).get(method.lower())
            if operation is None:
                continue
            if route.task is not None:
                _document_task(operation, schemas, route.task, method)
            if route.responses is not None:
                operation["responses"] = copy.deepcopy(route.responses)
            if route.parameters:
                names = {param["name"] for param in route.parameters}
                kept = [param for param in operation.get("parameters", []) if param["name"] not in names]
                operation["parameters"] = kept + copy.deepcopy(list(route.parameters))
    if api_key:
        open_paths = {route.path for route in table.routes if route.open}
        components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
        schema["security"] = copy.deepcopy(SECURITY)
        for path, item in schema["paths"].items():
            for operation in item.values():
                if path in open_paths:
                    operation["security"] = []
                else:
                    operation["responses"].update(errors("401"))
    return schema


def _document_task(operation: dict[str, Any], schemas: dict[str, Any], task: TaskDef, method: str) -> None:
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
    operation["tags"] = ["tasks"]
    if method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = {
            "description": "The task's parameters; or, as JSON, a `WebhookSubmit` holding them, to have the job's "
            "events POSTed to a URL",
            "required": bool(params.get("required")),
            "content": content,
        }
        operation["callbacks"] = copy.deepcopy(WEBHOOK_CALLBACK)
    else:  # parameters come in the query string
        operation["parameters"] = [
            {"name": name, "in": "query", "required": name in params.get("required", []), "schema": prop}
            for name, prop in params.get("properties", {}).items()
        ]


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


def install_openapi(api: FastAPI, table: RouteTable, api_key: bool) -> None:
    """Replace FastAPI's generator with `build_openapi` (built once)."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = build_openapi(api, table, api_key)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


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


def docs_routes() -> list[Route]:
    """`/docs` and its files."""
    own = resources.files("fasttask") / "apidocs"
    page = (own / "index.html").read_bytes()
    files = {
        name: (((own if package == "fasttask" else resources.files(package)) / name).read_bytes(), media_type)
        for name, (package, media_type) in DOCS_FILES.items()
    }

    async def docs() -> Response:
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": DOCS_CSP}
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    async def docs_file(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return Response(b'{"detail":"not found"}', 404, media_type="application/json")
        content, media_type = found
        return Response(content, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})

    files_paths = tuple(f"/docs/{name}" for name in DOCS_FILES)
    return [
        Route("/docs", docs, ("GET",), include_in_schema=False, open_paths=("/docs",)),
        Route("/docs/{name}", docs_file, ("GET",), include_in_schema=False, open_paths=files_paths),
    ]

"""The HTTP layer: the FastAPI application, the hot path, OpenAPI, the API key, CORS and the service's own
middleware, request reading and its limits. It is the only part of fasttask that imports FastAPI or
Starlette; `FastTaskAPI` builds it on first use (`http.api.build_api`, `http.api.build_asgi`)."""

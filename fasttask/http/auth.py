"""API-key authentication (FTAPI_API_KEY): every route needs the key, websockets included, but the paths the
route table leaves open (`Route.open_paths`: the probes and static files; `/openapi.json` needs the key)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

WEBSOCKET_POLICY_VIOLATION = 1008


class ApiKeyMiddleware:
    """Refuses requests without `Authorization: Bearer <key>` or `X-API-Key: <key>` with 401, and closes a
    websocket without the key before accepting it (the handshake is refused with 403)."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Collection[str]) -> None:
        self.app = app
        self._key = api_key.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" or (kind == "http" and scope["path"] in self.open_paths) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION, "reason": "missing API key"})
            return
        if kind != "http":
            raise RuntimeError(f"ApiKeyMiddleware does not serve ASGI {kind!r} scopes")
        body = json.dumps({"detail": "missing or wrong API key: send 'Authorization: Bearer <key>'"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: Scope) -> bool:
        presented = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                presented = value[7:].strip()
                break
            if name == b"x-api-key":
                presented = value.strip()
                break
        # compare_digest takes the same time wherever the first difference is
        return hmac.compare_digest(presented, self._key)

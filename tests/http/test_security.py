"""The API key on websockets too, over a real uvicorn server on loopback (wsproto serving, the websockets
client connecting)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.apps import make_app
from tests.support.servers import free_port

KEY = "ws-key-0123456789"


@pytest.fixture
def websocket_url() -> Iterator[str]:
    app = make_app(api_key=KEY)

    @app.fastapi.websocket("/ws")
    async def hello(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, ws="wsproto", lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    yield f"ws://127.0.0.1:{port}/ws"
    server.should_exit = True
    thread.join(10)


def test_a_websocket_without_the_key_is_refused(websocket_url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
        with pytest.raises(InvalidStatus) as refused:
            connect(websocket_url, additional_headers=headers, open_timeout=10).close()
        assert refused.value.response.status_code == 403
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        with connect(websocket_url, additional_headers=headers, open_timeout=10) as websocket:
            assert websocket.recv(timeout=10) == "hello"

"""A webhook receiver on loopback: records every request and answers with the statuses it is told to."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    """`answers` are the statuses of the first requests, in order; after them every request gets `then`."""

    def __init__(self, answers: list[int] | None = None, then: int = 200) -> None:
        self.answers = list(answers or [])
        self.then = then
        self.by_type: dict[str, list[int]] = {}
        """Statuses of the first requests of one event type (`job.start`), before `answers`: deliveries of
        different events of a job may come in any order."""
        self.delay_s = 0.0
        """How long each answer is held back (a slow receiver)."""
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.received.append(got)
                    typed = receiver.by_type.get(got.event.get("type", "")) if receiver.by_type else None
                    queue = typed or receiver.answers
                    status = queue.pop(0) if queue else receiver.then
                    delay = receiver.delay_s
                time.sleep(delay)
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item.event for item in self.received]

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Received]:
        """The requests once at least `count` came (a deadline only so that a broken build fails, not hangs)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            assert time.monotonic() < deadline, f"the receiver got {len(self.received)} requests, not {count}"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

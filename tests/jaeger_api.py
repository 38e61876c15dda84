"""Jaeger v2's query API as far as tracehook uses it (``/api/v3/traces/ID``, ``/api/v3/services``), served
from whatever a test gives it: recorded answers, or the spans the suite's OTLP receiver got."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NOT_FOUND = {"error": {"httpCode": 404, "message": "No traces found"}}


class JaegerQueryApi(ThreadingHTTPServer):
    """Answers ``GET /api/v3/traces/{id}`` with ``lookup(id)`` (404 when it gives None) and
    ``GET /api/v3/services`` with ``services()``; records the paths asked for."""

    daemon_threads = True

    def __init__(
        self, lookup: Callable[[str], Any | None], services: Callable[[], list[str]] = lambda: []
    ) -> None:
        self.lookup = lookup
        self.services = services
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> JaegerQueryApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: JaegerQueryApi

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path == "/api/v3/services":
            self._reply(200, {"services": self.server.services()})
            return
        answer = None
        if self.path.startswith("/api/v3/traces/"):
            answer = self.server.lookup(self.path.removeprefix("/api/v3/traces/"))
        if answer is None:
            self._reply(404, NOT_FOUND)
        else:
            self._reply(200, answer)

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass

"""A live OTLP/HTTP endpoint for benchmarks that accepts and discards: decoding waits until asked.

The test receiver (``tests/otlp_receiver.py``) decodes every request as it arrives; on a 2-core machine
that steals CPU from the processes being measured, in proportion to the spans they send, so it penalises
exactly the variants that export. This one keeps the raw bodies and answers 200 at once; :meth:`counts`
decodes them afterwards, outside the measured windows, to count what arrived.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OtlpSink"]

_KINDS = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK exporter's session expects
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.sink.keep(body, self.headers.get("Content-Encoding", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sink: OtlpSink) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sink = sink


class OtlpSink:
    """An OTLP/HTTP trace endpoint on a free port that keeps the raw requests until :meth:`counts`."""

    def __init__(self) -> None:
        self._bodies: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True)

    def start(self) -> OtlpSink:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        """The base URL, for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def keep(self, body: bytes, encoding: str) -> None:
        """Store one request's body."""
        with self._lock:
            self._bodies.append((body, encoding))

    @property
    def request_count(self) -> int:
        """How many export requests arrived so far."""
        with self._lock:
            return len(self._bodies)

    def counts(self) -> Counter[tuple[str, str, bool]]:
        """Decode everything received so far: spans per (service, kind, has a parent)."""
        return Counter(
            {(service, kind, parent): n for (service, kind, parent, _), n in self.counts_by_name().items()}
        )

    def counts_by_name(self) -> Counter[tuple[str, str, bool, str]]:
        """Decode everything received so far: spans per (service, kind, has a parent, name)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: PLC0415
            ExportTraceServiceRequest,
        )

        with self._lock:
            bodies = list(self._bodies)
        counted: Counter[tuple[str, str, bool, str]] = Counter()
        for raw, encoding in bodies:
            body = raw
            if encoding == "gzip":
                body = gzip.decompress(raw)
            elif encoding == "deflate":
                body = zlib.decompress(raw)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        attribute.value.string_value
                        for attribute in resource_spans.resource.attributes
                        if attribute.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        counted[(service, _KINDS[span.kind], bool(span.parent_span_id), span.name)] += 1
        return counted

"""Span exporters beyond the SDK's: OTLP-JSON lines in a file (for the no-Docker demo and tests)."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["OtlpJsonFileExporter", "iter_otlp_json_spans", "otlp_json_line"]

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping writes base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str) and value:
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def otlp_json_line(spans: Sequence[ReadableSpan]) -> str:
    """Encode spans as one OTLP/JSON ``ExportTraceServiceRequest`` on one line."""
    message = MessageToDict(encode_spans(spans))
    _hex_ids(message)
    return json.dumps(message, separators=(",", ":"))


class OtlpJsonFileExporter(SpanExporter):
    """Appends each batch as one OTLP/JSON line, the format of the OpenTelemetry Collector's file exporter.

    Several processes may append to the same file: each batch is written with a single ``write`` on a
    descriptor opened with ``O_APPEND``, so lines never interleave.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the batch; failure to write is reported, never raised."""
        if self._closed or not spans:
            return SpanExportResult.SUCCESS
        data = (otlp_json_line(spans) + "\n").encode()
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Stop accepting batches."""
        self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: every export is written at once."""
        return True


def iter_otlp_json_spans(lines: Iterator[str] | Sequence[str]) -> Iterator[dict[str, Any]]:
    """Yield each span of OTLP/JSON lines as a dict, with ``service.name`` of its resource added."""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        request = json.loads(line)
        for resource_spans in request.get("resourceSpans", []):
            service = ""
            for attribute in resource_spans.get("resource", {}).get("attributes", []):
                if attribute.get("key") == "service.name":
                    service = attribute.get("value", {}).get("stringValue", "")
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    yield {**span, "service.name": service}

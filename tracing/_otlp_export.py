"""The SDK's OTLP/HTTP span exporter with tracehook's span encoder (``TRACEHOOK_OTLP_ENCODER=tracehook``)."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as _upstream_encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from tracing._otlp_encode import encode_spans

__all__ = ["FAST_EXPORT", "TracehookOTLPSpanExporter"]

_log = logging.getLogger("tracing")

_Export = Callable[[OTLPSpanExporter, Sequence[ReadableSpan]], SpanExportResult]


class _EncodedBatch:
    """Stands in for the request message the SDK's export() serializes: it holds tracehook's bytes."""

    __slots__ = ("_data",)

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self._data = encode_spans(spans)

    def SerializePartialToString(self) -> bytes:  # noqa: N802  # protobuf's method name
        """The serialized ``ExportTraceServiceRequest``."""
        return self._data

    def SerializeToString(self) -> bytes:  # noqa: N802  # protobuf's method name
        """The serialized ``ExportTraceServiceRequest``."""
        return self._data


def _export_with_tracehook_encoder() -> _Export | None:
    """The SDK's own ``OTLPSpanExporter.export``, its ``encode_spans`` name bound to tracehook's encoder.

    Only the encoding changes: the shutdown check, the exporter's self-metrics, the max_request_size
    check, retries with backoff and the timeout stay the SDK's code, run as it is, so they follow SDK
    upgrades without a copy here to keep in step. None when the SDK's export() no longer encodes through
    that name (tracehook then exports with the SDK's encoder; a test fails so that this gets looked at).
    """
    export = OTLPSpanExporter.export
    if "encode_spans" not in export.__code__.co_names:
        return None
    if export.__globals__.get("encode_spans") is not _upstream_encode_spans:
        return None
    namespace = dict(export.__globals__)
    namespace["encode_spans"] = _EncodedBatch
    clone = types.FunctionType(
        export.__code__, namespace, export.__name__, export.__defaults__, export.__closure__
    )
    clone.__kwdefaults__ = export.__kwdefaults__
    clone.__qualname__ = export.__qualname__
    return clone


_tracehook_export = _export_with_tracehook_encoder()
FAST_EXPORT = _tracehook_export is not None
"""Whether :class:`TracehookOTLPSpanExporter` encodes with tracehook's encoder (this SDK allows it)."""
if not FAST_EXPORT:
    _log.debug("tracing: this SDK's OTLPSpanExporter.export is not the one expected; using its own encoder")


class TracehookOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding spans with tracehook's encoder.

    It takes the SDK exporter's arguments and behaves as it does in every respect but the cost of
    encoding: the bytes sent are the same (see ``tracing/_otlp_encode.py``).
    """

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode and send ``spans`` as the SDK's exporter does."""
        if _tracehook_export is None:
            return super().export(spans)
        return _tracehook_export(self, spans)

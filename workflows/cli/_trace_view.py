"""One trace as rows and as a tree, for ``tracehook trace`` and the demo.

The row model and the tree renderer are :mod:`tracing._trace_tree` (the test assertions of
``tracing.testing`` print with them too); this module reads the rows. Two sources give the same
:class:`SpanRow` list:

* Jaeger v2's query API, ``GET /api/v3/traces/{trace_id}``. Its HTTP gateway answers
  ``{"result": {"resourceSpans": [...]}}``: OTLP/JSON (``resourceSpans`` → ``scopeSpans`` → ``spans``)
  wrapped in ``result``, kinds and status codes as numbers, times as strings of nanoseconds. Ids are hex
  in Jaeger v2, base64 in older gRPC-gateway builds; both are read, and always given back as lowercase hex.
* OTLP/JSON lines, one ``ExportTraceServiceRequest`` a line (:class:`tracing.OtlpJsonFileExporter`).

Pure functions only: no I/O beyond writing to the :class:`rich.console.Console` handed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console
from rich.text import Text

from tracing._trace_tree import BAR_WIDTH, DETAIL_KEYS, SpanRow, normalise_id, spans_of_trace
from tracing._trace_tree import render_tree as _render_tree
from tracing.exporters import iter_otlp_json_spans
from workflows.objective import COMPLETION_MS, OBJECTIVE_MET, OUTCOME

__all__ = [
    "Completion",
    "SpanRow",
    "completion_of",
    "load_jaeger_v3",
    "load_otlp_lines",
    "load_spans_text",
    "normalise_id",
    "render_tree",
    "spans_of_trace",
]

_KINDS: Final = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUSES: Final = ("UNSET", "OK", "ERROR")
# The workflow's outcome, shown next to the HTTP status the renderer shows anyway.
WORKFLOW_DETAIL_KEYS: Final = ("workflow.status", *DETAIL_KEYS)


@dataclass(frozen=True)
class Completion:
    """A webhook's receipt → done, as its last attempt recorded it (``workflows.objective``)."""

    ms: float
    outcome: str
    objective_met: bool

    def describe(self) -> str:
        """``receipt → done 1234.5 ms: completed, objective met``."""
        met = "objective met" if self.objective_met else "objective missed"
        return f"receipt → done {self.ms:.1f} ms: {self.outcome}, {met}"


def completion_of(rows: Iterable[SpanRow]) -> Completion | None:
    """The receipt → done of one trace's webhook, the very figure its metric recorded; None while the
    webhook is not done, or for a trace recorded before tracehook measured it."""
    recorded = [row for row in rows if isinstance(row.attributes.get(COMPLETION_MS), int | float)]
    if not recorded:
        return None
    last = max(recorded, key=lambda row: row.end_ns)
    attributes = last.attributes
    return Completion(
        float(attributes[COMPLETION_MS]),
        str(attributes.get(OUTCOME, "")),
        attributes.get(OBJECTIVE_MET) is True,
    )


def _completion_note(rows: list[SpanRow]) -> Text | None:
    done = completion_of(rows)
    if done is None:
        return None
    return Text(done.describe(), style="bold" if done.objective_met else "bold red")


def _any_value(value: Any) -> Any:
    """The plain value of an OTLP/JSON ``AnyValue``."""
    if not isinstance(value, Mapping):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_any_value(item) for item in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {str(item.get("key")): _any_value(item.get("value")) for item in items if isinstance(item, dict)}


def _enum(value: Any, names: tuple[str, ...], prefix: str) -> str:
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str) and value:
        if value.isdigit() and int(value) < len(names):
            return names[int(value)]
        short = value.upper().removeprefix(prefix)
        return "INTERNAL" if short == "UNSPECIFIED" else short
    return names[0]


def _row(span: Mapping[str, Any], service: str) -> SpanRow:
    status = span.get("status") or {}
    return SpanRow(
        trace_id=normalise_id(span.get("traceId"), 16),
        span_id=normalise_id(span.get("spanId"), 8),
        parent_span_id=normalise_id(span.get("parentSpanId"), 8),
        name=str(span.get("name", "")),
        service=service,
        kind=_enum(span.get("kind"), _KINDS, "SPAN_KIND_"),
        start_ns=int(span.get("startTimeUnixNano") or 0),
        end_ns=int(span.get("endTimeUnixNano") or 0),
        status=_enum(status.get("code"), _STATUSES, "STATUS_CODE_"),
        status_message=str(status.get("message", "")),
        attributes=_attributes(span.get("attributes")),
    )


def _sorted(rows: Iterable[SpanRow]) -> list[SpanRow]:
    unique = {(row.trace_id, row.span_id): row for row in rows}
    return sorted(unique.values(), key=lambda row: (row.start_ns, row.span_id))


def load_jaeger_v3(payload: Any) -> list[SpanRow]:
    """The spans of a Jaeger v3 query answer (``{"result": {"resourceSpans": ...}}``), by start time.

    Also takes the unwrapped ``{"resourceSpans": ...}`` and a list of either (a streamed answer).

    Raises:
        ValueError: the payload has none of these shapes.
    """
    documents = payload if isinstance(payload, list) else [payload]
    rows: list[SpanRow] = []
    for document in documents:
        if not isinstance(document, Mapping):
            raise TypeError("expected a JSON object with resourceSpans or result.resourceSpans")
        data = document.get("result", document)
        if not isinstance(data, Mapping) or "resourceSpans" not in data:
            raise ValueError("expected a JSON object with resourceSpans or result.resourceSpans")
        for resource_spans in data.get("resourceSpans") or []:
            resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.get("scopeSpans") or []:
                rows.extend(_row(span, service) for span in scope_spans.get("spans") or [])
    return _sorted(rows)


def load_otlp_lines(lines: Iterable[str]) -> list[SpanRow]:
    """The spans of OTLP/JSON lines (the OpenTelemetry Collector's file format), by start time.

    Raises:
        ValueError: a line is not JSON (``json.JSONDecodeError``) or an id is malformed.
    """
    return _sorted(
        _row(span, str(span.get("service.name", ""))) for span in iter_otlp_json_spans(list(lines))
    )


def load_spans_text(text: str) -> list[SpanRow]:
    """Spans from a file's text: one Jaeger v3 / OTLP JSON document, or OTLP/JSON lines."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return load_otlp_lines(text.splitlines())
    return load_jaeger_v3(document)


def render_tree(spans: list[SpanRow], console: Console, *, bar_width: int = BAR_WIDTH) -> None:
    """Print the spans as ``tracehook trace`` does: :func:`tracing._trace_tree.render_tree` with the
    workflow's status among the details and, under the header, the webhook's receipt → done once it is
    done (:func:`completion_of`)."""
    _render_tree(
        spans,
        console,
        bar_width=bar_width,
        detail_keys=WORKFLOW_DETAIL_KEYS,
        header_note=_completion_note,
    )

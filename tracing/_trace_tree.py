"""One trace as a tree: the span model and the renderer behind ``tracehook trace`` and the test assertions.

Domain-free: a :class:`SpanRow` is any span with hex ids and short kind and status names, wherever it was
read from (Jaeger's query API and OTLP/JSON lines in ``workflows.cli._trace_view``, the test receiver in
``tracing.testing``). No I/O beyond writing to the :class:`rich.console.Console` handed in.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

__all__ = [
    "BAR_WIDTH",
    "DETAIL_KEYS",
    "SpanRow",
    "normalise_id",
    "render_tree",
    "spans_of_trace",
    "split_tree",
]

BAR_WIDTH: Final = 30
DETAIL_KEYS: Final = ("http.response.status_code",)
"""Attributes shown as ``key=value`` after a span's duration (the last part of the key)."""
_NAME_COLUMN_MAX: Final = 72
_GUIDE_WIDTH: Final = 4  # rich's tree guides ("├── ") take four cells per level
# A line under a trace's header, from its rows (the webhook's receipt → done, in workflows).
HeaderNote: TypeAlias = Callable[[list["SpanRow"]], Text | None]
_PALETTE: Final = ("cyan", "green", "magenta", "blue", "yellow", "bright_cyan", "bright_green", "bright_blue")


@dataclass(frozen=True)
class SpanRow:
    """One span, normalised: hex ids, short kind and status names, plain attribute values."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        """Wall-clock duration in milliseconds."""
        return max(0, self.end_ns - self.start_ns) / 1_000_000

    @property
    def slow(self) -> bool:
        """True when the pipeline flagged the span ``slow=true``."""
        value = self.attributes.get("slow")
        return value is True or (isinstance(value, str) and value.lower() == "true")

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-ready dict (the items of ``tracehook trace --json``)."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "service": self.service,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "status_message": self.status_message,
            "attributes": self.attributes,
        }


def normalise_id(value: Any, size: int) -> str:
    """A trace (``size=16``) or span (``size=8``) id as lowercase hex, from hex or base64.

    Raises:
        ValueError: neither hex nor base64 of ``size`` bytes.
    """
    if value is None or value == "":
        return ""
    text = str(value).strip()
    if len(text) == 2 * size:
        try:
            return bytes.fromhex(text).hex()
        except ValueError:
            pass
    padded = text + "=" * (-len(text) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(padded)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == size:
            return raw.hex()
    raise ValueError(f"{text!r} is neither hex nor base64 of a {size}-byte id")


def spans_of_trace(spans: Iterable[SpanRow], trace_id: str) -> list[SpanRow]:
    """The rows of one trace (hex or base64 id)."""
    wanted = normalise_id(trace_id, 16)
    return [span for span in spans if span.trace_id == wanted]


def split_tree(spans: list[SpanRow]) -> tuple[list[SpanRow], dict[str, list[SpanRow]]]:
    """Roots (no parent, or a parent missing from the trace) and children by parent id, by start time."""
    known = {span.span_id for span in spans}
    roots: list[SpanRow] = []
    children: dict[str, list[SpanRow]] = {}
    for span in sorted(spans, key=lambda row: (row.start_ns, row.span_id)):
        if span.parent_span_id and span.parent_span_id in known and span.parent_span_id != span.span_id:
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    return roots, children


def _bar(span: SpanRow, start: int, end: int, width: int, style: str) -> Text:
    window = max(1, end - start)
    first = min(width - 1, max(0, math.floor((span.start_ns - start) / window * width)))
    last = min(width, max(first + 1, math.ceil((span.end_ns - start) / window * width)))
    bar = Text("│", style="dim")
    bar.append("·" * first, style="dim")
    bar.append("█" * (last - first), style=style)
    bar.append("·" * (width - last), style="dim")
    bar.append("│", style="dim")
    return bar


def _details(span: SpanRow, detail_keys: Sequence[str]) -> Text:
    attributes = span.attributes
    text = Text()
    if span.status == "ERROR":
        text.append("  ERROR", style="bold red")
        if span.status_message:
            text.append(f" {span.status_message}", style="red")
    if span.slow:
        text.append("  slow", style="bold yellow")
    text.append(f"  {span.kind.lower()}", style="dim")
    if "batch.items_total" in attributes:
        failed = attributes.get("batch.items_failed")
        text.append(f"  items {attributes['batch.items_total']}", style="bold")
        if failed is not None:
            text.append(f" failed {failed}", style="bold red" if failed else "bold")
    if "batch.chunk_index" in attributes:
        text.append(
            f"  chunk {attributes['batch.chunk_index']} size {attributes.get('batch.chunk_size', '?')}"
        )
        if attributes.get("batch.chunk_failed"):
            text.append(f" failed {attributes['batch.chunk_failed']}", style="red")
    if "celery.attempt" in attributes:
        text.append(f"  attempt {attributes['celery.attempt']}", style="bold")
    for key in detail_keys:
        if key in attributes:
            text.append(f"  {key.rsplit('.', 1)[-1]}={attributes[key]}", style="dim")
    return text


def _render_trace(
    trace_id: str,
    rows: list[SpanRow],
    colours: Mapping[str, str],
    console: Console,
    bar_width: int,
    detail_keys: Sequence[str],
    header_note: HeaderNote | None,
) -> None:
    start = min(row.start_ns for row in rows)
    end = max(row.end_ns for row in rows)
    roots, children = split_tree(rows)
    depths: dict[str, int] = {}
    stack = [(root, 1) for root in reversed(roots)]
    while stack:
        span, depth = stack.pop()
        if span.span_id in depths:
            continue
        depths[span.span_id] = depth
        stack.extend((child, depth + 1) for child in reversed(children.get(span.span_id, [])))

    def depth_of(span: SpanRow) -> int:
        return depths.get(span.span_id, 1)

    column = min(
        _NAME_COLUMN_MAX,
        max(depth_of(row) * _GUIDE_WIDTH + len(row.service) + 2 + len(row.name) for row in rows),
    )

    def label(span: SpanRow) -> Text:
        colour = colours.get(span.service, "white")
        failed = span.status == "ERROR"
        left = Text.assemble((span.service, colour), "  ", (span.name, "bold red" if failed else "bold"))
        left.truncate(max(8, column - depth_of(span) * _GUIDE_WIDTH), overflow="ellipsis", pad=True)
        text = Text.assemble(left, " ", _bar(span, start, end, bar_width, colour))
        text.append(f" {span.duration_ms:9.1f} ms", style="red" if failed else "")
        text.append_text(_details(span, detail_keys))
        return text

    header = Text.assemble(
        (f"trace {trace_id}", "bold"),
        f"  {len(rows)} spans, {len({row.service for row in rows})} services, "
        f"{(end - start) / 1_000_000:.1f} ms",
    )
    note = header_note(rows) if header_note is not None else None
    if note is not None:
        header.append("\n")
        header.append_text(note)
    tree = Tree(header, guide_style="dim")
    seen: set[str] = set()
    pending: list[tuple[Tree, SpanRow]] = [(tree, root) for root in reversed(roots)]
    while pending:
        node, span = pending.pop()
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        branch = node.add(label(span))
        pending.extend((branch, child) for child in reversed(children.get(span.span_id, [])))
    console.print(tree, soft_wrap=False, crop=False)


def render_tree(
    spans: list[SpanRow],
    console: Console,
    *,
    bar_width: int = BAR_WIDTH,
    detail_keys: Sequence[str] = DETAIL_KEYS,
    header_note: HeaderNote | None = None,
) -> None:
    """Print the spans as a tree: service, name, waterfall bar, duration, status, slow flag, batch and
    retry details, and the ``detail_keys`` attributes; children ordered by start time. Several traces in
    ``spans`` give several trees; ``header_note(rows)`` may add a line under each trace's header."""
    by_trace: dict[str, list[SpanRow]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    services = sorted({span.service for span in spans})
    colours = {service: _PALETTE[index % len(_PALETTE)] for index, service in enumerate(services)}
    for trace_id, rows in by_trace.items():
        _render_trace(trace_id, rows, colours, console, bar_width, detail_keys, header_note)

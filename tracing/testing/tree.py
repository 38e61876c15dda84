"""Expected trace trees, and matching received spans against them.

An expected tree is nested :func:`span` calls that read like the trace::

    span("POST /webhooks/shop", kind="SERVER")(
        span("publish shop.tasks.charge", kind="PRODUCER")(
            span("run shop.tasks.charge", kind="CONSUMER", attributes={"celery.state": "SUCCESS"})(
                "charge.card",
            ),
        ),
    )

Children follow a span in a call of their own (or as positional arguments of :func:`span`, before its
keywords). A child given as a plain string is a span with that name and nothing else asked of it. Spans are
matched by name, then by what else is given: kind, service, status and attributes (each given attribute
equal, or a callable returning true for the actual value). Siblings match in any order.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_span_id, format_trace_id

from tracing._trace_tree import SpanRow, render_tree, split_tree
from tracing.testing._receiver import ReceivedSpan

__all__ = [
    "ExpectedSpan",
    "SpanLike",
    "format_expected",
    "format_trace",
    "match_tree",
    "span",
    "to_rows",
]

_KINDS = frozenset({"INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"})
_STATUSES = frozenset({"UNSET", "OK", "ERROR"})
_TRACE_WIDTH = 200
_MISSING = object()


SpanLike: TypeAlias = ReceivedSpan | SpanRow | ReadableSpan
"""A span the assertions take: the receiver's :class:`ReceivedSpan`, a :class:`SpanRow`, or the SDK's
``ReadableSpan`` (from an in-memory exporter, in a unit test)."""


@dataclass(frozen=True)
class ExpectedSpan:
    """One span of an expected tree; build it with :func:`span`."""

    name: str
    children: tuple[ExpectedSpan, ...] = ()
    kind: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    service: str | None = None
    status: str | None = None

    def __call__(self, *children: ExpectedSpan | str) -> ExpectedSpan:
        """This span with more children: ``span("run", kind="CONSUMER")(span("step"), "other step")``
        keeps each span's name and kind together, above its children."""
        return dataclasses.replace(self, children=self.children + _children(children))

    @property
    def size(self) -> int:
        """The number of spans in this tree."""
        return 1 + sum(child.size for child in self.children)

    def describe(self) -> str:
        """One line: the name and whatever else is asked of the span."""
        parts = [repr(self.name)]
        if self.kind is not None:
            parts.append(self.kind)
        if self.service is not None:
            parts.append(f"service={self.service!r}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        parts.extend(f"{key}={_show(value)}" for key, value in self.attributes.items())
        return " ".join(parts)

    def mismatches(self, row: SpanRow) -> list[str]:
        """What differs between this expected span and ``row`` (its children aside); empty when it matches."""
        found: list[str] = []
        if row.name != self.name:
            found.append(f"name {row.name!r}, not {self.name!r}")
        if self.kind is not None and row.kind != self.kind:
            found.append(f"kind {row.kind}, not {self.kind}")
        if self.service is not None and row.service != self.service:
            found.append(f"service {row.service!r}, not {self.service!r}")
        if self.status is not None and row.status != self.status:
            found.append(f"status {row.status}, not {self.status}")
        for key, wanted in self.attributes.items():
            actual = row.attributes.get(key, _MISSING)
            if actual is _MISSING:
                found.append(f"no attribute {key}")
            elif not _value_matches(wanted, actual):
                found.append(f"{key}={actual!r}, not {_show(wanted)}")
        return found


def span(
    name: str,
    *children: ExpectedSpan | str,
    kind: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    service: str | None = None,
    status: str | None = None,
) -> ExpectedSpan:
    """An expected span and its expected children.

    Args:
        name: the span's name.
        children: its children, in any order; a string is a child with that name only.
        kind: ``"SERVER"``, ``"CLIENT"``, ``"PRODUCER"``, ``"CONSUMER"`` or ``"INTERNAL"`` (any case, or
            an ``opentelemetry.trace.SpanKind``).
        attributes: attributes the span must have: each value equal, or a callable that returns true for
            the actual value (``lambda ms: ms < 1000``). Other attributes are not looked at.
        service: the ``service.name`` of the process that recorded it.
        status: ``"UNSET"``, ``"OK"`` or ``"ERROR"``.

    Raises:
        ValueError: an unknown kind or status.
    """
    chosen_kind = _normalised(kind, _KINDS, "kind")
    chosen_status = _normalised(status, _STATUSES, "status")
    return ExpectedSpan(
        name=name,
        children=tuple(
            child if isinstance(child, ExpectedSpan) else ExpectedSpan(child) for child in children
        ),
        kind=chosen_kind,
        attributes=dict(attributes or {}),
        service=service,
        status=chosen_status,
    )


def _children(children: Iterable[ExpectedSpan | str]) -> tuple[ExpectedSpan, ...]:
    return tuple(child if isinstance(child, ExpectedSpan) else ExpectedSpan(child) for child in children)


def _normalised(value: Any, allowed: frozenset[str], what: str) -> str | None:
    if value is None:
        return None
    text = str(getattr(value, "name", value)).upper()
    if text not in allowed:
        msg = f"{what} {value!r} is not one of {', '.join(sorted(allowed))}"
        raise ValueError(msg)
    return text


def _value_matches(wanted: Any, actual: Any) -> bool:
    if callable(wanted):
        try:
            return bool(wanted(actual))
        except Exception:
            return False
    if isinstance(wanted, tuple) and isinstance(actual, list):
        return list(wanted) == actual
    return bool(wanted == actual)


def _show(value: Any) -> str:
    if callable(value):
        return getattr(value, "__name__", None) or repr(value)
    return repr(value)


# --- actual spans -----------------------------------------------------------------------------------------


def to_rows(spans: Iterable[SpanLike]) -> list[SpanRow]:
    """The spans as :class:`SpanRow` (what the renderer and the matcher read), by start time.

    Raises:
        TypeError: a span of another type.
    """
    rows = [_row(item) for item in spans]
    return sorted(rows, key=lambda row: (row.start_ns, row.span_id))


def _row(item: SpanLike) -> SpanRow:
    if isinstance(item, SpanRow):
        return item
    if isinstance(item, ReceivedSpan):
        return SpanRow(
            trace_id=item.trace_id,
            span_id=item.span_id,
            parent_span_id=item.parent_span_id,
            name=item.name,
            service=item.service_name,
            kind=item.kind,
            start_ns=item.start_ns,
            end_ns=item.end_ns,
            status=item.status_code,
            status_message=item.status_message,
            attributes=dict(item.attributes),
        )
    if isinstance(item, ReadableSpan):
        context = item.get_span_context()
        resource_name = item.resource.attributes.get("service.name", "")
        return SpanRow(
            trace_id=format_trace_id(context.trace_id if context is not None else 0),
            span_id=format_span_id(context.span_id if context is not None else 0),
            parent_span_id=format_span_id(item.parent.span_id) if item.parent is not None else "",
            name=item.name,
            service=str(resource_name),
            kind=item.kind.name,
            start_ns=item.start_time or 0,
            end_ns=item.end_time or 0,
            status=item.status.status_code.name,
            status_message=item.status.description or "",
            attributes=dict(item.attributes or {}),
        )
    msg = f"expected a ReceivedSpan, a SpanRow or an OpenTelemetry ReadableSpan, got {type(item).__name__}"
    raise TypeError(msg)


def format_trace(spans: Iterable[SpanLike], *, width: int = _TRACE_WIDTH) -> str:
    """The spans as ``tracehook trace`` prints them (one tree per trace), as plain text."""
    from rich.console import Console  # noqa: PLC0415

    rows = to_rows(spans)
    if not rows:
        return "(no spans)"
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False, emoji=False)
    render_tree(rows, console)
    return out.getvalue().rstrip("\n")


def format_expected(expected: ExpectedSpan) -> str:
    """The expected tree, one span a line, drawn as :func:`format_trace` draws a trace."""
    lines = [expected.describe()]

    def walk(node: ExpectedSpan, indent: str) -> None:
        for index, child in enumerate(node.children):
            last = index == len(node.children) - 1
            lines.append(f"{indent}{'└── ' if last else '├── '}{child.describe()}")
            walk(child, indent + ("    " if last else "│   "))

    walk(expected, "")
    return "\n".join(lines)


# --- matching -----------------------------------------------------------------------------------------------


class _Matcher:
    """Matches an expected tree onto the rows of one trace; results are memoised per (expected, row)."""

    def __init__(self, rows: list[SpanRow], *, exact: bool) -> None:
        self.rows = rows
        self.exact = exact
        self.roots, self.children = split_tree(rows)
        self._memo: dict[tuple[int, str], bool] = {}

    def kids(self, row: SpanRow) -> list[SpanRow]:
        return self.children.get(row.span_id, [])

    def matches(self, expected: ExpectedSpan, row: SpanRow) -> bool:
        key = (id(expected), row.span_id)
        if key not in self._memo:
            self._memo[key] = not expected.mismatches(row) and self._pair(expected.children, self.kids(row))
        return self._memo[key]

    def _pair(self, wanted: Sequence[ExpectedSpan], actual: Sequence[SpanRow]) -> bool:
        """Whether each expected child gets an actual child of its own (all of them, when exact)."""
        if len(wanted) > len(actual) or (self.exact and len(wanted) != len(actual)):
            return False
        return len(self._assignment(wanted, actual)) == len(wanted)

    def _assignment(self, wanted: Sequence[ExpectedSpan], actual: Sequence[SpanRow]) -> dict[int, int]:
        """A maximum matching of expected to actual children (Kuhn's augmenting paths): expected index by
        actual index."""
        owner: dict[int, int] = {}

        def place(index: int, tried: set[int]) -> bool:
            for candidate, row in enumerate(actual):
                if candidate in tried or not self.matches(wanted[index], row):
                    continue
                tried.add(candidate)
                if candidate not in owner or place(owner[candidate], tried):
                    owner[candidate] = index
                    return True
            return False

        for index in range(len(wanted)):
            place(index, set())
        return owner

    def explain(self, expected: ExpectedSpan, row: SpanRow, path: str) -> str:
        """Why ``row`` does not match ``expected``: the deepest difference found."""
        here = f"{path} > {row.name!r}" if path else repr(row.name)
        if differences := expected.mismatches(row):
            return f"{here}: {'; '.join(differences)}"
        kids = self.kids(row)
        owner = self._assignment(expected.children, kids)
        placed = set(owner.values())
        for index, child in enumerate(expected.children):
            if index in placed:
                continue
            free = [kid for position, kid in enumerate(kids) if position not in owner]
            same_name = [kid for kid in free if kid.name == child.name] or [
                kid for kid in kids if kid.name == child.name
            ]
            if same_name:
                return self.explain(child, same_name[0], here)
            names = ", ".join(repr(kid.name) for kid in kids) or "none"
            return f"{here}: no child {child.describe()}; its children: {names}"
        extra = [kid for position, kid in enumerate(kids) if position not in owner]
        names = ", ".join(repr(kid.name) for kid in extra)
        return f"{here}: {len(extra)} more child(ren) than expected: {names}"


def match_tree(spans: Iterable[SpanLike], expected: ExpectedSpan, *, exact: bool = True) -> str | None:
    """Compare spans of one trace to an expected tree.

    Args:
        spans: the trace's spans.
        expected: the expected tree (:func:`span`).
        exact: the trace is exactly the expected tree: one root, the expected root, and no span that is
            not expected. With ``False``, the expected tree may sit anywhere in the trace, and spans it
            does not name are ignored (each expected child must still be a direct child of its parent).

    Returns:
        ``None`` when the spans match; otherwise why not, in one line.
    """
    rows = to_rows(spans)
    if not rows:
        return "no spans"
    matcher = _Matcher(rows, exact=exact)
    if exact:
        if len(matcher.roots) != 1:
            names = ", ".join(repr(root.name) for root in matcher.roots)
            return f"{len(matcher.roots)} roots ({names}), not one: a parent span is missing"
        root = matcher.roots[0]
        return None if matcher.matches(expected, root) else matcher.explain(expected, root, "")
    if any(matcher.matches(expected, row) for row in rows):
        return None
    same_name = [row for row in rows if row.name == expected.name]
    if not same_name:
        return f"no span named {expected.name!r}"
    return matcher.explain(expected, same_name[0], "")

"""Assertions on traces received across processes: wait for a trace, compare it to an expected tree.

Every wait polls the receiver with a deadline; nothing sleeps a fixed time. A failure message prints the
trace as ``tracehook trace`` does, so the test log shows what arrived.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeAlias

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_trace_id

from tracing._trace_tree import SpanRow, normalise_id, split_tree
from tracing.scrubbing import card_numbers_in, is_identifier_key
from tracing.testing._receiver import OtlpReceiver, ReceivedSpan
from tracing.testing.tree import ExpectedSpan, SpanLike, format_expected, format_trace, match_tree, to_rows

__all__ = [
    "TraceRef",
    "assert_no_card_numbers",
    "assert_one_root",
    "assert_one_trace",
    "assert_trace",
    "trace_id_of",
    "wait_for_trace",
]

TraceRef: TypeAlias = str | int | Any
"""A trace: its id (32 hex digits, or the integer), or a span of it (an OpenTelemetry span, such as the one
``with trace_span(...) as root`` gives, a :class:`ReceivedSpan` or a :class:`SpanRow`)."""

DEFAULT_TIMEOUT = 30.0
DEFAULT_SETTLE = 0.25


def trace_id_of(trace: TraceRef) -> str:
    """The trace id, as 32 lowercase hex digits.

    Raises:
        ValueError: a string that is not a trace id.
        TypeError: neither an id nor a span.
    """
    if isinstance(trace, bool):
        msg = f"{trace!r} is not a trace"
        raise TypeError(msg)
    if isinstance(trace, int):
        return format_trace_id(trace)
    if isinstance(trace, str):
        return normalise_id(trace, 16)
    if isinstance(trace, ReceivedSpan | SpanRow):
        return trace.trace_id
    context = getattr(trace, "get_span_context", None)
    if callable(context):
        return format_trace_id(context().trace_id)
    msg = f"expected a trace id or a span, got {type(trace).__name__}"
    raise TypeError(msg)


def _problems(rows: list[SpanRow], wanted: int) -> list[str]:
    """Why the trace is not complete yet: too few spans, or spans whose parent has not arrived."""
    problems: list[str] = []
    if len(rows) < wanted:
        problems.append(f"{len(rows)} of at least {wanted} spans")
    roots, _ = split_tree(rows)
    orphans = [row for row in roots if row.parent_span_id]
    if orphans:
        names = ", ".join(repr(row.name) for row in orphans)
        problems.append(f"the parent of {names} not received")
    elif len(roots) > 1:
        problems.append(f"{len(roots)} roots")
    return problems


class _Watch:
    """The state of one wait: the trace's spans, and when their number last changed."""

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.spans: list[ReceivedSpan] = []
        self.changed = time.monotonic()

    def update(self, received: list[ReceivedSpan]) -> float:
        """Take the trace's spans from everything received; return how long they have been unchanged."""
        spans = [item for item in received if item.trace_id == self.trace_id]
        now = time.monotonic()
        if len(spans) != len(self.spans):
            self.spans = sorted(spans, key=lambda item: (item.start_ns, item.span_id))
            self.changed = now
        return now - self.changed


def wait_for_trace(
    receiver: OtlpReceiver,
    trace: TraceRef,
    *,
    spans: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    settle: float = DEFAULT_SETTLE,
) -> list[ReceivedSpan]:
    """Wait until a trace is complete and return its spans, by start time.

    Complete: at least ``spans`` spans, every span's parent received (one root), and no new span of the
    trace for ``settle`` seconds (the worker exports every 100 ms).

    Raises:
        AssertionError: not complete within ``timeout`` seconds; the message shows what arrived.
    """
    watch = _Watch(trace_id_of(trace))

    def complete(received: list[ReceivedSpan]) -> bool:
        quiet = watch.update(received)
        return not _problems(to_rows(watch.spans), spans) and quiet >= settle

    if receiver.wait_until(complete, timeout) is None:
        problems = "; ".join(_problems(to_rows(watch.spans), spans)) or "spans still arriving"
        shown = format_trace(watch.spans)
        raise AssertionError(f"trace {watch.trace_id} not complete after {timeout:g}s ({problems}):\n{shown}")
    return watch.spans


def assert_trace(
    receiver: OtlpReceiver,
    trace: TraceRef,
    expected: ExpectedSpan,
    *,
    exact: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    settle: float = DEFAULT_SETTLE,
) -> list[ReceivedSpan]:
    """Wait for a trace and assert that it is the expected tree; return its spans, by start time.

    With ``exact`` (the default), the trace must be exactly the tree: it passes once the spans match and
    no other span of the trace arrived for ``settle`` seconds, and fails as soon as the trace is complete
    (as many spans as expected, every parent received) and does not match, since spans arriving later
    cannot make it match. With ``exact=False`` the expected tree may sit anywhere in the trace, spans it
    does not name are ignored, and it passes as soon as the tree is there.

    Args:
        receiver: where the processes export their spans.
        trace: the trace (see :data:`TraceRef`).
        expected: the expected tree (:func:`tracing.testing.span`).
        exact: see above.
        timeout: seconds to wait before failing.
        settle: seconds without a new span before an exact match counts.

    Raises:
        AssertionError: the trace is not the expected tree; the message says where it differs, and shows
            the expected tree and the trace as ``tracehook trace`` prints it.
    """
    watch = _Watch(trace_id_of(trace))
    outcome: list[str | None] = [None]

    def decided(received: list[ReceivedSpan]) -> bool:
        quiet = watch.update(received)
        problem = match_tree(watch.spans, expected, exact=exact) if watch.spans else "no span received"
        outcome[0] = problem
        if problem is None:
            return quiet >= settle if exact else True
        return exact and not _problems(to_rows(watch.spans), expected.size)

    finished = receiver.wait_until(decided, timeout) is not None
    problem = outcome[0]
    if problem is None:
        return watch.spans
    if finished:
        headline = f"trace {watch.trace_id} is not the expected tree: {problem}"
    else:
        headline = f"trace {watch.trace_id} did not become the expected tree within {timeout:g}s: {problem}"
    raise AssertionError(
        f"{headline}\n\nexpected{' (exactly)' if exact else ''}:\n{format_expected(expected)}\n\n"
        f"actual, as `tracehook trace` prints it:\n{format_trace(watch.spans)}"
    )


def assert_one_trace(spans: Iterable[SpanLike]) -> str:
    """Assert that every span belongs to one trace; return its id.

    Raises:
        AssertionError: no span, or spans of several traces (the message lists each trace's spans).
    """
    rows = to_rows(spans)
    by_trace: dict[str, list[str]] = {}
    for row in rows:
        by_trace.setdefault(row.trace_id, []).append(row.name)
    if len(by_trace) != 1:
        listing = "\n".join(f"  {trace_id}: {names}" for trace_id, names in by_trace.items())
        raise AssertionError(f"expected the spans of one trace, got {len(by_trace)} traces:\n{listing}")
    return rows[0].trace_id


def assert_one_root(spans: Iterable[SpanLike]) -> SpanRow:
    """Assert that exactly one span has no parent among the spans (one root); return it.

    Raises:
        AssertionError: no root or several (a span whose parent is missing counts as a root); the message
            shows the spans as trees.
    """
    items = list(spans)
    roots, _ = split_tree(to_rows(items))
    if len(roots) != 1:
        names = ", ".join(f"{root.name!r} ({root.service})" for root in roots)
        raise AssertionError(f"expected one root span, got {len(roots)}: {names}\n{format_trace(items)}")
    return roots[0]


def assert_no_card_numbers(spans: Iterable[SpanLike]) -> None:
    """Assert that no span holds a card number: not in its name, status, attributes, events, links or
    resource.

    A card number is what tracehook's scrubbing masks (Luhn-valid, 13-19 digits, written whole or in
    groups); as in scrubbing, identifier attributes (``id``, ``*_id``) are not looked at.

    Raises:
        AssertionError: the message names each span and field holding one, the number masked.
    """
    found = [leak for item in spans for leak in _card_leaks(item)]
    if found:
        raise AssertionError("card numbers in spans:\n" + "\n".join(f"  {leak}" for leak in found))


def _card_leaks(item: SpanLike) -> Iterator[str]:
    where = f"span {item.name!r}"
    fields: list[tuple[str, Any]] = [("name", item.name)]
    if isinstance(item, SpanRow):
        fields += [("status", item.status_message), ("attributes", item.attributes)]
    elif isinstance(item, ReceivedSpan):
        fields += [
            ("status", item.status_message),
            ("attributes", item.attributes),
            ("events", [attributes for _, attributes in item.events]),
            ("event names", [name for name, _ in item.events]),
            ("links", [attributes for _, _, attributes in item.links]),
            ("resource", item.resource),
        ]
    elif isinstance(item, ReadableSpan):
        fields += [
            ("status", item.status.description or ""),
            ("attributes", dict(item.attributes or {})),
            ("events", [dict(event.attributes or {}) for event in item.events]),
            ("event names", [event.name for event in item.events]),
            ("links", [dict(link.attributes or {}) for link in item.links]),
            ("resource", dict(item.resource.attributes)),
        ]
    for field, value in fields:
        yield from _leaks(f"{where} {field}", "", value)


def _leaks(where: str, key: str, value: Any) -> Iterator[str]:
    if key and is_identifier_key(key):
        return
    if isinstance(value, Mapping):
        for inner_key, inner in value.items():
            yield from _leaks(where, f"{key}.{inner_key}" if key else str(inner_key), inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _leaks(where, key, inner)
    else:
        for masked in card_numbers_in(value):
            yield f"{where}{f' {key}' if key else ''}: {masked}"

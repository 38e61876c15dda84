"""The span pipeline: a fork-safe processor, and an exporter wrapper that scrubs and flags slow spans.

Scrubbing happens on the way out, in :class:`ScrubbingSpanExporter`, so it covers attributes set by any
instrumentation (ours, httpx's, Celery's) and, with batch export, runs on the export thread instead of
the request or task that ended the span. Nothing leaves the process unscrubbed. Spans that need no change
are passed on as they are; only a span with something to scrub or flag is copied.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status, format_span_id, format_trace_id

from tracing._guard import capture_internal_errors
from tracing.scrubbing import may_need_scrubbing, scrub_text, scrub_value

__all__ = [
    "SLOW_ATTRIBUTE",
    "CountingBatchSpanProcessor",
    "ExportHealth",
    "ScrubbingSpanExporter",
    "SlowSpanCallback",
    "TracehookSpanProcessor",
    "scrub_span",
]

SLOW_ATTRIBUTE = "slow"
SlowSpanCallback = Callable[[ReadableSpan, float], None]

_log = logging.getLogger("tracing")


def _scrub_attributes(attributes: Any) -> dict[str, Any] | None:
    """A scrubbed copy of the attributes, or None when nothing needed scrubbing."""
    if not attributes or not may_need_scrubbing(attributes):
        return None
    changed: dict[str, Any] | None = None
    for key, value in attributes.items():
        new = scrub_value(key, value)
        if new != value:
            if changed is None:
                changed = dict(attributes)
            changed[key] = new
    return changed


_SLOW_FLAG = {SLOW_ATTRIBUTE: True}


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """The span with its attributes, event and link attributes and status description scrubbed.

    Returns ``span`` itself when nothing needed scrubbing, else a read-only copy.
    """
    return _scrubbed(span, None)


def _attributes_of(span: ReadableSpan) -> Any:
    # The SDK's BoundedAttributes is read key by key through Python calls (about 1.5 us for 13 keys, on
    # the thread ending the span for a user's own processor); the dict inside it reads at C speed.
    # Read defensively: anything else is read through the public, read-only view.
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    return inner if type(inner) is dict else span.attributes


_Item = TypeVar("_Item", Event, Link)


def _scrub_each(
    items: Sequence[_Item], rebuild: Callable[[_Item, dict[str, Any]], _Item]
) -> list[_Item] | None:
    """A copy of ``items`` (events or links) with their attributes scrubbed; None when none needed it."""
    changed: list[_Item] | None = None
    for index, item in enumerate(items):
        scrubbed = _scrub_attributes(item.attributes)
        if scrubbed is not None:
            if changed is None:
                changed = list(items)
            changed[index] = rebuild(item, scrubbed)
    return changed


def _scrubbed(span: ReadableSpan, extra: dict[str, Any] | None) -> ReadableSpan:
    original = _attributes_of(span)
    attributes = _scrub_attributes(original)
    if extra:
        attributes = {**(attributes if attributes is not None else (original or {})), **extra}
    events = span.events
    new_events = _scrub_each(events, lambda event, clean: Event(event.name, clean, event.timestamp))
    links = span.links
    new_links = _scrub_each(links, lambda link, clean: Link(link.context, clean))
    status = span.status
    description = status.description
    if description:
        clean = scrub_text(description)
        if clean != description:
            status = Status(status.status_code, clean)
    if attributes is None and new_events is None and new_links is None and status is span.status:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes if attributes is not None else span.attributes,
        events=new_events if new_events is not None else events,
        links=new_links if new_links is not None else links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def log_slow_span(span: ReadableSpan, duration_ms: float) -> None:
    """Default slow-span callback: one warning log line with the span's trace and span ids."""
    ctx = span.context
    _log.warning(
        "span.slow",
        extra={
            "span_name": span.name,
            "duration_ms": round(duration_ms, 3),
            "trace_id": format_trace_id(ctx.trace_id) if ctx else None,
            "span_id": format_span_id(ctx.span_id) if ctx else None,
        },
    )


class TracehookSpanProcessor(SpanProcessor):
    """Hands finished spans to a delegate (usually batch export), rebuilt in each forked child.

    In a forked child process a fresh delegate is built, so the child never shares the parent's export
    thread, queue or HTTP connections (prefork workers).

    Args:
        delegate_factory: builds the processor that receives the finished spans.
    """

    def __init__(self, delegate_factory: Callable[[], SpanProcessor]) -> None:
        self._factory = delegate_factory
        self._delegate = delegate_factory()
        self._closed = False
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork_in_child)

            def _hook() -> None:
                method = ref()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=_hook)

    @property
    def delegate(self) -> SpanProcessor:
        """The processor finished spans are handed to (rebuilt after a fork)."""
        return self._delegate

    def _after_fork_in_child(self) -> None:
        # The inherited delegate's queue holds the parent's spans (the parent exports them) and its HTTP
        # session may share a socket with the parent: start afresh.
        if self._closed:
            return
        inherited = self._delegate
        try:
            self._delegate = self._factory()
        except Exception:
            _log.exception("tracing: could not rebuild the span pipeline after fork")
            return
        # The SDK's own after-fork hook (registered first, so already run) emptied the inherited batch
        # queue and started a thread for it: stop that thread, it would idle in every child forever.
        with capture_internal_errors(
            _log, "tracing: could not stop the inherited span pipeline", level=logging.DEBUG
        ):
            inherited.shutdown()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Pass the start on to the delegate."""
        self._delegate.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Pass the finished span on to the delegate."""
        self._delegate.on_end(span)

    def shutdown(self) -> None:
        """Shut the delegate down (flushing what it holds); a shut-down processor is not rebuilt by a fork."""
        self._closed = True
        self._delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything the delegate holds, within the timeout."""
        return self._delegate.force_flush(timeout_millis)


class ExportHealth:
    """Whether the exporter is getting through: the last export succeeded and none is stuck.

    Shutdown and flush read it to stop waiting for an endpoint that is down, black-holed or slow, instead
    of holding the process for the exporter's retries and timeouts.

    Args:
        stuck_after_s: an export in flight longer than this counts as stuck.
    """

    def __init__(self, stuck_after_s: float = 1.0) -> None:
        self.stuck_after_s = stuck_after_s
        self._in_flight_since: float | None = None
        self._last_ok = True

    def started(self) -> None:
        """An export began."""
        self._in_flight_since = time.monotonic()

    def finished(self, ok: bool) -> None:
        """An export ended, successfully or not."""
        self._in_flight_since = None
        self._last_ok = ok

    @property
    def ok(self) -> bool:
        """False once an export failed (until one succeeds) or while one is stuck."""
        since = self._in_flight_since
        stuck = since is not None and time.monotonic() - since > self.stuck_after_s
        return self._last_ok and not stuck


class ScrubbingSpanExporter(SpanExporter):
    """Scrubs secrets and personal data and flags slow spans, then hands the batch to ``inner``.

    Args:
        inner: the exporter that sends the spans.
        slow_threshold_ms: spans longer than this get ``slow=true`` and ``on_slow`` is called.
        on_slow: called with the span and its duration in ms; defaults to a warning log line.
        owns_inner: shut ``inner`` down with this exporter; False for an exporter the caller passed in
            and may share (a forked child's pipeline is rebuilt around the same object).
        health: told when each export starts and how it ended.
    """

    def __init__(
        self,
        inner: SpanExporter,
        *,
        slow_threshold_ms: float = 1000.0,
        on_slow: SlowSpanCallback | None = log_slow_span,
        owns_inner: bool = True,
        health: ExportHealth | None = None,
    ) -> None:
        self.inner = inner
        self.health = health if health is not None else ExportHealth()
        self._owns_inner = owns_inner
        self._slow_ns = int(slow_threshold_ms * 1_000_000)
        self._on_slow = on_slow

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Scrub and flag each span, then export; a span that cannot be scrubbed is dropped, not leaked."""
        prepared: list[ReadableSpan] = []
        for span in spans:
            with capture_internal_errors(
                _log, "tracing: could not scrub span %s; dropping it", span.name, level=logging.DEBUG
            ):
                prepared.append(self._prepare(span))
        self.health.started()
        result = SpanExportResult.FAILURE
        try:
            result = self.inner.export(prepared)
        finally:
            self.health.finished(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        """Shut the inner exporter down, if it is ours."""
        if self._owns_inner:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self.inner.force_flush(timeout_millis)

    def _prepare(self, span: ReadableSpan) -> ReadableSpan:
        duration_ns = (span.end_time or 0) - (span.start_time or 0)
        if not (self._slow_ns > 0 and duration_ns > self._slow_ns):
            return scrub_span(span)
        if self._on_slow is not None:
            with capture_internal_errors(_log, "tracing: slow-span callback failed", level=logging.DEBUG):
                self._on_slow(span, duration_ns / 1e6)
        return _scrubbed(span, _SLOW_FLAG)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it drops because its queue is full.

    The SDK logs "Queue full" once and then stays silent; here every drop is counted (``dropped``) and a
    warning with the count since the last one is logged at most every ``report_interval_s`` and at
    shutdown, so a lossy export never goes unnoticed.
    """

    def __init__(self, exporter: SpanExporter, *, report_interval_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self.dropped = 0
        self._reported = 0
        self._report_interval_s = report_interval_s
        self._last_report = time.monotonic()

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the span, counting it as dropped when the queue is full."""
        # The SDK keeps its queue private; read it defensively so a future SDK only loses the count.
        inner = getattr(self, "_batch_processor", None)
        queue = getattr(inner, "_queue", None)
        limit = getattr(inner, "_max_queue_size", None)
        sampled = span.context is not None and span.context.trace_flags.sampled
        if sampled and queue is not None and limit is not None and len(queue) >= limit:
            self.dropped += 1
            if time.monotonic() - self._last_report >= self._report_interval_s:
                self.report_drops()
        super().on_end(span)

    def report_drops(self) -> int:
        """Log the drops since the last report; returns how many that was."""
        new = self.dropped - self._reported
        self._last_report = time.monotonic()
        if new:
            self._reported = self.dropped
            _log.warning(
                "tracing: %d span(s) dropped because the export queue was full (%d in all); "
                "the tracing backend is down or too slow, or OTEL_BSP_MAX_QUEUE_SIZE is too small",
                new,
                self.dropped,
            )
        return new

    def shutdown(self) -> None:
        """Report any drops, then shut down."""
        self.report_drops()
        super().shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

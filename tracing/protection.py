"""Scrubbing for every span processor on a tracer provider, not only tracehook's own.

:func:`protect_provider` makes each processor on an SDK ``TracerProvider`` see scrubbed spans, whether it
was added before the call or after it (``provider.add_span_processor``), by tracehook, the user or another
library:

* the SDK's ``BatchSpanProcessor`` and ``SimpleSpanProcessor`` (and subclasses that keep their ``on_end``)
  get their exporter wrapped, so spans are scrubbed in ``export``: for a batch processor on its export
  thread, which costs the task or request that ended the span nothing;
* tracehook's :class:`~tracing.processors.TracehookSpanProcessor` already scrubs, and alone flags slow
  spans (``slow=true`` and the ``span.slow`` log line): it is left as it is;
* any other processor that implements ``on_end`` gets a scrubbed copy there, made once per span and shared
  by all such processors (the span itself when nothing needs scrubbing). That check runs on the thread
  that ends the span, as the processor itself does.

What is not covered: ``on_start`` (and the SDK's ``_on_ending``) receive the live span, with the attributes
given at its start. It has to stay the live span, since setting attributes is what processors do there; so
the only cover would be scrubbing the span's own attributes in place at every start, on the task path, for
every span, clean or not, and changing what the user's code reads back. That is not done.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from tracing._guard import capture_internal_errors
from tracing.processors import (
    CountingBatchSpanProcessor,
    ScrubbingSpanExporter,
    TracehookSpanProcessor,
    scrub_span,
)

__all__ = ["protect_provider"]

_log = logging.getLogger("tracing")
_GUARD = "_tracehook_scrub_guard"

# The SDK processors whose on_end hands the span to their exporter untouched (CountingBatchSpanProcessor
# only reads its context): for those, scrubbing in the exporter is enough. A subclass that overrides
# on_end may read the span first, so it takes the general path.
_EXPORTING_ON_END = frozenset(
    {BatchSpanProcessor.on_end, SimpleSpanProcessor.on_end, CountingBatchSpanProcessor.on_end}
)


def protect_provider(provider: object) -> None:
    """Make every span processor on ``provider``, present and future, see only scrubbed spans.

    Idempotent; tracers already obtained from the provider keep working (its processor list is changed in
    place). Spans that ended before the call are not reached, except those still queued for a batch
    export. A provider that is not the SDK's (the API's proxy or no-op one) holds no processor and is left
    alone.

    Args:
        provider: the tracer provider, usually an ``opentelemetry.sdk.trace.TracerProvider``.
    """
    if not isinstance(provider, TracerProvider):
        return
    multi = getattr(provider, "_active_span_processor", None)
    if multi is None:
        _log.error(
            "tracing: cannot reach the span processors of this tracer provider (an unknown SDK version?): "
            "processors added to it are not protected by scrubbing"
        )
        return
    if getattr(multi, _GUARD, None) is not None:
        return
    guard = _Guard()
    processors = getattr(multi, "_span_processors", None)
    lock = getattr(multi, "_lock", None)
    original_add = getattr(multi, "add_span_processor", None)
    if not isinstance(processors, tuple) or lock is None or not callable(original_add):
        _scrub_all_on_end(multi, guard)
        return

    def add_span_processor(span_processor: SpanProcessor) -> None:
        original_add(guard.protect(span_processor))

    try:
        # First catch what is added from now on, then rewrite what is there (under the lock the SDK's
        # add takes), so a processor added meanwhile is caught by one or the other.
        setattr(multi, "add_span_processor", add_span_processor)  # noqa: B010  # mypy forbids assigning a method
        setattr(multi, _GUARD, guard)
        with lock:
            multi._span_processors = tuple(guard.protect(p) for p in multi._span_processors)
    except Exception:
        _log.debug("tracing: cannot rewrite the span processor list", exc_info=True)
        _scrub_all_on_end(multi, guard)


def _scrub_all_on_end(multi: Any, guard: _Guard) -> None:
    """The fallback for a processor list we cannot read: every processor behind it gets scrubbed spans.

    It costs a scrubbing check per span on the thread ending it (and tracehook's own pipeline scrubs twice,
    harmlessly), but leaks nothing.
    """
    original_on_end = getattr(multi, "on_end", None)
    if not callable(original_on_end):
        _log.error("tracing: cannot protect this tracer provider's span processors with scrubbing")
        return

    def on_end(span: ReadableSpan) -> None:
        clean = guard.scrubbed(span)
        if clean is not None:
            original_on_end(clean)

    with capture_internal_errors(
        _log,
        "tracing: cannot protect this tracer provider's span processors with scrubbing",
        level=logging.ERROR,
    ):
        setattr(multi, "on_end", on_end)  # noqa: B010  # mypy forbids assigning a method
        setattr(multi, _GUARD, guard)


class _Guard:
    """One per provider: decides how each processor is protected, and shares the scrubbed copy of a span."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[ReadableSpan, ReadableSpan] | None = None

    def protect(self, processor: SpanProcessor) -> SpanProcessor:
        """The processor to put in the list in place of ``processor``."""
        if isinstance(processor, TracehookSpanProcessor | _ScrubbedOnEnd):
            return processor
        if getattr(type(processor), "on_end", None) is SpanProcessor.on_end:
            return processor  # never sees an ended span
        with capture_internal_errors(
            _log, "tracing: cannot wrap the exporter of %r", processor, level=logging.DEBUG
        ):
            if _scrub_in_exporter(processor):
                return processor
        return _ScrubbedOnEnd(processor, self)

    def scrubbed(self, span: ReadableSpan) -> ReadableSpan | None:
        """The scrubbed span (``span`` itself when clean), made once however many processors ask; None
        when it cannot be scrubbed, and must then be dropped."""
        # Processors are called one after another with the same span object: remembering the last one is
        # enough, and keeps one span alive at most. Threads racing here only scrub twice.
        last = self._last
        if last is not None and last[0] is span:
            return last[1]
        try:
            clean = scrub_span(span)
        except Exception:
            _log.debug("tracing: could not scrub span %s; dropping it", span.name, exc_info=True)
            return None
        self._last = (span, clean)
        return clean


def _scrub_in_exporter(processor: SpanProcessor) -> bool:
    """Wrap the exporter of an SDK batch or simple processor; False when its layout is not the known one."""
    if getattr(type(processor), "on_end", None) not in _EXPORTING_ON_END:
        return False
    holder: object
    if isinstance(processor, BatchSpanProcessor):
        holder, name = getattr(processor, "_batch_processor", None), "_exporter"
    elif isinstance(processor, SimpleSpanProcessor):
        holder, name = processor, "span_exporter"
    else:
        return False
    exporter = getattr(holder, name, None)
    if exporter is None or not callable(getattr(exporter, "export", None)):
        return False
    if isinstance(exporter, ScrubbingSpanExporter):
        return True
    wrapped = _UserExporterScrubber(exporter)
    setattr(holder, name, wrapped)
    return getattr(holder, name, None) is wrapped


class _UserExporterScrubber(ScrubbingSpanExporter):
    """Scrubs for an exporter that is not tracehook's: no ``slow`` flag, no ``span.slow`` line (those are
    tracehook's pipeline's, with its own threshold); otherwise it looks like the exporter it wraps."""

    def __init__(self, inner: SpanExporter) -> None:
        super().__init__(inner, slow_threshold_ms=0, on_slow=None, owns_inner=True)
        try:
            self._shutdown_takes_timeout = "timeout_millis" in inspect.getfullargspec(inner.shutdown).args
        except TypeError:
            self._shutdown_takes_timeout = False

    def shutdown(self, timeout_millis: float | None = None) -> None:
        """Shut the wrapped exporter down, passing the time left on when it takes it (as the SDK does)."""
        if timeout_millis is not None and self._shutdown_takes_timeout:
            self.inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]  # checked above
        else:
            self.inner.shutdown()

    def __getattr__(self, name: str) -> Any:
        # Code that reads ``processor.span_exporter.get_finished_spans()`` (or any attribute of the user's
        # own exporter) keeps working.
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


class _ScrubbedOnEnd(SpanProcessor):
    """Gives a processor of unknown make the scrubbed span in ``on_end``; everything else passes through."""

    def __init__(self, inner: SpanProcessor, guard: _Guard) -> None:
        self.inner = inner
        self._guard = guard
        on_ending: Callable[[Span], None] | None = getattr(inner, "_on_ending", None)
        self._on_ending_inner = on_ending

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Pass the start on (the live span: see the module's docstring)."""
        self.inner.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        if self._on_ending_inner is not None:
            self._on_ending_inner(span)

    def on_end(self, span: ReadableSpan) -> None:
        """Pass the scrubbed span on; a span that cannot be scrubbed is dropped, not leaked."""
        clean = self._guard.scrubbed(span)
        if clean is not None:
            self.inner.on_end(clean)

    def shutdown(self) -> None:
        """Shut the processor down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the processor."""
        return self.inner.force_flush(timeout_millis)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

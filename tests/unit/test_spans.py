"""trace_span, traced, record_error, slow-span flagging and profiling."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import CapturedLogs, by_name
from tracing import TracingSettings, configure_tracing, record_error, span_ids, trace_span, traced


class TestTraceSpan:
    """The context manager starts a current span and ends it; errors are recorded and re-raised."""

    def test_nesting_kind_and_attributes(self, span_exporter: InMemorySpanExporter) -> None:
        """A span inside another is its child; kind and attributes are kept."""
        with trace_span("parent", kind=SpanKind.SERVER, attributes={"a": 1}) as parent:
            assert trace.get_current_span() is parent
            with trace_span("child"):
                pass
        spans = span_exporter.get_finished_spans()
        parent_span, child = by_name(spans, "parent"), by_name(spans, "child")
        assert child.parent is not None
        assert parent_span.context.span_id == child.parent.span_id
        assert parent_span.kind == SpanKind.SERVER
        assert dict(parent_span.attributes or {}) == {"a": 1}
        assert trace.get_current_span() is trace.INVALID_SPAN

    def test_exception_recorded_and_reraised(self, span_exporter: InMemorySpanExporter) -> None:
        """An exception leaving the block sets ERROR, adds an exception event, and propagates."""
        with pytest.raises(KeyError), trace_span("failing"):
            raise KeyError("missing")
        (span,) = span_exporter.get_finished_spans()
        assert span.status.status_code == StatusCode.ERROR
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "KeyError"
        assert "Traceback" in str(event.attributes["exception.stacktrace"])

    def test_explicit_parent_context(self, span_exporter: InMemorySpanExporter) -> None:
        """A context passed in is the parent, whatever is current."""
        with trace_span("remote") as remote:
            ctx = trace.set_span_in_context(remote)
        with trace_span("other"), trace_span("child", context=ctx):
            pass
        spans = span_exporter.get_finished_spans()
        child = by_name(spans, "child")
        assert child.parent is not None
        assert by_name(spans, "remote").context.span_id == child.parent.span_id

    def test_start_time(self, span_exporter: InMemorySpanExporter) -> None:
        """A start time given (ns since the epoch) is the span's start; its end is still when it ends."""
        started = time.time_ns() - 250_000_000
        with trace_span("backdated", start_time=started):
            pass
        (span,) = span_exporter.get_finished_spans()
        assert started == span.start_time
        assert span.end_time is not None
        assert span.end_time - started >= 250_000_000


class TestTraced:
    """The decorator gives each call a span, for sync and async functions."""

    def test_sync_default_name_is_qualified(self, span_exporter: InMemorySpanExporter) -> None:
        """Without a name the span is named by the function's qualified name."""

        class Service:
            @traced
            def run(self, x: int) -> int:
                return x * 2

        assert Service().run(4) == 8
        (span,) = span_exporter.get_finished_spans()
        assert span.name.endswith("Service.run")

    async def test_async_with_static_and_dynamic_attributes(
        self, span_exporter: InMemorySpanExporter
    ) -> None:
        """Static attributes are on every call; dynamic ones come from the call's arguments."""

        @traced(
            "lease.renew",
            attributes={"component": "leases"},
            dynamic_attributes=lambda lease_id, **_: {"lease.id": lease_id},
        )
        async def renew(lease_id: str, *, months: int = 12) -> str:
            await asyncio.sleep(0)
            return f"{lease_id}:{months}"

        assert await renew("lease_1", months=6) == "lease_1:6"
        (span,) = span_exporter.get_finished_spans()
        assert span.name == "lease.renew"
        assert dict(span.attributes or {}) == {"component": "leases", "lease.id": "lease_1"}

    async def test_async_error(self, span_exporter: InMemorySpanExporter) -> None:
        """An exception from an async function is recorded on its span."""

        @traced()
        async def boom() -> None:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            await boom()
        (span,) = span_exporter.get_finished_spans()
        assert span.status.status_code == StatusCode.ERROR

    def test_profile_event(self, span_exporter: InMemorySpanExporter) -> None:
        """profile=True attaches cProfile's top functions as a ``profile`` event."""

        def inner() -> int:
            return sum(range(1000))

        @traced("profiled", profile=True)
        def work() -> int:
            return inner() + inner()

        work()
        (span,) = span_exporter.get_finished_spans()
        (event,) = [e for e in span.events if e.name == "profile"]
        assert event.attributes is not None
        assert "function calls" in str(event.attributes["profile.stats"])
        top = list(event.attributes["profile.top_functions"])  # type: ignore[arg-type]
        assert 1 <= len(top) <= 10
        assert any("inner" in entry for entry in top)


class TestRecordError:
    """record_error marks a span failed with the exception and its context."""

    def test_context_attributes_flattened(self, span_exporter: InMemorySpanExporter) -> None:
        """Nested context becomes dotted attributes on the span and the exception event."""
        with trace_span("op") as span:
            try:
                raise ValueError("bad input")
            except ValueError as exc:
                record_error(span, exc, {"error.handled": True, "error.context": {"operation_id": "op_1"}})
        (exported,) = span_exporter.get_finished_spans()
        attributes = dict(exported.attributes or {})
        assert attributes["error.context.operation_id"] == "op_1"
        assert attributes["error.handled"] is True
        assert attributes["error.type"] == "ValueError"
        assert exported.status.status_code == StatusCode.ERROR
        assert exported.status.description == "ValueError: bad input"
        (event,) = exported.events
        assert event.attributes is not None
        assert event.attributes["error.context.operation_id"] == "op_1"


class TestSlowSpans:
    """Spans longer than TRACE_SLOW_THRESHOLD_MS get slow=true and a warning log with the trace id."""

    def test_slow_span_flagged_and_logged(self, captured_logs: CapturedLogs) -> None:
        """Only the span over the threshold is flagged, and its warning carries its trace id."""
        exporter = InMemorySpanExporter()
        configure_tracing(
            TracingSettings(service_name="t", exporter="none", slow_threshold_ms=20),
            exporter=exporter,
            batch=False,
        )
        with trace_span("fast"):
            pass
        with trace_span("slow-one") as span:
            time.sleep(0.03)  # the work being measured, not a wait for a result
            trace_id = format(span.get_span_context().trace_id, "032x")
        spans = exporter.get_finished_spans()
        assert by_name(spans, "slow-one").attributes["slow"] is True  # type: ignore[index]
        assert "slow" not in (by_name(spans, "fast").attributes or {})
        warnings = [line for line in captured_logs.lines if line["event"] == "span.slow"]
        assert len(warnings) == 1
        assert ("warning", trace_id, "slow-one") == (
            warnings[0]["level"],
            warnings[0]["trace_id"],
            warnings[0]["span_name"],
        )
        assert warnings[0]["duration_ms"] >= 20


class TestSpanIds:
    """span_ids gives a span context's ids as log lines carry them, and nothing for an invalid one."""

    def test_valid_context_as_hex(self) -> None:
        """32 and 16 lower-case hex digits, zero-padded."""
        context = trace.SpanContext(trace_id=0xAB, span_id=0xC, is_remote=False)
        assert {"trace_id": "0" * 30 + "ab", "span_id": "0" * 15 + "c"} == span_ids(context)

    def test_invalid_context_gives_nothing(self) -> None:
        """No span (the invalid context) gives an empty dict, never zeros."""
        assert {} == span_ids(trace.INVALID_SPAN.get_span_context())

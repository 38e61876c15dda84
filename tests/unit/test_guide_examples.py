"""The guide's code examples (docs/guide.md), run as they are written with only their imports changed.

The guide imports ``distributed_tracing`` and ``trace_middleware``; here those names come from
:mod:`tracing` (docs/guide.md), and ``trace`` is ``opentelemetry.trace``. The guide's code
is copied as it stands; the helpers it leaves undefined (``get_lease``, ``validate``, ``process``,
``risky_operation``, ``process_single_work_order``, ...) are small local functions below. Each test
checks the spans the example produces.
"""

from __future__ import annotations

import random
import re
from types import SimpleNamespace
from typing import Any, Dict, List  # noqa: UP035  # the guide's own annotations

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import StatusCode

import tracing
from tests.conftest import by_name
from tracing import (
    Decision,
    Sampler,
    SamplingResult,
    TracingSettings,
    get_tracer,
    trace_async_operation,
)

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")

# tracing.Sampler makes the guide's sampler instantiable but keeps its signature as written: the guide
# names the first parameter ``context``, and the SDK's ParentBased calls its root sampler with
# ``parent_context=...`` as a keyword, so every span start raises TypeError.


def children_of(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is ``parent``, in the order they ended."""
    return [
        span for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


# --- The guide's undefined helpers, as small local functions -------------------------------------------


class SpecificError(Exception):
    """The error the guide's error-handling example catches."""


async def get_lease(lease_id: str) -> SimpleNamespace:
    """A lease record; unknown ids raise ``KeyError``."""
    if lease_id == "missing":
        raise KeyError(lease_id)
    return SimpleNamespace(id=lease_id, status="active")


renewal_result = {"renewed": True}


def validate(data: dict[str, Any]) -> SimpleNamespace:
    """Valid when the data has items."""
    return SimpleNamespace(is_valid=bool(data.get("items")))


async def process(data: dict[str, Any]) -> list[Any]:
    """Double each item; an item ``"bad"`` raises ``ValueError``."""
    if "bad" in data["items"]:
        raise ValueError("bad item")
    return [item * 2 for item in data["items"]]


async def risky_operation() -> str:
    """Always fails with the error the guide expects."""
    raise SpecificError("upstream timed out")


async def process_single_work_order(work_order: dict[str, Any]) -> str:
    """Process one work order; one without a property fails."""
    if "property_id" not in work_order:
        raise ValueError(f"work order {work_order['id']} has no property")
    return f"done:{work_order['id']}"


def process_single_work_order_sync(work_order: dict[str, Any]) -> str:
    """The same, as a plain function."""
    if "property_id" not in work_order:
        raise ValueError(f"work order {work_order['id']} has no property")
    return f"done:{work_order['id']}"


# --- The guide, "Adding Traces to Your Code" > "Basic Function Tracing" (verbatim) -------------------------


@trace_async_operation(name="process_lease_renewal")
async def process_lease_renewal(lease_id: str):
    tracer = get_tracer()  # noqa: F841  # the guide's line, unused there too

    # Get current span to add attributes
    span = trace.get_current_span()
    span.set_attribute("lease.id", lease_id)

    # Your business logic here
    lease = await get_lease(lease_id)
    span.set_attribute("lease.status", lease.status)

    return renewal_result


# --- The guide, "Adding Traces to Your Code" > "Manual Span Creation" (verbatim) ---------------------------


async def complex_operation(data: Dict):  # noqa: UP006  # the guide's annotation
    tracer = get_tracer()

    # Parent span
    with tracer.trace_span("complex_operation") as parent_span:  # noqa: F841  # the guide's name
        # Child span 1
        with tracer.trace_span("validate_data") as span:
            validation_result = validate(data)
            span.set_attribute("validation.passed", validation_result.is_valid)

        # Child span 2
        with tracer.trace_span("process_data") as span:
            result = await process(data)
            span.set_attribute("processing.items_count", len(result))

        return result


# --- The guide, "Adding Traces to Your Code" > "Tracing Batch Operations" (verbatim) -----------------------


async def process_work_orders(work_orders: List[Dict]):  # noqa: UP006  # the guide's annotation
    tracer = get_tracer()

    results, errors = await tracer.trace_batch_operation(
        operation_name="process_work_order",
        items=work_orders,
        process_func=process_single_work_order,
        batch_size=10,
        attributes={"batch.type": "work_orders"},
    )

    return {"processed": len(results), "failed": len(errors)}


# --- The guide, "Adding Traces to Your Code" > "Adding Events to Spans" (verbatim) -------------------------


async def long_running_operation():
    span = trace.get_current_span()

    # Add event at start
    span.add_event("operation_started", {"phase": "initialization"})

    # ... do some work ...

    # Add event for important milestone
    span.add_event("checkpoint_reached", {"progress": 0.5, "items_processed": 100})

    # ... complete work ...

    span.add_event("operation_completed", {"total_items": 200})


# --- The guide, "Best Practices" > "4. Error Handling", inside a span as the guide assumes ----------------


async def guarded_operation(op_id: str) -> None:
    """The guide's snippet needs ``tracer``, ``span`` and ``op_id`` in scope; this gives it them."""
    tracer = get_tracer()
    with tracer.trace_span("guarded_operation") as span:
        # The guide's code, verbatim:
        try:
            result = await risky_operation()  # noqa: F841  # the guide's line
        except SpecificError as e:
            tracer.record_error(
                span,
                e,
                {
                    "error.handled": True,
                    "error.recovery_action": "retry",
                    "error.context": {"operation_id": op_id},
                },
            )
            # Handle error...


# --- The guide, "Advanced Features" > "1. Custom Samplers" (verbatim; the "..." filled in) ----------------


class OperationBasedSampler(Sampler):
    def should_sample(
        self, context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None
    ):
        # Always sample payment operations
        if "payment" in name:
            return SamplingResult(Decision.RECORD_AND_SAMPLE)

        # Sample 1% of health checks
        if "health" in name:
            return SamplingResult(Decision.RECORD_AND_SAMPLE if random.random() < 0.01 else Decision.DROP)

        # Default sampling
        return SamplingResult(Decision.RECORD_AND_SAMPLE)


# --- Tests ------------------------------------------------------------------------------------------------


class TestBasicFunctionTracing:
    """``@trace_async_operation`` gives each call a span that the function's code can reach and annotate."""

    async def test_span_carries_the_attributes_set_inside(self, span_exporter: InMemorySpanExporter) -> None:
        """One root span ``process_lease_renewal`` with ``lease.id`` and ``lease.status``; result returned."""
        result = await process_lease_renewal("L-42")

        spans = span_exporter.get_finished_spans()
        assert renewal_result == result
        assert ["process_lease_renewal"] == [span.name for span in spans]
        span = spans[0]
        assert span.parent is None
        assert "L-42" == span.attributes["lease.id"]
        assert "active" == span.attributes["lease.status"]
        assert StatusCode.UNSET == span.status.status_code

    async def test_exception_is_recorded_and_reraised(self, span_exporter: InMemorySpanExporter) -> None:
        """A failure inside the decorated function marks the span ERROR with an ``exception`` event."""
        with pytest.raises(KeyError):
            await process_lease_renewal("missing")

        span = by_name(span_exporter.get_finished_spans(), "process_lease_renewal")
        assert "missing" == span.attributes["lease.id"]
        assert "lease.status" not in span.attributes
        assert StatusCode.ERROR == span.status.status_code
        assert ["exception"] == [event.name for event in span.events]
        assert "KeyError" == span.events[0].attributes["exception.type"]
        assert "get_lease" in span.events[0].attributes["exception.stacktrace"]


class TestManualSpanCreation:
    """Nested ``tracer.trace_span`` blocks make a parent span with one child per block, in one trace."""

    async def test_parent_with_two_children(self, span_exporter: InMemorySpanExporter) -> None:
        """``validate_data`` and ``process_data`` are children of ``complex_operation`` with their attributes."""
        result = await complex_operation({"items": [1, 2, 3]})

        spans = span_exporter.get_finished_spans()
        assert [2, 4, 6] == result
        assert ["validate_data", "process_data", "complex_operation"] == [span.name for span in spans]
        parent = by_name(spans, "complex_operation")
        validate_span = by_name(spans, "validate_data")
        process_span = by_name(spans, "process_data")
        assert parent.parent is None
        assert [validate_span, process_span] == children_of(spans, parent)
        assert {parent.context.trace_id} == {span.context.trace_id for span in spans}
        assert True is validate_span.attributes["validation.passed"]
        assert 3 == process_span.attributes["processing.items_count"]
        assert {StatusCode.UNSET} == {span.status.status_code for span in spans}

    async def test_failure_marks_the_child_and_the_parent(self, span_exporter: InMemorySpanExporter) -> None:
        """An exception in ``process_data`` leaves both it and ``complex_operation`` with ERROR status."""
        with pytest.raises(ValueError, match="bad item"):
            await complex_operation({"items": [1, "bad"]})

        spans = span_exporter.get_finished_spans()
        parent = by_name(spans, "complex_operation")
        process_span = by_name(spans, "process_data")
        assert StatusCode.UNSET == by_name(spans, "validate_data").status.status_code
        assert StatusCode.ERROR == process_span.status.status_code
        assert StatusCode.ERROR == parent.status.status_code
        assert "processing.items_count" not in process_span.attributes
        assert ["exception"] == [event.name for event in process_span.events]
        assert "ValueError" == process_span.events[0].attributes["exception.type"]


class TestTracingBatchOperations:
    """``trace_batch_operation`` returns (results, errors) under one batch span with a child per chunk."""

    @pytest.mark.parametrize("process_func", [process_single_work_order, process_single_work_order_sync])
    async def test_batch_span_chunks_and_failed_item(
        self, span_exporter: InMemorySpanExporter, process_func: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """12 work orders, one bad: 11 processed, 1 failed; 2 chunk spans; the failure is an event with its index."""
        # The guide's function names its processing function; run it with an async and a sync one.
        monkeypatch.setitem(globals(), "process_single_work_order", process_func)
        work_orders = [{"id": f"wo-{i}", "property_id": f"p-{i}"} for i in range(12)]
        del work_orders[7]["property_id"]

        outcome = await process_work_orders(work_orders)

        spans = span_exporter.get_finished_spans()
        assert {"processed": 11, "failed": 1} == outcome
        batch = by_name(spans, "batch.process_work_order")
        chunks = children_of(spans, batch)
        assert batch.parent is None
        assert ["batch.process_work_order.chunk"] * 2 == [span.name for span in chunks]
        assert len(spans) == 3
        assert "work_orders" == batch.attributes["batch.type"]
        assert 12 == batch.attributes["batch.items_total"]
        assert 10 == batch.attributes["batch.size"]
        assert 1 == batch.attributes["batch.items_failed"]
        assert StatusCode.ERROR == batch.status.status_code
        assert [10, 2] == [chunk.attributes["batch.chunk_size"] for chunk in chunks]
        assert [1, 0] == [chunk.attributes["batch.chunk_failed"] for chunk in chunks]
        assert ["exception"] == [event.name for event in chunks[0].events]
        assert [] == list(chunks[1].events)
        event = chunks[0].events[0]
        assert 7 == event.attributes["batch.item_index"]
        assert "ValueError" == event.attributes["exception.type"]
        assert "work order wo-7 has no property" == event.attributes["exception.message"]

    async def test_all_good_batch_is_not_an_error(self, span_exporter: InMemorySpanExporter) -> None:
        """Without failures the batch span has ``batch.items_failed`` 0 and no ERROR status."""
        outcome = await process_work_orders([{"id": "wo-1", "property_id": "p-1"}])

        batch = by_name(span_exporter.get_finished_spans(), "batch.process_work_order")
        assert {"processed": 1, "failed": 0} == outcome
        assert 0 == batch.attributes["batch.items_failed"]
        assert StatusCode.UNSET == batch.status.status_code


class TestAddingEventsToSpans:
    """Events added through ``trace.get_current_span()`` land, in order, on the span that is current."""

    async def test_three_events_in_order(self, span_exporter: InMemorySpanExporter) -> None:
        """``operation_started``, ``checkpoint_reached`` and ``operation_completed`` with their attributes."""
        with get_tracer().trace_span("long_running"):
            await long_running_operation()

        span = by_name(span_exporter.get_finished_spans(), "long_running")
        assert [
            ("operation_started", {"phase": "initialization"}),
            ("checkpoint_reached", {"progress": 0.5, "items_processed": 100}),
            ("operation_completed", {"total_items": 200}),
        ] == [(event.name, dict(event.attributes)) for event in span.events]

    async def test_events_go_to_the_innermost_span(self, span_exporter: InMemorySpanExporter) -> None:
        """Run inside a child span, the events are the child's, not the parent's."""
        tracer = get_tracer()
        with tracer.trace_span("outer"), tracer.trace_span("inner"):
            await long_running_operation()

        spans = span_exporter.get_finished_spans()
        assert [] == list(by_name(spans, "outer").events)
        assert 3 == len(by_name(spans, "inner").events)


class TestErrorHandling:
    """``tracer.record_error`` records a handled exception with its context, flattened, and ERROR status."""

    async def test_record_error_with_nested_context(self, span_exporter: InMemorySpanExporter) -> None:
        """Attributes flattened to ``error.context.operation_id``; an ``exception`` event with the stack."""
        await guarded_operation("op-123")

        span = by_name(span_exporter.get_finished_spans(), "guarded_operation")
        assert StatusCode.ERROR == span.status.status_code
        assert "SpecificError: upstream timed out" == span.status.description
        assert "op-123" == span.attributes["error.context.operation_id"]
        assert "error.context" not in span.attributes
        assert True is span.attributes["error.handled"]
        assert "retry" == span.attributes["error.recovery_action"]
        assert "SpecificError" == span.attributes["error.type"]
        assert ["exception"] == [event.name for event in span.events]
        event = span.events[0].attributes
        assert f"{__name__}.SpecificError" == event["exception.type"]
        assert "upstream timed out" == event["exception.message"]
        assert "op-123" == event["error.context.operation_id"]
        stacktrace = event["exception.stacktrace"]
        assert stacktrace.startswith("Traceback (most recent call last):")
        assert "in risky_operation" in stacktrace
        assert "SpecificError: upstream timed out" in stacktrace


class TestTraceCorrelationWithLogs:
    """The guide's structlog set-up puts the current span's ``trace_id`` and ``span_id`` on every line."""

    @staticmethod
    def configure_as_the_guide_does() -> Any:
        # The guide's code, verbatim:
        structlog.configure(
            processors=[
                structlog.stdlib.add_log_level,
                lambda _, __, event_dict: {
                    **event_dict,
                    **get_tracer().correlate_with_logs(trace.get_current_span()),
                },
            ]
        )
        # The guide's last processor returns a dict: the logger must take keyword arguments.
        structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
        return structlog.get_logger()

    def test_log_line_carries_the_span_ids(self, span_exporter: InMemorySpanExporter) -> None:
        """Inside a span: ``trace_id`` (32 hex) and ``span_id`` (16 hex) equal the span's own ids."""
        logger = self.configure_as_the_guide_does()
        wo_id = "wo-9"

        with get_tracer().trace_span("work_order.process"):
            # The guide's line, with its return value kept (ReturnLogger hands the line back):
            args, line = logger.info("Processing work order", work_order_id=wo_id)

        span = by_name(span_exporter.get_finished_spans(), "work_order.process")
        assert () == args
        assert HEX32.fullmatch(line["trace_id"])
        assert HEX16.fullmatch(line["span_id"])
        assert format(span.context.trace_id, "032x") == line["trace_id"]
        assert format(span.context.span_id, "016x") == line["span_id"]
        assert "Processing work order" == line["event"]
        assert "wo-9" == line["work_order_id"]
        assert "info" == line["level"]

    def test_child_span_ids_in_a_nested_line(self, span_exporter: InMemorySpanExporter) -> None:
        """In a child span, the line names the child: same trace id as the parent, the child's span id."""
        logger = self.configure_as_the_guide_does()
        tracer = get_tracer()

        with tracer.trace_span("parent"), tracer.trace_span("child"):
            _, line = logger.info("Processing work order", work_order_id="wo-1")

        spans = span_exporter.get_finished_spans()
        child = by_name(spans, "child")
        assert format(by_name(spans, "parent").context.trace_id, "032x") == line["trace_id"]
        assert format(child.context.span_id, "016x") == line["span_id"]

    def test_no_ids_outside_a_span(self, span_exporter: InMemorySpanExporter) -> None:
        """Outside any span the line has no ``trace_id``/``span_id`` (rather than zeros)."""
        logger = self.configure_as_the_guide_does()

        _, line = logger.info("Processing work order", work_order_id="wo-2")

        assert {"event": "Processing work order", "work_order_id": "wo-2", "level": "info"} == line
        assert () == span_exporter.get_finished_spans()


def configure_with_sampler(sampler: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    """Tracing set up with ``sampler`` at the root (parent-based) and a synchronous in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = tracing.configure_tracing(
        TracingSettings(service_name="t", exporter="none"),
        exporter=exporter,
        sampler=ParentBased(root=sampler),
        batch=False,
    )
    return provider, exporter


def run_roots(names: list[str]) -> list[bool]:
    """Start and end one root span (with a child) per name; whether each root was sampled."""
    tracer = get_tracer()
    sampled = []
    for name in names:
        with tracer.trace_span(name) as span, tracer.trace_span(f"{name}.child"):
            sampled.append(span.get_span_context().trace_flags.sampled)
    return sampled


class TestGuideCustomSampler:
    """The guide's sampler keeps payments always, health checks at 1% (``random.random``), the rest always."""

    def test_it_can_be_instantiated(self) -> None:
        """``tracing.Sampler`` supplies ``get_description``, so the guide's class is not abstract."""
        assert "OperationBasedSampler" == OperationBasedSampler().get_description()

    def test_payments_always_sampled(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Payment roots are kept whatever ``random.random`` says, and never consult it."""
        calls: list[float] = []

        def never_below_one_percent() -> float:
            calls.append(0.99)
            return 0.99

        monkeypatch.setattr(random, "random", never_below_one_percent)
        _, exporter = configure_with_sampler(OperationBasedSampler())

        sampled = run_roots(["payment.received", "webhook.payment.failed"] * 25)

        assert [True] * 50 == sampled
        assert 100 == len(exporter.get_finished_spans())
        assert [] == calls

    @pytest.mark.parametrize(("draw", "kept"), [(0.005, True), (0.0099, True), (0.01, False), (0.5, False)])
    def test_health_checks_sampled_at_one_percent(
        self, monkeypatch: pytest.MonkeyPatch, draw: float, kept: bool
    ) -> None:
        """A health root is kept when ``random.random() < 0.01``, else dropped with its children."""
        calls: list[float] = []

        def fixed_draw() -> float:
            calls.append(draw)
            return draw

        monkeypatch.setattr(random, "random", fixed_draw)
        _, exporter = configure_with_sampler(OperationBasedSampler())

        sampled = run_roots(["health_check"])

        names = sorted(span.name for span in exporter.get_finished_spans())
        assert [kept] == sampled
        assert (["health_check", "health_check.child"] if kept else []) == names
        assert [draw] == calls  # one draw for the root; the child follows its parent

    def test_other_operations_sampled(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Anything else is kept (the guide's default), and its children with it."""
        monkeypatch.setattr(random, "random", lambda: 0.99)
        _, exporter = configure_with_sampler(OperationBasedSampler())

        sampled = run_roots(["webhook.lease.expired"])

        spans = exporter.get_finished_spans()
        root = by_name(spans, "webhook.lease.expired")
        assert [True] == sampled
        assert [by_name(spans, "webhook.lease.expired.child")] == children_of(spans, root)


class FixedTraceIds(RandomIdGenerator):
    """Random span ids, and always the same trace id (so a trace-id-ratio decision is known in advance)."""

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id

    def generate_trace_id(self) -> int:
        return self.trace_id


# Trace ids whose low 64 bits sit at ~0.0 and ~1.0 of the ratio range our sampler compares against.
LOW_TRACE_ID = (1 << 100) | 1
HIGH_TRACE_ID = (1 << 128) - 1


class TestOurOperationBasedSampler:
    """``tracing.OperationBasedSampler``: payments always, health checks at 1%, the rest at the sampling rate."""

    @pytest.fixture(autouse=True)
    def _no_rate_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("TRACE_SAMPLING_RATE", raising=False)
        monkeypatch.delenv("TRACE_EMERGENCY_SAMPLING_RATE", raising=False)

    @pytest.mark.parametrize("trace_id", [LOW_TRACE_ID, HIGH_TRACE_ID], ids=["low", "high"])
    def test_payments_always_sampled(self, trace_id: int) -> None:
        """Payment roots are kept at any trace id, even with the ordinary rate at 0, attributes intact."""
        provider, exporter = configure_with_sampler(tracing.OperationBasedSampler(rate=0.0))
        provider.id_generator = FixedTraceIds(trace_id)

        with get_tracer().trace_span("webhook.payment.received", attributes={"payment.id": "pay-1"}):
            pass
        sampled = run_roots(["webhook.lease.expired"])

        spans = exporter.get_finished_spans()
        assert ["webhook.payment.received"] == [span.name for span in spans]
        assert "pay-1" == spans[0].attributes["payment.id"]
        assert trace_id == spans[0].context.trace_id
        assert [False] == sampled

    @pytest.mark.parametrize(
        ("trace_id", "kept"), [(LOW_TRACE_ID, True), (HIGH_TRACE_ID, False)], ids=["low", "high"]
    )
    def test_health_checks_sampled_at_one_percent(self, trace_id: int, kept: bool) -> None:
        """A health root is kept when its trace id falls in the lowest 1%, else dropped with its children."""
        provider, exporter = configure_with_sampler(tracing.OperationBasedSampler(rate=1.0))
        provider.id_generator = FixedTraceIds(trace_id)

        sampled = run_roots(["health_check"])

        names = sorted(span.name for span in exporter.get_finished_spans())
        assert [kept] == sampled
        assert (["health_check", "health_check.child"] if kept else []) == names

    def test_health_rate_is_about_one_percent(self) -> None:
        """Over random trace ids, about 1% of health roots are kept while every payment root is."""
        _, exporter = configure_with_sampler(tracing.OperationBasedSampler(rate=1.0))

        health = run_roots(["health_check"] * 5000)
        payments = run_roots(["payment.received"] * 100)

        assert 10 <= sum(health) <= 110  # 1% of 5,000 = 50, with room for chance
        assert [True] * 100 == payments
        assert 2 * (sum(health) + 100) == len(exporter.get_finished_spans())

    def test_other_operations_follow_the_rate(self) -> None:
        """Ordinary roots are kept at rate 1.0 and dropped at rate 0.0."""
        _, exporter = configure_with_sampler(tracing.OperationBasedSampler(rate=0.0))

        assert [False] * 20 == run_roots(["webhook.lease.expired"] * 20)
        assert () == exporter.get_finished_spans()

    def test_rates_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without arguments the ratios come from TRACE_SAMPLING_RATE and TRACE_EMERGENCY_SAMPLING_RATE."""
        monkeypatch.setenv("TRACE_SAMPLING_RATE", "0")
        monkeypatch.setenv("TRACE_EMERGENCY_SAMPLING_RATE", "1")
        _, exporter = configure_with_sampler(tracing.OperationBasedSampler())

        assert [True, False] == run_roots(["payment.received", "webhook.lease.expired"])
        assert ["payment.received", "payment.received.child"] == sorted(
            span.name for span in exporter.get_finished_spans()
        )


async def compute(n: int) -> int:
    """A small async function worth profiling."""
    return sum(i * i for i in range(n))


async def explode() -> None:
    """An async function that fails."""
    raise SpecificError("profiled failure")


class TestGuidePerformanceProfiler:
    """The guide's profiler runs a function under cProfile in a ``profile.<name>`` span with its stats."""

    @staticmethod
    def guide_profiler() -> Any:
        tracer = get_tracer()

        # The guide's code, verbatim:
        class PerformanceProfiler:
            @staticmethod
            async def profile_operation(operation_name: str, func, *args, **kwargs):
                with tracer.trace_span(f"profile.{operation_name}") as span:
                    import cProfile  # noqa: PLC0415  # the guide's import
                    import io  # noqa: PLC0415  # the guide's import
                    import pstats  # noqa: PLC0415  # the guide's import

                    pr = cProfile.Profile()
                    pr.enable()

                    try:
                        result = await func(*args, **kwargs)
                    finally:
                        pr.disable()

                        s = io.StringIO()
                        ps = pstats.Stats(pr, stream=s).sort_stats("cumulative")
                        ps.print_stats(10)  # Top 10 functions

                        span.set_attribute("profile.stats", s.getvalue()[:5000])

                    return result

        return PerformanceProfiler

    async def test_profile_span_with_stats(self, span_exporter: InMemorySpanExporter) -> None:
        """``profile.compute`` carries ``profile.stats`` naming the profiled function; the result is returned."""
        profiler = self.guide_profiler()

        result = await profiler.profile_operation("compute", compute, 100)

        span = by_name(span_exporter.get_finished_spans(), "profile.compute")
        stats = span.attributes["profile.stats"]
        assert sum(i * i for i in range(100)) == result
        assert span.parent is None
        assert "function calls" in stats
        assert "compute" in stats
        assert len(stats) <= 5000
        assert StatusCode.UNSET == span.status.status_code

    async def test_failure_still_profiled(self, span_exporter: InMemorySpanExporter) -> None:
        """A failing function leaves the span ERROR with an ``exception`` event, and the stats still set."""
        profiler = self.guide_profiler()

        with pytest.raises(SpecificError):
            await profiler.profile_operation("explode", explode)

        span = by_name(span_exporter.get_finished_spans(), "profile.explode")
        assert "function calls" in span.attributes["profile.stats"]
        assert StatusCode.ERROR == span.status.status_code
        assert ["exception"] == [event.name for event in span.events]


class TestOurPerformanceProfiler:
    """``tracing.PerformanceProfiler.profile_operation`` attaches the stats as a ``profile`` event."""

    async def test_profile_event_on_the_span(self, span_exporter: InMemorySpanExporter) -> None:
        """``profile.compute`` has one ``profile`` event whose ``profile.stats`` names the function."""
        result = await tracing.PerformanceProfiler.profile_operation("compute", compute, 100)

        span = by_name(span_exporter.get_finished_spans(), "profile.compute")
        assert sum(i * i for i in range(100)) == result
        assert ["profile"] == [event.name for event in span.events]
        stats = span.events[0].attributes["profile.stats"]
        assert "function calls" in stats
        assert "compute" in stats
        assert StatusCode.UNSET == span.status.status_code

    async def test_sync_function_profiled_too(self, span_exporter: InMemorySpanExporter) -> None:
        """A plain function is called and profiled the same way."""
        result = await tracing.PerformanceProfiler.profile_operation("sorted", sorted, [3, 1, 2])

        span = by_name(span_exporter.get_finished_spans(), "profile.sorted")
        assert [1, 2, 3] == result
        assert "function calls" in span.events[0].attributes["profile.stats"]

    async def test_failure_still_profiled(self, span_exporter: InMemorySpanExporter) -> None:
        """A failing function: the ``profile`` event first, then the ``exception`` event; ERROR status."""
        with pytest.raises(SpecificError):
            await tracing.PerformanceProfiler.profile_operation("explode", explode)

        span = by_name(span_exporter.get_finished_spans(), "profile.explode")
        assert ["profile", "exception"] == [event.name for event in span.events]
        assert "function calls" in span.events[0].attributes["profile.stats"]
        assert StatusCode.ERROR == span.status.status_code

"""protect_provider: every span processor on a provider sees scrubbed spans, whoever added it and when."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    ConcurrentMultiSpanProcessor,
    ReadableSpan,
    Span,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from tracing import REDACTED, TracingSettings, configure_tracing, protect_provider
from tracing.processors import CountingBatchSpanProcessor, TracehookSpanProcessor

CARD = "4111111111111111"
CARD_MASKED = "************1111"
SSN = "078-05-1120"
SSN_MASKED = "***-**-1120"
API_KEY = "rv_live_abc123"


class Recorder(SpanProcessor):
    """A user's own processor: keeps what it is given at start and at end."""

    def __init__(self) -> None:
        self.started: list[Span] = []
        self.ended: list[ReadableSpan] = []
        self.shut_down = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.append(span)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)

    def shutdown(self) -> None:
        self.shut_down = True


def dirty_span(provider: TracerProvider, name: str = "charge") -> None:
    """End one span carrying a card number, an SSN and an API key everywhere a span can hold them."""
    tracer = provider.get_tracer("user.code")
    linked = tracer.start_span("earlier")
    linked.end()
    with tracer.start_as_current_span(
        name,
        attributes={"payment.note": f"paid with {CARD}", "order_id": "o-1"},
        links=[Link(linked.get_span_context(), {"link.note": f"card {CARD}"})],
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        span.set_attribute("vendor.api_key", API_KEY)
        span.add_event("payer.checked", {"payer": f"ssn {SSN}"})
        span.record_exception(ValueError(f"declined {CARD}"))
        span.set_status(Status(StatusCode.ERROR, f"declined {CARD} for {SSN}"))


def dump(span: ReadableSpan) -> str:
    """Everything a span carries that an exporter would send, as text."""
    return repr(
        (
            dict(span.attributes or {}),
            [(event.name, dict(event.attributes or {})) for event in span.events],
            [dict(link.attributes or {}) for link in span.links],
            span.status.description,
        )
    )


def assert_scrubbed(text: str) -> None:
    """No card number, SSN or API key in ``text``; their masked forms are there."""
    assert CARD not in text
    assert SSN not in text
    assert API_KEY not in text
    assert CARD_MASKED in text
    assert SSN_MASKED in text
    assert REDACTED in text


def the(spans: Any, name: str = "charge") -> ReadableSpan:
    (found,) = [span for span in spans if span.name == name]
    return found  # type: ignore[no-any-return]


# The ways a user puts a processor on a provider: each returns the processor and a function reading what
# reached the user's side, as text.
Setup = Callable[[], tuple[SpanProcessor, Callable[[], str]]]


def _simple_in_memory() -> tuple[SpanProcessor, Callable[[], str]]:
    exporter = InMemorySpanExporter()
    return SimpleSpanProcessor(exporter), lambda: dump(the(exporter.get_finished_spans()))


def _batch_in_memory() -> tuple[SpanProcessor, Callable[[], str]]:
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter)

    def read() -> str:
        processor.force_flush()
        return dump(the(exporter.get_finished_spans()))

    return processor, read


def _counting_batch_in_memory() -> tuple[SpanProcessor, Callable[[], str]]:
    exporter = InMemorySpanExporter()
    processor = CountingBatchSpanProcessor(exporter)

    def read() -> str:
        processor.force_flush()
        return dump(the(exporter.get_finished_spans()))

    return processor, read


def _console() -> tuple[SpanProcessor, Callable[[], str]]:
    out = io.StringIO()
    return SimpleSpanProcessor(ConsoleSpanExporter(out=out)), out.getvalue


def _recorder() -> tuple[SpanProcessor, Callable[[], str]]:
    recorder = Recorder()
    return recorder, lambda: dump(the(recorder.ended))


SETUPS: dict[str, Setup] = {
    "SimpleSpanProcessor(InMemorySpanExporter)": _simple_in_memory,
    "BatchSpanProcessor(InMemorySpanExporter)": _batch_in_memory,
    "CountingBatchSpanProcessor(InMemorySpanExporter)": _counting_batch_in_memory,
    "SimpleSpanProcessor(ConsoleSpanExporter)": _console,
    "own SpanProcessor": _recorder,
}


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A user's own SDK provider, not the global one."""
    made = TracerProvider(shutdown_on_exit=False)
    yield made
    made.shutdown()


class TestEveryProcessorIsScrubbed:
    """Attributes, event and link attributes, exception messages and the status description reach every
    processor scrubbed, whether it was added before protect_provider or after."""

    @pytest.mark.parametrize("setup", list(SETUPS))
    @pytest.mark.parametrize("added", ["before", "after"])
    def test_scrubbed(self, provider: TracerProvider, setup: str, added: str) -> None:
        """The card number, SSN and API key reach the user's processor masked or redacted."""
        processor, read = SETUPS[setup]()
        if added == "before":
            provider.add_span_processor(processor)
            protect_provider(provider)
        else:
            protect_provider(provider)
            provider.add_span_processor(processor)
        dirty_span(provider)
        assert_scrubbed(read())

    def test_all_at_once(self, provider: TracerProvider) -> None:
        """Five processors of every kind on one provider all see the same scrubbed span."""
        made = [SETUPS[name]() for name in SETUPS]
        for processor, _ in made[:2]:
            provider.add_span_processor(processor)
        protect_provider(provider)
        for processor, _ in made[2:]:
            provider.add_span_processor(processor)
        dirty_span(provider)
        for _, read in made:
            assert_scrubbed(read())

    def test_concurrent_multi_span_processor(self) -> None:
        """A provider whose processors are called in parallel is protected the same way."""
        provider = TracerProvider(
            active_span_processor=ConcurrentMultiSpanProcessor(2), shutdown_on_exit=False
        )
        before, read_before = _recorder()
        provider.add_span_processor(before)
        protect_provider(provider)
        after, read_after = _simple_in_memory()
        provider.add_span_processor(after)
        dirty_span(provider)
        provider.shutdown()
        assert_scrubbed(read_before())
        assert_scrubbed(read_after())

    def test_tracer_made_before(self, provider: TracerProvider) -> None:
        """A tracer obtained before the call sends its spans through the protected processors."""
        processor, read = _simple_in_memory()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("early")
        protect_provider(provider)
        with tracer.start_as_current_span("charge", attributes={"note": CARD, "api_key": API_KEY}):
            pass
        assert "{'note': '" + CARD_MASKED + "', 'api_key': '[REDACTED]'}" in read()

    def test_on_start_sees_the_live_span(self, provider: TracerProvider) -> None:
        """on_start gets the live span, which the processor may change (documented as not scrubbed)."""
        recorder = Recorder()
        provider.add_span_processor(recorder)
        protect_provider(provider)
        dirty_span(provider)
        started = the(recorder.started)
        assert isinstance(started, Span)
        assert started.attributes is not None
        assert f"paid with {CARD}" == started.attributes["payment.note"]


class TestNothingToScrub:
    """A clean span costs no copy: every processor gets the very object the SDK handed on."""

    def test_clean_span_is_passed_as_is(self, provider: TracerProvider) -> None:
        """The same object, unchanged, reaches a user's processor and a user's exporter."""
        recorder = Recorder()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(recorder)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        protect_provider(provider)
        span = ReadableSpan(
            "clean",
            context=trace.SpanContext(1, 2, is_remote=False, trace_flags=trace.TraceFlags(1)),
            attributes={"a": "b", "n": 3, "phone": "+1-555-0142", "payment_id": CARD},
            start_time=1,
            end_time=2,
        )
        provider._active_span_processor.on_end(span)
        assert [span] == recorder.ended
        (exported,) = exporter.get_finished_spans()
        assert exported is span

    def test_one_copy_shared(self, provider: TracerProvider) -> None:
        """Two processors of the user's own get the same scrubbed copy (scrubbed once, not per processor)."""
        first, second = Recorder(), Recorder()
        provider.add_span_processor(first)
        protect_provider(provider)
        provider.add_span_processor(second)
        dirty_span(provider)
        assert the(first.ended) is the(second.ended)


class TestIdempotent:
    """Calling it again changes nothing: no wrapper around a wrapper, every span exported once."""

    def test_twice(self, provider: TracerProvider) -> None:
        """The processor list and each exporter stay as the first call left them."""
        exporter = InMemorySpanExporter()
        batch = BatchSpanProcessor(InMemorySpanExporter())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.add_span_processor(Recorder())
        provider.add_span_processor(batch)
        protect_provider(provider)
        processors = provider._active_span_processor._span_processors
        batch_exporter = batch.span_exporter
        protect_provider(provider)
        protect_provider(provider)
        assert processors == provider._active_span_processor._span_processors
        assert batch_exporter is batch.span_exporter
        dirty_span(provider)
        assert 1 == len([span for span in exporter.get_finished_spans() if span.name == "charge"])

    def test_same_processor_on_two_providers(self, provider: TracerProvider) -> None:
        """A batch processor put on two protected providers has its exporter wrapped once."""
        other = TracerProvider(shutdown_on_exit=False)
        exporter = InMemorySpanExporter()
        processor = SimpleSpanProcessor(exporter)
        for each in (provider, other):
            each.add_span_processor(processor)
            protect_provider(each)
        wrapped = processor.span_exporter
        assert wrapped.inner is exporter
        dirty_span(other)
        assert_scrubbed(dump(the(exporter.get_finished_spans())))

    def test_not_an_sdk_provider(self) -> None:
        """The API's proxy provider holds no processor: nothing to do, nothing raised."""
        protect_provider(trace.ProxyTracerProvider())
        protect_provider(trace.NoOpTracerProvider())


class TestUserExporterStaysTheirs:
    """The wrapped exporter behaves as the user's own."""

    def test_reads_and_shutdown_reach_the_exporter(self, provider: TracerProvider) -> None:
        """``processor.span_exporter`` still answers the exporter's own methods; shutdown reaches it."""
        exporter = InMemorySpanExporter()
        processor = SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        protect_provider(provider)
        dirty_span(provider)
        assert 2 == len(processor.span_exporter.get_finished_spans())
        provider.shutdown()
        assert exporter._stopped

    def test_no_slow_flag(self, provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
        """A long span reaches the user's exporter without ``slow`` and logs no ``span.slow`` line."""
        exporter = InMemorySpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        protect_provider(provider)
        span = provider.get_tracer("t").start_span("long", start_time=0)
        span.end(end_time=5_000_000_000)
        provider.force_flush()
        (exported,) = exporter.get_finished_spans()
        assert "slow" not in (exported.attributes or {})
        assert "span.slow" not in caplog.text

    def test_console_output_is_json(self, provider: TracerProvider) -> None:
        """The console exporter's output stays what the user expects: a JSON span, scrubbed."""
        out = io.StringIO()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_one_line)))
        protect_provider(provider)
        dirty_span(provider)
        charge = [json.loads(line) for line in out.getvalue().splitlines() if '"charge"' in line]
        assert CARD_MASKED == charge[0]["attributes"]["payment.note"].removeprefix("paid with ")


class TestTracehookPipeline:
    """tracehook's own pipeline is neither wrapped again nor flagged twice."""

    def test_own_and_user_processor(
        self, settings: TracingSettings, caplog: pytest.LogCaptureFixture
    ) -> None:
        """configure_tracing protects its provider: a processor added later is scrubbed; our exporter gets
        ``slow`` once and one ``span.slow`` line, the user's exporter neither."""
        ours = InMemorySpanExporter()
        provider = configure_tracing(settings, exporter=ours, batch=False)
        theirs = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(theirs))
        (own_processor, _) = provider._active_span_processor._span_processors
        assert isinstance(own_processor, TracehookSpanProcessor)
        dirty_span(provider)
        span = provider.get_tracer("t").start_span("long", start_time=0)
        span.end(end_time=5_000_000_000)
        assert_scrubbed(dump(the(ours.get_finished_spans())))
        assert_scrubbed(dump(the(theirs.get_finished_spans())))
        assert True is (the(ours.get_finished_spans(), "long").attributes or {}).get("slow")
        assert "slow" not in (the(theirs.get_finished_spans(), "long").attributes or {})
        assert 1 == caplog.text.count("span.slow")


class TestUnknownLayout:
    """Where the SDK keeps things elsewhere (a future version), spans are still scrubbed, never leaked."""

    def test_exporter_out_of_reach(self, provider: TracerProvider) -> None:
        """A simple processor whose exporter cannot be replaced gets the scrubbed span in on_end instead."""

        class KeepsItsExporter(SimpleSpanProcessor):
            @property  # type: ignore[override]
            def span_exporter(self) -> SpanExporter:
                return self._kept  # type: ignore[no-any-return]

            @span_exporter.setter
            def span_exporter(self, value: SpanExporter) -> None:
                if not hasattr(self, "_kept"):
                    self._kept = value

        exporter = InMemorySpanExporter()
        provider.add_span_processor(KeepsItsExporter(exporter))
        protect_provider(provider)
        dirty_span(provider)
        assert_scrubbed(dump(the(exporter.get_finished_spans())))

    def test_unknown_processor_list(self) -> None:
        """An active processor of unknown make: everything behind it gets scrubbed spans."""

        class OwnMulti(SpanProcessor):
            def __init__(self) -> None:
                self.members: list[SpanProcessor] = []

            def add_span_processor(self, processor: SpanProcessor) -> None:
                self.members.append(processor)

            def on_end(self, span: ReadableSpan) -> None:
                for member in self.members:
                    member.on_end(span)

        provider = TracerProvider(active_span_processor=OwnMulti(), shutdown_on_exit=False)
        recorder = Recorder()
        provider.add_span_processor(recorder)
        protect_provider(provider)
        protect_provider(provider)
        dirty_span(provider)
        assert_scrubbed(dump(the(recorder.ended)))


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"

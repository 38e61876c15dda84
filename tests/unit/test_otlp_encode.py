"""tracehook's OTLP span encoder writes exactly the SDK encoder's bytes, and its exporter sends them."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tests.otlp_receiver import OtlpReceiver
from tracing import TracingSettings, _otlp_encode, _otlp_export, load_settings
from tracing._otlp_encode import encode_spans, encode_spans_upstream
from tracing._otlp_export import TracehookOTLPSpanExporter
from tracing.processors import ScrubbingSpanExporter
from tracing.settings import SettingsError
from tracing.setup import build_exporter


class Colour(enum.StrEnum):
    """A str subclass as an attribute value (the SDK keeps it as it is)."""

    RED = "red"


class Level(enum.IntEnum):
    """An int subclass as an attribute value (the SDK keeps it as it is)."""

    HIGH = 3


class Ratio(float):
    """A float subclass as an attribute value."""


# Every attribute value type the SDK keeps (it stores sequences as tuples and copies mappings).
ALL_VALUES: dict[str, Any] = {
    "str": "plain",
    "str.unicode": "héllo wörld ✓ 日本語 🚀",
    "str.empty": "",
    "str.long": "x" * 300,
    "str.enum": Colour.RED,
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.127": 127,
    "int.128": 128,
    "int.negative": -1,
    "int.min": -(2**63),
    "int.max": 2**63 - 1,
    "int.enum": Level.HIGH,
    "float": 1.5,
    "float.nan": math.nan,
    "float.inf": math.inf,
    "float.-inf": -math.inf,
    "float.-0": -0.0,
    "float.subclass": Ratio(0.25),
    "bytes": b"\x00\xff\x10",
    "bytes.empty": b"",
    "none": None,
    "seq.str": ["a", "", "é"],
    "seq.bool": [True, False],
    "seq.int": [1, -1, 2**63 - 1, -(2**63)],
    "seq.float": [0.5, math.nan, -0.0],
    "seq.bytes": [b"a", b""],
    "seq.empty": [],
    "seq.nested": [[1, 2], ["a", [True, None]]],
    "seq.mixed": [1, "a", None, 2.5, b"z"],
    "map": {"a": 1, "b": [1, "x"], "c": {"d": None}},
    "map.empty": {},
    "ключ 🔑": "unicode key",
}

SCHEMA = "https://opentelemetry.io/schemas/1.26.0"


def assert_same_bytes(spans: Sequence[ReadableSpan]) -> None:
    """tracehook's fast path, and its public function, give the SDK encoder's bytes."""
    expected = encode_spans_upstream(spans)
    assert expected == _otlp_encode._encode(spans)
    assert expected == encode_spans(spans)


def remote_context(span_id: int = 0xEEE19B7EC3C1B174, trace_state: TraceState | None = None) -> SpanContext:
    """A sampled context that came from another process."""
    return SpanContext(
        trace_id=0x5B8EFFF798038103D269B633813FC60C,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=trace_state,
    )


class Corpus:
    """Spans from several providers (resources) and tracers (scopes), collected in one exporter.

    ``make(n)`` returns ``n`` finished spans in which resources, scopes and span shapes interleave.
    """

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        resources = [
            Resource.create({"service.name": "corpus", "process.pid": 4242, "tags": ["a", "b"]}),
            Resource({}),
            Resource({"service.name": "other", "weight": 1.5, "raw": b"\x01"}, schema_url=SCHEMA),
        ]
        # An equal resource in another object: the SDK's encoder groups by equality, not identity.
        resources.append(Resource(dict(resources[0].attributes), resources[0].schema_url))
        limits = SpanLimits(
            max_attributes=6,
            max_events=2,
            max_links=1,
            max_event_attributes=2,
            max_link_attributes=2,
        )
        self.providers = [TracerProvider(resource=resource) for resource in resources]
        self.providers.append(TracerProvider(resource=resources[0], span_limits=limits))
        for provider in self.providers:
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracers = [
            [
                provider.get_tracer("scope.plain"),
                provider.get_tracer(
                    "scope.full", "1.2.3", schema_url=SCHEMA, attributes={"scope.k": "v", "n": 3}
                ),
                provider.get_tracer(""),
                # Equal to the first: one ScopeSpans for both.
                provider.get_tracer("scope.plain"),
            ]
            for provider in self.providers
        ]
        self.shapes: list[Callable[[trace.Tracer, int], None]] = [
            self.all_attributes,
            self.events,
            self.links,
            self.statuses,
            self.parents,
            self.over_limits,
        ]

    def shutdown(self) -> None:
        """Shut the providers down."""
        for provider in self.providers:
            provider.shutdown()

    def make(self, count: int) -> list[ReadableSpan]:
        """At least ``count`` finished spans, interleaving resources, scopes and shapes; the first ``count``."""
        self.exporter.clear()
        index = 0
        while len(self.exporter.get_finished_spans()) < count:
            provider_index = index % len(self.providers)
            scopes = self.tracers[provider_index]
            tracer = scopes[(index // len(self.providers)) % len(scopes)]
            self.shapes[index % len(self.shapes)](tracer, index)
            index += 1
        return list(self.exporter.get_finished_spans()[:count])

    @staticmethod
    def all_attributes(tracer: trace.Tracer, index: int) -> None:
        """Every attribute type, every span kind in turn, a unicode name."""
        kind = list(SpanKind)[index % len(SpanKind)]
        with tracer.start_as_current_span(f"attributes ✓ {index}", kind=kind, attributes=ALL_VALUES):
            pass

    @staticmethod
    def events(tracer: trace.Tracer, index: int) -> None:
        """Events with and without attributes, with an explicit timestamp, unicode names."""
        with tracer.start_as_current_span("events", kind=SpanKind.SERVER) as span:
            span.add_event("plain")
            span.add_event("with attributes", {"str": "v", "int": index, "seq": [1.5, 2.5], "none": None})
            span.add_event("événement", {"map": {"k": "v"}}, timestamp=1_700_000_000_000_000_000 + index)

    @staticmethod
    def links(tracer: trace.Tracer, index: int) -> None:
        """Links to a local and a remote context, with attributes and a trace_state."""
        with tracer.start_as_current_span("linked") as linked:
            pass
        state = TraceState([("vendor", f"v{index}"), ("other@tenant", "x")])
        with tracer.start_as_current_span(
            "links",
            kind=SpanKind.CONSUMER,
            links=[
                Link(linked.get_span_context(), {"link.reason": "batch", "n": index}),
                Link(remote_context(trace_state=state), {"remote": True}),
                Link(remote_context(span_id=0x1234)),
            ],
        ):
            pass

    @staticmethod
    def statuses(tracer: trace.Tracer, index: int) -> None:
        """Status unset, ok, error with and without a description; an exception event."""
        with tracer.start_as_current_span("unset"):
            pass
        with tracer.start_as_current_span("ok") as span:
            span.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span(
            "error", record_exception=False, set_status_on_exception=False
        ) as span:
            span.set_status(Status(StatusCode.ERROR, f"boom {index} ✗"))
        with tracer.start_as_current_span("error, no description") as span:
            span.set_status(Status(StatusCode.ERROR))
            span.record_exception(ValueError("bad value"))

    @staticmethod
    def parents(tracer: trace.Tracer, index: int) -> None:
        """A root span, a local child, a child of a remote parent carrying a trace_state."""
        with (
            tracer.start_as_current_span("root", kind=SpanKind.PRODUCER),
            tracer.start_as_current_span("local child", kind=SpanKind.CLIENT),
        ):
            pass
        state = TraceState([("congo", f"t{index}")])
        remote = trace.set_span_in_context(NonRecordingSpan(remote_context(trace_state=state)))
        with tracer.start_as_current_span("remote child", context=remote, kind=SpanKind.CONSUMER):
            pass

    @staticmethod
    def over_limits(tracer: trace.Tracer, index: int) -> None:
        """More attributes, events, links and event/link attributes than small span limits allow."""
        with tracer.start_as_current_span(
            "limits", links=[Link(remote_context(span_id=n + 1)) for n in range(3)]
        ) as span:
            for number in range(10):
                span.set_attribute(f"attribute.{number}", number + index)
            for number in range(4):
                span.add_event(f"event {number}", {"a": 1, "b": 2, "c": 3, "d": 4})


@pytest.fixture
def corpus() -> Iterator[Corpus]:
    """The corpus, its providers shut down after the test."""
    made = Corpus()
    yield made
    made.shutdown()


class TestCorpus:
    """For every feature of the span model, the bytes equal the SDK encoder's."""

    @pytest.mark.parametrize("size", [1, 64, 512])
    def test_batches(self, corpus: Corpus, size: int) -> None:
        """Batches of 1, 64 and 512 spans interleaving resources, scopes, kinds and span shapes."""
        spans = corpus.make(size)
        assert size == len(spans)
        assert_same_bytes(spans)

    def test_the_corpus_covers_what_it_claims(self, corpus: Corpus) -> None:
        """The 512-span batch holds every kind, parent type, status, dropped count and resource."""
        spans = corpus.make(512)
        assert set(SpanKind) == {span.kind for span in spans}
        assert {None, False, True} == {span.parent.is_remote if span.parent else None for span in spans}
        assert set(StatusCode) == {span.status.status_code for span in spans}
        assert all(
            any(getattr(span, field) for span in spans)
            for field in ("dropped_attributes", "dropped_events", "dropped_links")
        )
        assert any(span.events and span.events[0].attributes.dropped for span in spans)  # type: ignore[union-attr]
        assert 4 == len({id(span.resource) for span in spans})
        assert 3 == len({span.resource for span in spans})
        assert any(span.context.trace_state for span in spans)  # type: ignore[union-attr]

    def test_each_span_alone(self, corpus: Corpus) -> None:
        """Each span of the corpus, alone in a batch."""
        for span in corpus.make(64):
            assert_same_bytes([span])

    def test_empty_batch(self) -> None:
        """No span: an empty request."""
        assert_same_bytes([])

    def test_spans_built_by_hand(self) -> None:
        """ReadableSpans built directly (as the scrubbing exporter copies them): plain dict attributes,
        lists of events and links, no scope, no resource, no times, a subclass read through its properties."""

        class Subclass(ReadableSpan):
            """Read through the public properties."""

        context = remote_context(span_id=7)
        shared = Resource({"service.name": "hand"})
        spans: list[ReadableSpan] = [
            ReadableSpan("bare", context=context),
            ReadableSpan(
                "dict attributes",
                context=context,
                parent=remote_context(span_id=9),
                resource=shared,
                attributes={"a": 1, "b": ["x", "y"], "c": {"d": b"e"}},
                events=[Event("e", {"k": "v"}, timestamp=5)],
                links=[Link(remote_context(span_id=3), {"k": 2})],
                status=Status(StatusCode.ERROR, "failed"),
                start_time=10,
                end_time=20,
                instrumentation_scope=InstrumentationScope("hand", "0.1"),
            ),
            Subclass(
                "subclass",
                context=context,
                resource=shared,
                attributes=BoundedAttributes(2, {"a": 1, "b": 2, "c": 3}),
                events=BoundedList.from_seq(1, [Event("x", timestamp=1), Event("y", timestamp=2)]),
                links=BoundedList.from_seq(0, [Link(context)]),
                kind=SpanKind.SERVER,
                start_time=0,
                end_time=2**64 - 1,
            ),
        ]
        assert_same_bytes(spans)

    def test_scrubbed_and_slow_spans(self, corpus: Corpus) -> None:
        """What tracehook's pipeline hands the exporter: spans the scrubbing exporter copied (a card
        number masked, a slow flag added) among spans it passed on as they were."""
        memory = InMemorySpanExporter()
        scrubbing = ScrubbingSpanExporter(memory, slow_threshold_ms=0.000001, on_slow=None)
        spans = corpus.make(8)
        tracer = corpus.tracers[0][1]
        with tracer.start_as_current_span("pay", attributes={"card": "4111 1111 1111 1111"}) as span:
            span.add_event("charged", {"card": "4111 1111 1111 1111"})
        spans.append(corpus.exporter.get_finished_spans()[-1])
        assert SpanExportResult.SUCCESS == scrubbing.export(spans)
        exported = memory.get_finished_spans()
        assert any(type(span.attributes) is not BoundedAttributes for span in exported)
        assert_same_bytes(exported)

    def test_resources_cached_across_batches(self, corpus: Corpus) -> None:
        """A second encoding of the same spans (resource and scope blocks from the cache) is equal too."""
        spans = corpus.make(64)
        assert_same_bytes(spans)
        assert_same_bytes(list(reversed(spans)))


# Hypothesis: random spans built directly, every field drawn.
_text = st.text(max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
    | st.binary(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_attributes = st.dictionaries(st.text(min_size=1, max_size=10), _values, max_size=6)
_ids = st.integers(min_value=1, max_value=2**64 - 1)
_trace_states = st.lists(
    st.tuples(st.sampled_from(["a", "vendor", "x@t", "k-1"]), st.sampled_from(["1", "v", "long-value"])),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(TraceState)
_contexts = st.builds(
    SpanContext,
    trace_id=st.integers(min_value=1, max_value=2**128 - 1),
    span_id=_ids,
    is_remote=st.booleans(),
    trace_flags=st.just(TraceFlags(TraceFlags.SAMPLED)),
    trace_state=_trace_states,
)
_RESOURCES = [
    Resource({"service.name": "a"}),
    Resource({}),
    Resource({"service.name": "b", "n": 1}, schema_url=SCHEMA),
    Resource({"service.name": "a"}),
]
_SCOPES = [
    None,
    InstrumentationScope("s"),
    InstrumentationScope("s", "1", SCHEMA, {"k": "v"}),
    InstrumentationScope("s"),
]
_bounded = st.builds(
    lambda attributes, limit: BoundedAttributes(limit, attributes),
    _attributes,
    st.none() | st.integers(min_value=0, max_value=4),
)
_events = st.builds(
    Event,
    name=_text,
    attributes=st.none() | _attributes | _bounded,
    timestamp=st.integers(min_value=0, max_value=2**64 - 1),
)
_links = st.builds(Link, context=_contexts, attributes=st.none() | _attributes | _bounded)
_statuses = st.builds(
    Status, status_code=st.sampled_from(StatusCode), description=st.none() | _text
) | st.just(Status(StatusCode.UNSET))
_times = st.none() | st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def _spans(draw: st.DrawFn) -> ReadableSpan:
    events = draw(st.lists(_events, max_size=3))
    links = draw(st.lists(_links, max_size=3))
    limit = draw(st.none() | st.integers(min_value=0, max_value=3))
    return ReadableSpan(
        name=draw(_text),
        context=draw(_contexts),
        parent=draw(st.none() | _contexts),
        resource=draw(st.sampled_from(_RESOURCES)),
        attributes=draw(st.none() | _attributes | _bounded),
        events=events if limit is None else BoundedList.from_seq(limit, events),
        links=links if limit is None else BoundedList.from_seq(limit, links),
        kind=draw(st.sampled_from(SpanKind)),
        status=draw(_statuses),
        start_time=draw(_times),
        end_time=draw(_times),
        instrumentation_scope=draw(st.sampled_from(_SCOPES)),
    )


class TestProperty:
    """Random spans of every shape the SDK's types allow encode to the SDK encoder's bytes."""

    @hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_spans(), max_size=8))
    def test_random_batches(self, spans: list[ReadableSpan]) -> None:
        """Any batch drawn: same bytes, from the fast path itself."""
        assert_same_bytes(spans)


class TestFallback:
    """What the fast path cannot encode exactly goes to the SDK's encoder, with the same result."""

    @pytest.mark.parametrize(
        "value",
        [2**64, -(2**63) - 1, "lone surrogate \ud800", ["ok", 2**70], object()],
        ids=["int above 64 bits", "int below int64", "surrogate", "big int in a sequence", "object"],
    )
    def test_unsupported_value(self, value: object, caplog: pytest.LogCaptureFixture) -> None:
        """The batch is handed to the SDK's encoder (which skips the key and logs): bytes still equal."""
        spans = [
            ReadableSpan("fine", context=remote_context(), attributes={"a": "b"}),
            ReadableSpan("odd", context=remote_context(), attributes={"odd": value, "a": "b"}),
        ]
        with pytest.raises((_otlp_encode._UnsupportedError, UnicodeEncodeError)):
            _otlp_encode._encode(spans)
        with caplog.at_level(logging.DEBUG, logger="tracing"):
            assert encode_spans_upstream(spans) == encode_spans(spans)
        assert any("handed to the SDK's OTLP encoder" in record.getMessage() for record in caplog.records)

    @pytest.mark.parametrize(
        "span",
        [
            ReadableSpan("no context"),
            ReadableSpan("events None", context=remote_context(), events=None),  # type: ignore[arg-type]
            ReadableSpan("links None", context=remote_context(), links=None),  # type: ignore[arg-type]
            ReadableSpan("bad kind", context=remote_context(), kind="server"),  # type: ignore[arg-type]
        ],
        ids=lambda span: span.name,
    )
    def test_what_the_sdk_refuses_still_fails(self, span: ReadableSpan) -> None:
        """A span the SDK's encoder cannot encode at all raises its error, not a different one."""
        with pytest.raises(Exception) as upstream:  # noqa: PT011  # whichever the SDK raises
            encode_spans_upstream([span])
        with pytest.raises(type(upstream.value)) as ours:
            encode_spans([span])
        assert str(upstream.value) == str(ours.value)

    def test_generator_input(self, corpus: Corpus) -> None:
        """Spans given as a one-pass iterable are encoded as a list would be."""
        spans = corpus.make(5)
        assert encode_spans_upstream(spans) == encode_spans(span for span in spans)  # type: ignore[arg-type]


class TestSetting:
    """TRACEHOOK_OTLP_ENCODER chooses the encoder; tracehook's is the default."""

    @pytest.mark.parametrize(
        ("env", "encoder", "exporter_class"),
        [
            ({}, "tracehook", TracehookOTLPSpanExporter),
            ({"TRACEHOOK_OTLP_ENCODER": "tracehook"}, "tracehook", TracehookOTLPSpanExporter),
            ({"TRACEHOOK_OTLP_ENCODER": " Upstream "}, "upstream", OTLPSpanExporter),
        ],
        ids=["default", "tracehook", "upstream"],
    )
    def test_choice(self, env: dict[str, str], encoder: str, exporter_class: type) -> None:
        """tracehook's exporter by default; ``upstream`` gives the SDK's own exporter, encoder and all."""
        settings = load_settings(env)
        assert encoder == settings.otlp_encoder
        exporter = build_exporter(settings)
        assert exporter is not None
        try:
            assert exporter_class is type(exporter)
        finally:
            exporter.shutdown()

    def test_bad_value_names_the_variable(self) -> None:
        """Any other value is an error naming the variable, from the environment or built directly."""
        with pytest.raises(SettingsError, match="TRACEHOOK_OTLP_ENCODER='protobuf'"):
            load_settings({"TRACEHOOK_OTLP_ENCODER": "protobuf"})
        with pytest.raises(SettingsError, match="TRACEHOOK_OTLP_ENCODER"):
            TracingSettings(otlp_encoder="fast")  # type: ignore[arg-type]


class TestExporter:
    """The exporter is the SDK's, encoding with tracehook's encoder."""

    def test_fast_path_active(self, monkeypatch: pytest.MonkeyPatch, corpus: Corpus) -> None:
        """With the SDK installed, export() encodes each batch once, with tracehook's encoder."""
        calls: list[int] = []

        def counting(spans: Sequence[ReadableSpan]) -> bytes:
            calls.append(len(spans))
            return encode_spans(spans)

        assert _otlp_export.FAST_EXPORT
        monkeypatch.setattr(_otlp_export, "encode_spans", counting)
        with OtlpReceiver() as receiver:
            exporter = TracehookOTLPSpanExporter(endpoint=receiver.traces_url, timeout=5)
            assert SpanExportResult.SUCCESS == exporter.export(corpus.make(3))
            exporter.shutdown()
        assert [3] == calls

    def test_sdk_checks_still_apply(self, corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
        """The SDK's max_request_size check and shutdown still run around the encoder."""
        spans = corpus.make(4)
        with OtlpReceiver() as receiver:
            small = TracehookOTLPSpanExporter(endpoint=receiver.traces_url, timeout=5, max_request_size=16)
            with caplog.at_level(logging.WARNING):
                assert SpanExportResult.FAILURE == small.export(spans)
            assert any("exceeds max_request_size" in record.getMessage() for record in caplog.records)
            exporter = TracehookOTLPSpanExporter(endpoint=receiver.traces_url, timeout=5)
            exporter.shutdown()
            assert SpanExportResult.FAILURE == exporter.export(spans)
            assert 0 == receiver.request_count

    def test_receiver_decodes_the_same_spans(self, corpus: Corpus) -> None:
        """The real OTLP receiver decodes from tracehook's exporter the spans the SDK's exporter sends."""
        spans = corpus.make(64)
        # NaN is not equal to itself: leave it out of this comparison (the byte tests cover it).
        spans = [
            span for span in spans if not any(_has_nan(value) for value in (span.attributes or {}).values())
        ]
        assert len(spans) > 40
        received = {}
        for exporter_class in (OTLPSpanExporter, TracehookOTLPSpanExporter):
            with OtlpReceiver() as receiver:
                exporter = exporter_class(endpoint=receiver.traces_url, timeout=5)
                assert SpanExportResult.SUCCESS == exporter.export(spans)
                exporter.shutdown()
                received[exporter_class] = receiver.spans
        assert len(spans) == len(received[OTLPSpanExporter])
        assert received[OTLPSpanExporter] == received[TracehookOTLPSpanExporter]


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, tuple | list):
        return any(_has_nan(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nan(item) for item in value.values())
    return False

"""tracing.testing's expected trees and assertions, on spans of this process (the SDK's, or exported to a
real receiver); the plugin across processes is tests/integration/test_pytest_plugin.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from tracing import trace_span
from tracing.testing import (
    OtlpReceiver,
    ReceivedSpan,
    SpanRow,
    assert_no_card_numbers,
    assert_one_root,
    assert_one_trace,
    assert_trace,
    export_to,
    format_trace,
    match_tree,
    span,
    trace_id_of,
    wait_for_trace,
)
from tracing.testing.tree import format_expected

TRACE = "5b8efff798038103d269b633813fc60c"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CARD = "4111 1111 1111 1111"


def row(name: str, span_id: str, parent: str = "", *, trace_id: str = TRACE, **attributes: Any) -> SpanRow:
    """A span row: ids given, everything else plain."""
    return SpanRow(
        trace_id=trace_id,
        span_id=span_id.rjust(16, "0"),
        parent_span_id=parent.rjust(16, "0") if parent else "",
        name=name,
        service="svc",
        kind="INTERNAL",
        start_ns=int(span_id, 16),
        end_ns=int(span_id, 16) + 1000,
        status="UNSET",
        attributes=attributes,
    )


def received(name: str, **fields: Any) -> ReceivedSpan:
    """A span as the receiver gives it, with whatever fields the test sets."""
    values: dict[str, Any] = {
        "trace_id": TRACE,
        "span_id": "00000000000000a1",
        "parent_span_id": "",
        "name": name,
        "kind": "INTERNAL",
        "start_ns": 1,
        "end_ns": 2,
        "attributes": {},
        "events": [],
        "links": [],
        "status_code": "UNSET",
        "status_message": "",
        "service_name": "svc",
        "resource": {},
    }
    values.update(fields)
    return ReceivedSpan(**values)


CHECKOUT = [
    row("checkout", "1"),
    row("publish charge", "2", "1"),
    row("run charge", "3", "2", **{"celery.state": "SUCCESS", "celery.queue_wait_ms": 12}),
    row("charge.card", "5", "3"),
    row("send.receipt", "4", "3"),
]


class TestExpectedTree:
    """An expected tree matches the trace it describes, siblings in any order, and says where it differs."""

    def test_matches_siblings_in_any_order(self) -> None:
        """Children are matched as a set: the receipt started before the card here, the tree says otherwise."""
        expected = span("checkout")(
            span("publish charge")(
                span("run charge", attributes={"celery.state": "SUCCESS"})("charge.card", "send.receipt")
            )
        )
        assert match_tree(CHECKOUT, expected) is None

    def test_children_as_arguments_or_call(self) -> None:
        """span(name, *children) and span(name)(*children) build the same tree; a string is a leaf."""
        assert span("a", "b", span("c", "d")) == span("a")("b", span("c")("d"))

    def test_attribute_predicate(self) -> None:
        """A callable attribute is a predicate on the actual value."""
        fast = span("checkout")(
            span("publish charge")(
                span("run charge", attributes={"celery.queue_wait_ms": lambda ms: ms < 10})(
                    "charge.card", "send.receipt"
                )
            )
        )
        assert "celery.queue_wait_ms=12, not <lambda>" in str(match_tree(CHECKOUT, fast))

    def test_deepest_difference(self) -> None:
        """A missing grandchild is reported under its parent's path, with the children that are there."""
        expected = span("checkout")(span("publish charge")(span("run charge")("charge.card", "refund")))
        expected_message = (
            "'checkout' > 'publish charge' > 'run charge': no child 'refund'; "
            "its children: 'send.receipt', 'charge.card'"
        )
        assert expected_message == match_tree(CHECKOUT, expected)

    def test_kind_and_status(self) -> None:
        """Kind and status are compared by their short names, any case in the expected tree."""
        spans = [row("root", "1"), row("child", "2", "1")]
        expected = span("root")(span("child", kind=SpanKind.CONSUMER, status="error"))
        assert "'root' > 'child': kind INTERNAL, not CONSUMER; status UNSET, not ERROR" == match_tree(
            spans, expected
        )

    def test_exact_refuses_an_extra_span(self) -> None:
        """exact: a span the tree does not name fails it; exact=False ignores it."""
        expected = span("checkout")(span("publish charge")(span("run charge")("charge.card")))
        assert (
            "'checkout' > 'publish charge' > 'run charge': 1 more child(ren) than expected: 'send.receipt'"
            == (match_tree(CHECKOUT, expected))
        )
        assert match_tree(CHECKOUT, expected, exact=False) is None

    def test_loose_tree_anywhere(self) -> None:
        """exact=False: the expected tree may start below the trace's root."""
        assert match_tree(CHECKOUT, span("run charge")("charge.card"), exact=False) is None
        assert "no span named 'refund'" == match_tree(CHECKOUT, span("refund"), exact=False)

    def test_two_roots(self) -> None:
        """exact: a trace with two roots (a parent missing) is not a tree."""
        spans = [row("root", "1"), row("orphan", "2", "9")]
        assert "2 roots ('root', 'orphan'), not one: a parent span is missing" == match_tree(
            spans, span("root")
        )

    def test_unknown_kind(self) -> None:
        """A kind that does not exist is refused when the tree is built."""
        with pytest.raises(ValueError, match="kind 'SERVERR' is not one of"):
            span("x", kind="SERVERR")

    def test_format_expected(self) -> None:
        """The expected tree is drawn with the same guides as a trace."""
        expected = span("a")(span("b", kind="PRODUCER")("c"), "d")
        assert "'a'\n├── 'b' PRODUCER\n│   └── 'c'\n└── 'd'" == format_expected(expected)


class TestSdkSpans:
    """The SDK's own spans (an in-memory exporter) match and print like received ones."""

    def test_in_memory_spans(self, span_exporter: InMemorySpanExporter) -> None:
        """Spans recorded in this process: a tree with kinds, printed as tracehook trace prints it."""
        with trace_span("checkout"), trace_span("publish charge", kind=SpanKind.PRODUCER):
            pass
        spans = span_exporter.get_finished_spans()
        assert match_tree(spans, span("checkout")(span("publish charge", kind="PRODUCER"))) is None
        lines = format_trace(spans).splitlines()
        assert lines[0].startswith(f"trace {trace_id_of(spans[0])}  2 spans, 1 services")
        assert "test-service  checkout" in lines[1]
        assert "publish charge" in lines[2]
        assert "producer" in lines[2]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A real receiver, and this process exporting to it."""
    with OtlpReceiver() as running, export_to(running, service_name="unit"):
        yield running


def remote_parent() -> Any:
    """A context whose span is a parent that never reaches the receiver."""
    parent = SpanContext(int(TRACE, 16), 0xEEE19B7EC3C1B174, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(parent))


class TestAssertTrace:
    """assert_trace waits for the trace at the receiver, then passes or fails with both trees printed."""

    def test_passes_and_returns_spans(self, receiver: OtlpReceiver) -> None:
        """The spans come back by start time."""
        with trace_span("checkout") as root, trace_span("publish charge", kind=SpanKind.PRODUCER):
            pass
        spans = assert_trace(receiver, root, span("checkout")(span("publish charge", kind="PRODUCER")))
        assert ["checkout", "publish charge"] == [item.name for item in spans]

    def test_fails_at_once_with_both_trees(self, receiver: OtlpReceiver) -> None:
        """A complete trace that does not match fails without waiting for the timeout; the message shows
        the difference, the expected tree and the actual tree as tracehook trace prints it."""
        with trace_span("checkout") as root, trace_span("publish charge"):
            pass
        started = time.monotonic()
        with pytest.raises(AssertionError) as failure:
            assert_trace(
                receiver, root, span("checkout")(span("publish charge", kind="PRODUCER")), timeout=20
            )
        assert time.monotonic() - started < 10
        message = str(failure.value)
        trace_id = trace_id_of(root)
        assert message.startswith(
            f"trace {trace_id} is not the expected tree: 'checkout' > 'publish charge': kind INTERNAL, not PRODUCER"
        )
        assert "expected (exactly):\n'checkout'\n└── 'publish charge' PRODUCER\n" in message
        assert f"actual, as `tracehook trace` prints it:\ntrace {trace_id}  2 spans, 1 services" in message
        assert "└── unit  checkout" in message

    def test_a_late_span_fails_an_exact_match(self, receiver: OtlpReceiver) -> None:
        """The tree matched, then one more span of the trace arrived within the settle time: not exact."""
        with trace_span("checkout") as root:
            parent = trace.set_span_in_context(root)
        late = threading.Timer(0.05, lambda: trace_span("duplicate", context=parent).__enter__().end())
        late.start()
        try:
            with pytest.raises(AssertionError, match="1 more child"):
                assert_trace(receiver, root, span("checkout"), settle=3.0, timeout=10)
        finally:
            late.join()

    def test_loose_passes_with_other_spans(self, receiver: OtlpReceiver) -> None:
        """exact=False: spans the tree does not name do not matter."""
        with trace_span("checkout") as root:
            with trace_span("redis GET"):
                pass
            with trace_span("publish charge"):
                pass
        assert_trace(receiver, root, span("checkout")("publish charge"), exact=False)

    def test_parent_never_arrives(self, receiver: OtlpReceiver) -> None:
        """wait_for_trace: a span whose parent is not received keeps the trace incomplete until the deadline."""
        with trace_span("child", context=remote_parent()):
            pass
        with pytest.raises(
            AssertionError, match=r"not complete after 0.5s \(the parent of 'child' not received\)"
        ):
            wait_for_trace(receiver, TRACE, timeout=0.5)


class TestHelpers:
    """One trace, one root, no card number: each fails naming the spans at fault."""

    def test_no_card_numbers(self) -> None:
        """A card in an attribute, an event or the status is found and shown masked; ids and masked
        numbers are not cards."""
        clean = received(
            "pay", attributes={"order_id": 4111111111111111, "card": "**** **** **** 1111", "amount": 4200}
        )
        assert_no_card_numbers([clean])
        leaky = [
            received("pay", attributes={"payment": {"card": CARD}}),
            received("charge", events=[("charged", {"note": f"card {CARD} ok"})], status_message=CARD),
        ]
        with pytest.raises(AssertionError) as failure:
            assert_no_card_numbers(leaky)
        assert [
            "card numbers in spans:",
            "  span 'pay' attributes payment.card: **** **** **** 1111",
            "  span 'charge' status: **** **** **** 1111",
            "  span 'charge' events note: **** **** **** 1111",
        ] == str(failure.value).splitlines()

    def test_one_root(self) -> None:
        """The root comes back; a span whose parent is missing is a second root."""
        assert "checkout" == assert_one_root(CHECKOUT).name
        with pytest.raises(
            AssertionError, match=r"expected one root span, got 2: 'checkout' \(svc\), 'late'"
        ):
            assert_one_root([*CHECKOUT, row("late", "7", "6")])

    def test_one_trace(self) -> None:
        """The trace id comes back; spans of two traces are listed by trace."""
        assert TRACE == assert_one_trace(CHECKOUT)
        with pytest.raises(
            AssertionError, match=f"got 2 traces:\n  {TRACE}: .*\n  {OTHER_TRACE}: \\['stray'\\]"
        ):
            assert_one_trace([*CHECKOUT, row("stray", "8", trace_id=OTHER_TRACE)])

    def test_trace_id_of(self) -> None:
        """A trace is its id in any case, its integer, or any span of it."""
        assert TRACE == trace_id_of(TRACE.upper()) == trace_id_of(int(TRACE, 16)) == trace_id_of(CHECKOUT[0])
        with pytest.raises(TypeError, match="expected a trace id or a span"):
            trace_id_of(1.5)

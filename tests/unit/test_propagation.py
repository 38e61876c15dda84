"""inject_headers / extract_context: W3C trace context and baggage through any carrier."""

from __future__ import annotations

from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import by_name
from tracing import extract_context, inject_headers, trace_span


class TestRoundTrip:
    """A span started from extracted headers continues the injecting span's trace."""

    def test_inject_then_extract(self, span_exporter: InMemorySpanExporter) -> None:
        """traceparent and baggage cross the carrier; the remote child has the right parent."""
        ctx = baggage.set_baggage("tenant", "acct_4821")
        token = context.attach(ctx)
        try:
            with trace_span("sender"):
                headers = inject_headers()
        finally:
            context.detach(token)
        assert headers["traceparent"].startswith("00-")
        assert "tenant=acct_4821" in headers["baggage"]

        remote = extract_context({k.upper(): v.encode() for k, v in headers.items()})
        assert baggage.get_baggage("tenant", remote) == "acct_4821"
        with trace_span("receiver", context=remote):
            pass
        spans = span_exporter.get_finished_spans()
        sender, receiver = by_name(spans, "sender"), by_name(spans, "receiver")
        assert sender.context.trace_id == receiver.context.trace_id
        assert receiver.parent is not None
        assert sender.context.span_id == receiver.parent.span_id

    def test_inject_into_existing_carrier(self, span_exporter: InMemorySpanExporter) -> None:
        """inject_headers adds to the carrier given and returns it."""
        carrier = {"x-own": "1"}
        with trace_span("s"):
            out = inject_headers(carrier)
        assert out is carrier
        assert {"x-own", "traceparent"} <= set(carrier)

    def test_garbage_is_no_parent(self) -> None:
        """A malformed traceparent gives a context without a parent, not an error."""
        ctx = extract_context({"traceparent": "00-zzzz-not-a-trace"})
        assert not trace.get_current_span(ctx).get_span_context().is_valid
        assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid

"""The webhook's objective in one process: what ``record_completion`` records, its setting, and how a
trace shows it (``tracehook trace``, the demo)."""

from __future__ import annotations

import io
import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

from tests.metrics_scrape import Scrape
from tracing import SettingsError, TracingSettings, trace_span
from tracing.metrics import configure_metrics
from tracing.prometheus import metrics_registry, render
from workflows.cli._trace_view import SpanRow, completion_of, render_tree
from workflows.metrics import COMPLETION_BUCKETS_S
from workflows.objective import COMPLETION_MS, OBJECTIVE_MET, OUTCOME, record_completion
from workflows.settings import load_app_settings

COMPLETION = "tracehook_webhook_completion_seconds"


def exposition(*, openmetrics: bool = False) -> Scrape:
    body, _ = render(metrics_registry(), "application/openmetrics-text" if openmetrics else None)
    return Scrape.parse(body.decode(), openmetrics=openmetrics)


@pytest.fixture
def metrics(settings: TracingSettings) -> TracingSettings:
    """Metrics set up in this process."""
    assert configure_metrics(settings)
    return settings


class TestRecordCompletion:
    """Receipt → done goes to the histogram, with the span as exemplar, and onto the span itself."""

    def test_completed_within_the_objective(
        self, metrics: TracingSettings, span_exporter: InMemorySpanExporter
    ) -> None:
        """Now minus the receipt, once, under the folded event type; the same figure on the span."""
        with trace_span("run process_webhook_event") as span:
            before = time.time()
            seconds = record_completion("lease.renewed", "completed", before - 0.4, 30.0)
            after = time.time()
        assert seconds is not None
        assert 0.4 <= seconds <= after - before + 0.4
        scraped = exposition(openmetrics=True)
        assert 1 == scraped.value(f"{COMPLETION}_count", event_type="lease.renewed", outcome="completed")
        assert seconds == pytest.approx(scraped.value(f"{COMPLETION}_sum"))
        assert 0 == scraped.value(f"{COMPLETION}_bucket", le="0.3")
        assert 1 == scraped.value(f"{COMPLETION}_bucket", le="0.5")
        assert {format(span.get_span_context().trace_id, "032x")} == scraped.exemplar_trace_ids(
            f"{COMPLETION}_bucket"
        )
        (finished,) = span_exporter.get_finished_spans()
        attributes = dict(finished.attributes or {})
        assert round(seconds * 1000, 3) == attributes[COMPLETION_MS]
        assert ("completed", True) == (attributes[OUTCOME], attributes[OBJECTIVE_MET])

    @pytest.mark.parametrize(
        ("outcome", "age_s", "met"),
        [("completed", 31.0, False), ("dead_lettered", 1.0, False), ("completed", 29.0, True)],
    )
    def test_objective_met(
        self,
        metrics: TracingSettings,
        span_exporter: InMemorySpanExporter,
        outcome: str,
        age_s: float,
        met: bool,
    ) -> None:
        """Met only when completed within the objective: a dead letter misses it however fast."""
        with trace_span("run"):
            record_completion("payment.failed", outcome, time.time() - age_s, 30.0)
        (finished,) = span_exporter.get_finished_spans()
        assert met is dict(finished.attributes or {})[OBJECTIVE_MET]
        assert 1 == exposition().value(f"{COMPLETION}_count", event_type="payment.failed", outcome=outcome)

    def test_event_type_folded(self, metrics: TracingSettings) -> None:
        """An event type nobody knows is ``unknown``: a payload cannot make label values."""
        record_completion("x" * 500, "dead_lettered", time.time(), 30.0)
        assert {"unknown"} == exposition().label_values(f"{COMPLETION}_count", "event_type")

    def test_clock_behind_counts_as_zero(self, metrics: TracingSettings) -> None:
        """A receipt after now (an intake's clock ahead of the worker's) is 0, not a negative value."""
        assert 0.0 == record_completion("lease.renewed", "completed", time.time() + 5, 30.0)
        assert 1 == exposition().value(f"{COMPLETION}_bucket", le="0.01")

    @pytest.mark.parametrize("received_at", [None, "1700000000.0", True, float("nan"), float("inf")])
    def test_no_receipt_records_nothing(
        self, metrics: TracingSettings, span_exporter: InMemorySpanExporter, received_at: object
    ) -> None:
        """A task without a usable receipt (an older intake's, one sent by hand) is not measured."""
        with trace_span("run"):
            assert record_completion("lease.renewed", "completed", received_at, 30.0) is None
        assert 0 == exposition().value(f"{COMPLETION}_count")
        (finished,) = span_exporter.get_finished_spans()
        assert COMPLETION_MS not in (finished.attributes or {})


class TestObjectiveSetting:
    """WEBHOOK_OBJECTIVE_S: 30 s unless set, and one of the histogram's bucket bounds."""

    def test_default_and_value(self) -> None:
        """30 by default; another bucket bound is taken."""
        assert 30.0 == load_app_settings({}).webhook_objective_s
        assert 10.0 == load_app_settings({"WEBHOOK_OBJECTIVE_S": "10"}).webhook_objective_s
        assert 30.0 in COMPLETION_BUCKETS_S

    @pytest.mark.parametrize("value", ["12", "0", "-30", "soon"])
    def test_not_a_bucket_bound(self, value: str) -> None:
        """A value no bucket ends at could not be counted by an alert: refused, naming the variable."""
        with pytest.raises(SettingsError, match=r"^WEBHOOK_OBJECTIVE_S="):
            load_app_settings({"WEBHOOK_OBJECTIVE_S": value})


def row(name: str, span_id: str, parent: str, start: int, end: int, **attributes: object) -> SpanRow:
    return SpanRow("ab" * 16, span_id, parent, name, "svc", "INTERNAL", start, end, "UNSET", "", attributes)


def rendered(rows: list[SpanRow]) -> list[str]:
    out = io.StringIO()
    render_tree(rows, Console(file=out, width=200, color_system=None))
    return out.getvalue().splitlines()


class TestTraceShowsIt:
    """The trace tree names the figure its last attempt recorded, under its header."""

    def test_last_attempt_figure(self) -> None:
        """The run span that recorded receipt → done gives the line under the header, as recorded."""
        rows = [
            row("webhook.lease.renewed", "01" * 8, "", 0, 5_000_000),
            row("run", "02" * 8, "01" * 8, 10_000_000, 20_000_000),
            row(
                "run",
                "03" * 8,
                "01" * 8,
                300_000_000,
                1_240_000_000,
                **{COMPLETION_MS: 1234.567, OUTCOME: "completed", OBJECTIVE_MET: True},
            ),
        ]
        done = completion_of(rows)
        assert done is not None
        assert (1234.567, "completed", True) == (done.ms, done.outcome, done.objective_met)
        lines = rendered(rows)
        assert lines[0].startswith(f"trace {'ab' * 16}  3 spans")
        assert "receipt → done 1234.6 ms: completed, objective met" == lines[1].strip()

    def test_missed(self) -> None:
        """A dead letter reads as missed."""
        rows = [
            row(
                "run",
                "02" * 8,
                "",
                0,
                1,
                **{COMPLETION_MS: 9.0, OUTCOME: "dead_lettered", OBJECTIVE_MET: False},
            )
        ]
        assert "receipt → done 9.0 ms: dead_lettered, objective missed" == rendered(rows)[1].strip()

    def test_not_done(self) -> None:
        """No attempt recorded it yet (or an older worker's trace): no such line."""
        rows = [row("webhook.lease.renewed", "01" * 8, "", 0, 5_000_000)]
        assert completion_of(rows) is None
        assert not any("receipt" in line for line in rendered(rows))

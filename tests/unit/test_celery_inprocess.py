"""instrument_celery in one process: eager mode, robustness, no per-task state left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import by_name
from tests.integration import celery_app as tasks
from tracing import CeleryInstrumentation, instrument_celery, trace_span


@pytest.fixture
def eager() -> Iterator[CeleryInstrumentation]:
    """The test app in eager mode (tasks run inline, no broker)."""
    tasks.app.conf.task_always_eager = True
    try:
        yield instrument_celery(tasks.app)
    finally:
        tasks.app.conf.task_always_eager = False


class TestEagerMode:
    """task_always_eager still gives one trace: the run span is a child of the caller."""

    def test_one_trace(self, span_exporter: InMemorySpanExporter, eager: CeleryInstrumentation) -> None:
        """caller → run → the task's own span."""
        with trace_span("caller"):
            assert 5 == tasks.add.delay(2, 3).get()
        spans = span_exporter.get_finished_spans()
        caller, run, inner = (
            by_name(spans, "caller"),
            by_name(spans, f"run {tasks.add.name}"),
            by_name(spans, "add.inner"),
        )
        assert run.parent is not None
        assert inner.parent is not None
        assert caller.context.span_id == run.parent.span_id
        assert run.context.span_id == inner.parent.span_id
        assert {caller.context.trace_id} == {s.context.trace_id for s in spans}
        assert run.attributes["celery.eager"] is True  # type: ignore[index]

    def test_instrument_is_idempotent(self, eager: CeleryInstrumentation) -> None:
        """Instrumenting the same app twice returns the first instrumentation."""
        assert eager is instrument_celery(tasks.app)


class TestRobustness:
    """Instrumentation never breaks a task, and leaves nothing behind."""

    def test_internal_error_does_not_break_the_task(
        self,
        span_exporter: InMemorySpanExporter,
        eager: CeleryInstrumentation,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A failure inside our prerun handler is logged; the task runs and returns."""

        def broken(*_: object, **__: object) -> None:
            raise RuntimeError("instrumentation bug")

        monkeypatch.setattr(eager, "_run_attributes", broken)
        assert 9 == tasks.add.delay(4, 5).get()
        assert 0 == eager.running_tasks

    def test_no_state_survives_tasks(
        self, span_exporter: InMemorySpanExporter, eager: CeleryInstrumentation
    ) -> None:
        """After 2,000 tasks (some failing, some retrying) no span or context is held."""
        for i in range(1_000):
            tasks.add.delay(i, i)
            with pytest.raises(ValueError, match="x"):
                tasks.fail.delay("x").get()
        assert 3 == tasks.flaky.delay(3).get()
        assert 0 == eager.running_tasks
        assert 0 == len(eager._running)


class TestStockInstrumentation:
    """A leftover CeleryInstrumentor().instrument() cannot switch the stock instrumentation on beside ours."""

    def test_leftover_call_refused(
        self, span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The call logs why it was ignored; an eager task still has one run span."""
        from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415

        tasks.app.conf.task_always_eager = True
        instrument_celery(tasks.app)
        try:
            CeleryInstrumentor().instrument()
            assert 5 == tasks.add.delay(2, 3).get()
        finally:
            CeleryInstrumentor().uninstrument()
            tasks.app.conf.task_always_eager = False
        assert "CeleryInstrumentor().instrument() ignored" in caplog.text
        names = [span.name for span in span_exporter.get_finished_spans()]
        assert [f"run {tasks.add.name}"] == [name for name in names if "run" in name]

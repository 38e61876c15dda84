"""configure_tracing: resource, idempotence, exporters, fork safety, no span lost at exit."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracing import (
    TracingSettings,
    configure_tracing,
    flush_tracing,
    iter_otlp_json_spans,
    shutdown_tracing,
    trace_span,
)
from tracing.processors import CountingBatchSpanProcessor
from tracing.setup import flush_provider


def _read_spans(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return list(iter_otlp_json_spans(path.read_text().splitlines()))


class TestConfigure:
    """One provider per process, with the service's resource."""

    def test_idempotent(self) -> None:
        """A second call returns the same provider and does not stack processors."""
        exporter = InMemorySpanExporter()
        first = configure_tracing(TracingSettings(exporter="none"), exporter=exporter, batch=False)
        second = configure_tracing(
            TracingSettings(exporter="none"), exporter=InMemorySpanExporter(), batch=False
        )
        assert first is second
        assert trace.get_tracer_provider() is first
        with trace_span("once"):
            pass
        assert len(exporter.get_finished_spans()) == 1

    def test_private_then_global(self) -> None:
        """A provider set up privately (instrument_celery in a producer) becomes global on a later call
        that asks for it, rather than being returned as it is."""
        private = configure_tracing(TracingSettings(exporter="none"), set_global=False)
        assert trace.get_tracer_provider() is not private
        assert configure_tracing() is private
        assert trace.get_tracer_provider() is private

    def test_resource(self) -> None:
        """service name/version/environment, host and process are on every span's resource."""
        exporter = InMemorySpanExporter()
        configure_tracing(
            TracingSettings(service_name="svc", service_version="9.9", environment="prod", exporter="none"),
            exporter=exporter,
            batch=False,
        )
        with trace_span("s"):
            pass
        attrs = exporter.get_finished_spans()[0].resource.attributes
        assert (attrs["service.name"], attrs["service.version"], attrs["deployment.environment.name"]) == (
            "svc",
            "9.9",
            "prod",
        )
        assert attrs["process.pid"] == os.getpid()
        assert attrs["host.name"]

    def test_long_values_truncated(self) -> None:
        """Span limits cut long attribute values."""
        exporter = InMemorySpanExporter()
        configure_tracing(
            TracingSettings(exporter="none", max_attribute_length=64), exporter=exporter, batch=False
        )
        with trace_span("s", attributes={"big": "x" * 1000}):
            pass
        assert len(str(exporter.get_finished_spans()[0].attributes["big"])) == 64  # type: ignore[index]


class TestFileExporter:
    """TRACE_EXPORTER=file:PATH writes OTLP/JSON lines with hex ids."""

    def test_file_lines(self, tmp_path: Path) -> None:
        """Spans land in the file, one export request per line, ids in hex."""
        path = tmp_path / "spans.jsonl"
        configure_tracing(TracingSettings(exporter="file", exporter_path=str(path), service_name="filesvc"))
        with trace_span("parent") as parent, trace_span("child"):
            trace_id = format(parent.get_span_context().trace_id, "032x")
        assert flush_tracing()
        spans = _read_spans(path)
        assert {"parent", "child"} == {s["name"] for s in spans}
        assert {trace_id} == {s["traceId"] for s in spans}
        assert {"filesvc"} == {s["service.name"] for s in spans}
        json.loads(path.read_text().splitlines()[0])


def _child_makes_span(name: str) -> None:
    with trace_span(name):
        pass


def _exit_with_export_thread_count() -> None:
    with trace_span("in-child"):
        pass
    threads = [t for t in threading.enumerate() if t.name.startswith("OtelBatch")]
    for thread in threads:  # processors of earlier tests, already shut down, end at once
        thread.join(0.3)
    os._exit(sum(thread.is_alive() for thread in threads))


class TestForkAndExit:
    """Spans ended before a process exits are exported: forked children and normal exits alike."""

    def test_forked_child_exports_its_spans(self, tmp_path: Path) -> None:
        """A child forked after set-up exports its own spans (and not the parent's twice)."""
        path = tmp_path / "spans.jsonl"
        configure_tracing(TracingSettings(exporter="file", exporter_path=str(path)))
        with trace_span("parent-before-fork"):
            pass
        process = multiprocessing.get_context("fork").Process(target=_child_makes_span, args=("in-child",))
        process.start()
        process.join(30)
        assert process.exitcode == 0
        flush_tracing()
        names = [s["name"] for s in _read_spans(path)]
        assert names.count("in-child") == 1
        assert names.count("parent-before-fork") == 1

    def test_child_has_one_export_thread(self, tmp_path: Path) -> None:
        """A forked child runs one export thread, not the inherited one as well."""
        configure_tracing(TracingSettings(exporter="file", exporter_path=str(tmp_path / "s.jsonl")))
        process = multiprocessing.get_context("fork").Process(target=_exit_with_export_thread_count)
        process.start()
        process.join(30)
        assert 1 == process.exitcode

    def test_normal_exit_flushes(self, tmp_path: Path) -> None:
        """A process that ends a span and exits at once (batch export pending) still exports it."""
        path = tmp_path / "spans.jsonl"
        code = (
            "import tracing\ntracing.configure_tracing()\nwith tracing.trace_span('last-words'):\n    pass\n"
        )
        env = {**os.environ, "TRACE_EXPORTER": f"file:{path}", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        assert [s["name"] for s in _read_spans(path)] == ["last-words"]


class _BlockedExporter(InMemorySpanExporter):
    """An exporter stuck on a backend that does not answer."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.release.wait(10)
        return super().export(spans)


class TestDroppedSpans:
    """Spans dropped because the export queue is full are counted and reported, never silent."""

    def test_drops_counted_and_warned(self, caplog: pytest.LogCaptureFixture) -> None:
        """With the exporter stuck and a queue of 2, the drops are counted and a warning gives the count."""
        exporter = _BlockedExporter()
        processor = CountingBatchSpanProcessor(
            exporter,
            max_queue_size=2,
            max_export_batch_size=1,
            schedule_delay_millis=60_000,
            report_interval_s=3600,
        )
        provider = TracerProvider()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        for i in range(12):
            tracer.start_span(f"s{i}").end()
        assert processor.dropped >= 8
        with caplog.at_level(logging.WARNING, logger="tracing"):
            reported = processor.report_drops()
        assert reported == processor.dropped
        assert f"{reported} span(s) dropped" in caplog.text
        exporter.release.set()
        provider.shutdown()


class _StuckExporter(SpanExporter):
    """An exporter whose export hangs until released, as one to a black-holed endpoint does."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


class TestBoundedFlush:
    """flush_tracing and shutdown_tracing give up about a second after an export sticks, whatever the
    timeout (the SDK's force_flush ignores its own)."""

    def test_flush_gives_up_on_a_stuck_export(self, settings: TracingSettings) -> None:
        """A hanging export: flush_tracing(5.0) returns False after ~1 s, not 5 s or 30 s."""
        stuck = _StuckExporter()
        configure_tracing(settings, exporter=stuck)
        try:
            with trace_span("first"):
                pass
            started = time.monotonic()
            assert not flush_tracing(timeout_s=5.0)
            # Waiting for the export would take the whole 5 s; giving up takes ~1 s, even on a busy machine.
            assert time.monotonic() - started < 4.0
        finally:
            stuck.release.set()

    def test_shutdown_gives_up_on_a_stuck_export(self, settings: TracingSettings) -> None:
        """The same at shutdown: the process is held about a second."""
        stuck = _StuckExporter()
        configure_tracing(settings, exporter=stuck)
        try:
            with trace_span("first"):
                pass
            started = time.monotonic()
            shutdown_tracing(timeout_s=5.0)
            assert time.monotonic() - started < 4.0
        finally:
            stuck.release.set()

    def test_users_provider_flush_is_bounded(self) -> None:
        """flush_provider on a provider that is not tracehook's waits at most its timeout."""
        stuck = _StuckExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(stuck))
        try:
            provider.get_tracer("t").start_span("first").end()
            started = time.monotonic()
            assert not flush_provider(provider, timeout_s=0.5)
            assert time.monotonic() - started < 2.5
        finally:
            stuck.release.set()
            provider.shutdown()

    def test_users_provider_flushed(self) -> None:
        """flush_provider exports what a user's batch processor holds."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
        provider.get_tracer("t").start_span("held").end()
        assert flush_provider(provider, timeout_s=5.0)
        assert ["held"] == [span.name for span in exporter.get_finished_spans()]
        provider.shutdown()

    def test_healthy_flush_exports_everything(self, settings: TracingSettings) -> None:
        """A working exporter: everything is exported and flush_tracing returns True."""
        exporter = InMemorySpanExporter()
        configure_tracing(settings, exporter=exporter)
        for index in range(300):
            with trace_span(f"span-{index}"):
                pass
        assert flush_tracing(timeout_s=5.0)
        assert 300 == len(exporter.get_finished_spans())

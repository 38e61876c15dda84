"""configure_logging: JSON fields, trace correlation, stdlib bridge, mirroring to span events."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import CapturedLogs
from tracing import TracingSettings, configure_logging, trace_span

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


class TestFields:
    """Each line is one JSON object with DESIGN.md step 7's fields."""

    def test_fields_outside_a_span(self, captured_logs: CapturedLogs) -> None:
        """timestamp, level, event, logger and service; no trace ids when no span is active."""
        structlog.get_logger("workflows.engine").info("workflow.started", event_id="evt_1")
        (line,) = captured_logs.lines
        assert {"timestamp", "level", "event", "logger", "service", "event_id"} <= set(line)
        assert (line["level"], line["event"], line["logger"], line["service"]) == (
            "info",
            "workflow.started",
            "workflows.engine",
            "test-service",
        )
        assert "trace_id" not in line

    def test_ids_equal_the_active_span(
        self, span_exporter: InMemorySpanExporter, captured_logs: CapturedLogs
    ) -> None:
        """trace_id/span_id are the active span's, as 32/16 lowercase hex, for structlog and stdlib lines."""
        with trace_span("outer"), trace_span("inner") as span:
            structlog.get_logger("ours").info("hello")
            logging.getLogger("celery.worker").info("from %s", "stdlib")
            ctx = span.get_span_context()
        lines = captured_logs.lines
        assert len(lines) == 2
        for line in lines:
            assert HEX32.match(line["trace_id"])
            assert HEX16.match(line["span_id"])
            assert (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")) == (
                line["trace_id"],
                line["span_id"],
            )
        assert (lines[1]["logger"], lines[1]["event"]) == ("celery.worker", "from stdlib")

    def test_contextvars_bound_and_cleared(self, captured_logs: CapturedLogs) -> None:
        """Fields bound with structlog's contextvars appear until cleared."""
        structlog.contextvars.bind_contextvars(task_id="t-1", event_id="evt_1")
        structlog.get_logger().info("one")
        logging.getLogger("lib").warning("two")
        structlog.contextvars.clear_contextvars()
        structlog.get_logger().info("three")
        first, second, third = captured_logs.lines
        assert (first["task_id"], second["task_id"]) == ("t-1", "t-1")
        assert "task_id" not in third

    def test_exception_is_rendered(self, captured_logs: CapturedLogs) -> None:
        """logger.exception writes the traceback into the line."""
        try:
            raise ValueError("bad")
        except ValueError:
            structlog.get_logger().exception("failed")
        (line,) = captured_logs.lines
        assert "ValueError: bad" in line["exception"]


class TestLevels:
    """LOG_LEVEL sets the level for every logger."""

    def test_level_filters_both_paths(self) -> None:
        """At WARNING, info lines from structlog and stdlib are dropped."""
        stream = io.StringIO()
        configure_logging(TracingSettings(exporter="none", log_level="WARNING"), stream=stream)
        structlog.get_logger().info("dropped")
        logging.getLogger("x").info("dropped too")
        structlog.get_logger().warning("kept")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["event"] for line in lines] == ["kept"]

    def test_bad_level(self) -> None:
        """An unknown level is refused."""
        with pytest.raises(ValueError, match="LOUD"):
            configure_logging(TracingSettings(exporter="none"), level="LOUD", stream=io.StringIO())

    def test_reconfigure_does_not_stack_handlers(self) -> None:
        """Configuring twice still writes each stdlib line once."""
        stream = io.StringIO()
        configure_logging(TracingSettings(exporter="none"), stream=stream)
        configure_logging(TracingSettings(exporter="none"), stream=stream)
        logging.getLogger("x").warning("once")
        assert len(stream.getvalue().splitlines()) == 1

    def test_console_format(self) -> None:
        """LOG_FORMAT=console writes human lines, not JSON."""
        stream = io.StringIO()
        configure_logging(TracingSettings(exporter="none", log_format="console"), stream=stream)
        structlog.get_logger().info("for humans", k="v")
        text = stream.getvalue()
        assert "for humans" in text
        assert not text.startswith("{")


class TestMirroring:
    """Lines at INFO and above inside a recording span become events of that span."""

    def test_info_mirrored_debug_not(
        self, span_exporter: InMemorySpanExporter, captured_logs: CapturedLogs
    ) -> None:
        """INFO/WARNING lines become span events with their fields; DEBUG lines do not."""
        with trace_span("step"):
            structlog.get_logger("w").debug("noise")
            structlog.get_logger("w").info("workflow.started", event_id="evt_1", nested={"a": 1})
            logging.getLogger("lib").warning("careful")
        (span,) = span_exporter.get_finished_spans()
        assert [e.name for e in span.events] == ["workflow.started", "careful"]
        first = dict(span.events[0].attributes or {})
        assert (first["log.severity"], first["event_id"], first["nested.a"], first["log.logger"]) == (
            "INFO",
            "evt_1",
            1,
            "w",
        )
        assert len(captured_logs.lines) == 3

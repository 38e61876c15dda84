"""configure_logging: JSON fields, trace correlation, stdlib bridge, mirroring to span events."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import CapturedLogs
from tracing import TracingSettings, configure_logging, trace_span

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


class TestFields:
    """Each line is one JSON object with the fields of docs/design.md, step 7."""

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


CARD = "4111 1111 1111 1111"
MASKED = "**** **** **** 1111"


class ListHandler(logging.Handler):
    """A user's own handler: keeps every record and the text its formatter makes of it."""

    def __init__(self, fmt: str = "%(levelname)s|%(name)s|%(trace_id)s|%(message)s") -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter(fmt, defaults={"trace_id": "-"}))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.texts.append(self.format(record))


@contextlib.contextmanager
def lonely_logger(handler: logging.Handler) -> Iterator[logging.Logger]:
    """A logger that does not propagate, with ``handler`` as its only handler."""
    lonely = logging.getLogger("lonely")
    lonely.propagate = False
    lonely.addHandler(handler)
    try:
        yield lonely
    finally:
        lonely.removeHandler(handler)
        lonely.propagate = True


@pytest.fixture
def user_handler() -> Iterator[ListHandler]:
    """A handler the user adds to the root logger after configure_logging (removed afterwards)."""
    handler = ListHandler()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


class TestRootHandlers:
    """Every line, structlog's and stdlib's, goes through the root logger's handlers, rendered once."""

    def test_structlog_line_reaches_a_user_handler(
        self, span_exporter: InMemorySpanExporter, captured_logs: CapturedLogs, user_handler: ListHandler
    ) -> None:
        """One record per structlog line, its message the scrubbed line; trace ids as record attributes."""
        with trace_span("step") as span:
            structlog.get_logger("user.tasks").info("charged", card=CARD, order_id="ord_1")
            ctx = span.get_span_context()
        (record,) = user_handler.records
        (line,) = captured_logs.lines
        assert ("user.tasks", logging.INFO) == (record.name, record.levelno)
        assert line == json.loads(record.getMessage())
        assert (MASKED, "ord_1") == (line["card"], line["order_id"])
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        assert (trace_id, span_id) == (record.trace_id, record.span_id)  # type: ignore[attr-defined]
        assert (trace_id, span_id) == (line["trace_id"], line["span_id"])
        assert CARD not in captured_logs.text + "".join(user_handler.texts)

    def test_rendered_once(self, captured_logs: CapturedLogs, user_handler: ListHandler) -> None:
        """tracehook's own stream gets the line as structlog rendered it, not a line wrapping a line."""
        structlog.get_logger("ours").warning("once", n=1)
        (text,) = captured_logs.text.splitlines()
        assert text == user_handler.records[0].getMessage()
        assert {"event", "n", "level", "logger", "timestamp", "service"} == set(json.loads(text))

    def test_exception_rendered_in_the_line_only(
        self, captured_logs: CapturedLogs, user_handler: ListHandler
    ) -> None:
        """A structlog exception's traceback is in the scrubbed line; the record carries no exc_info."""
        try:
            raise ValueError(f"declined {CARD}")
        except ValueError:
            structlog.get_logger().exception("failed")
        (record,) = user_handler.records
        assert record.exc_info is None
        assert f"ValueError: declined {MASKED}" in json.loads(record.getMessage())["exception"]
        assert CARD not in user_handler.texts[0]

    def test_stdlib_logger_level_and_filters_apply(
        self, captured_logs: CapturedLogs, user_handler: ListHandler
    ) -> None:
        """A stdlib logger's level and filters drop structlog lines of the same name everywhere."""
        noisy = logging.getLogger("noisy")
        noisy.setLevel(logging.WARNING)
        quiet = logging.getLogger("filtered")
        quiet.addFilter(lambda record: False)
        try:
            structlog.get_logger("noisy").info("dropped")
            structlog.get_logger("filtered").warning("dropped too")
            structlog.get_logger("noisy").warning("kept")
        finally:
            noisy.setLevel(logging.NOTSET)
            quiet.filters.clear()
        assert ["kept"] == [line["event"] for line in captured_logs.lines]
        assert ["noisy"] == [record.name for record in user_handler.records]

    def test_reconfigure_writes_each_structlog_line_once(self, user_handler: ListHandler) -> None:
        """Configuring twice still hands each structlog line once to each handler."""
        stream = io.StringIO()
        configure_logging(TracingSettings(exporter="none"), stream=stream)
        configure_logging(TracingSettings(exporter="none"), stream=stream)
        structlog.get_logger().warning("once")
        assert (1, 1) == (len(stream.getvalue().splitlines()), len(user_handler.records))


class TestStdlibScrubbing:
    """Stdlib records are scrubbed before any handler sees them, whoever added the handler and when."""

    def test_message_and_arguments(self, captured_logs: CapturedLogs, user_handler: ListHandler) -> None:
        """A card number in the message or its arguments is masked for a user's handler too."""
        logging.getLogger("x").warning("card %s", CARD.replace(" ", ""))
        logging.getLogger("x").warning(f"ssn 123-45-6789 and {CARD}")
        assert ["card ************1111", f"ssn ***-**-6789 and {MASKED}"] == [
            record.getMessage() for record in user_handler.records
        ]
        assert ["card ************1111", f"ssn ***-**-6789 and {MASKED}"] == [
            line["event"] for line in captured_logs.lines
        ]

    def test_extra_values(self, captured_logs: CapturedLogs, user_handler: ListHandler) -> None:
        """Values given as extra={...} are masked on the record, and redacted under a sensitive key."""
        logging.getLogger("x").warning("paid", extra={"card": CARD, "api_key": "sk_live_1", "order": "o_1"})
        (record,) = user_handler.records
        assert (MASKED, "[REDACTED]", "o_1") == (record.card, record.api_key, record.order)  # type: ignore[attr-defined]
        assert CARD not in captured_logs.text

    def test_handler_added_later(self, captured_logs: CapturedLogs) -> None:
        """A handler added after configure_logging, to a logger that does not propagate, is covered."""
        handler = ListHandler()
        with lonely_logger(handler) as lonely:
            lonely.error("paid with %s", CARD)
        assert [f"ERROR|lonely|-|paid with {MASKED}"] == handler.texts

    def test_exception_text(self, captured_logs: CapturedLogs, user_handler: ListHandler) -> None:
        """The traceback a user's formatter appends is scrubbed; the exception itself is left alone."""
        error = ValueError(f"declined {CARD}")
        try:
            raise error
        except ValueError:
            logging.getLogger("x").exception("failed")
        (text,) = user_handler.texts
        assert f"ValueError: declined {MASKED}" in text
        assert f"ValueError: declined {MASKED}" in captured_logs.lines[0]["exception"]
        assert CARD not in text + captured_logs.text
        assert (f"declined {CARD}",) == error.args

    def test_unformattable_message(
        self, captured_logs: CapturedLogs, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """When a message cannot be formatted, the stdlib's error report shows its arguments masked."""
        # Out of reach of pytest's own handler on the root logger, which raises on a bad message.
        with lonely_logger(logging.StreamHandler(io.StringIO())) as lonely:
            lonely.warning("card %d", CARD)
        err = capsys.readouterr().err
        assert f"Arguments: ('{MASKED}',)" in err
        assert CARD not in err

    def test_clean_record_untouched(self, captured_logs: CapturedLogs, user_handler: ListHandler) -> None:
        """A record with nothing to mask keeps its template and arguments (grouping by template works)."""
        logging.getLogger("x").info("order %s of %d", "ord_1", 3)
        (record,) = user_handler.records
        assert ("order %s of %d", ("ord_1", 3)) == (record.msg, record.args)

    def test_trace_ids_on_records(
        self, span_exporter: InMemorySpanExporter, captured_logs: CapturedLogs, user_handler: ListHandler
    ) -> None:
        """Stdlib records made inside a span carry its ids for a user's formatter; outside, none."""
        logging.getLogger("x").info("outside")
        with trace_span("step") as span:
            logging.getLogger("x").info("inside")
            trace_id = format(span.get_span_context().trace_id, "032x")
        assert ["INFO|x|-|outside", f"INFO|x|{trace_id}|inside"] == user_handler.texts

    def test_not_correlated(self, span_exporter: InMemorySpanExporter, user_handler: ListHandler) -> None:
        """With correlate=False no record carries trace ids."""
        configure_logging(TracingSettings(exporter="none"), stream=io.StringIO(), correlate=False)
        with trace_span("step"):
            logging.getLogger("x").info("stdlib")
            structlog.get_logger("y").info("structlog")
        assert [False, False] == [hasattr(record, "trace_id") for record in user_handler.records]


class TestOpenTelemetryLoggingHandler:
    """OpenTelemetry's LoggingHandler on the root logger gets every line, scrubbed, in the span's trace."""

    def test_both_kinds_of_line(
        self, span_exporter: InMemorySpanExporter, captured_logs: CapturedLogs
    ) -> None:
        """A structlog and a stdlib line become two log records with masked bodies and the span's ids."""
        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider()
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        with pytest.warns(DeprecationWarning, match="LoggingHandler"):
            handler = LoggingHandler(logger_provider=provider)
        logging.getLogger().addHandler(handler)
        try:
            with trace_span("step") as span:
                structlog.get_logger("user.tasks").info("charged", card=CARD)
                logging.getLogger("user.lib").warning("card on file %s", CARD)
                ctx = span.get_span_context()
        finally:
            logging.getLogger().removeHandler(handler)
            provider.shutdown()
        records = [data.log_record for data in exporter.get_finished_logs()]
        assert 2 == len(records)
        assert MASKED == json.loads(str(records[0].body))["card"]
        assert f"card on file {MASKED}" == records[1].body
        assert [(ctx.trace_id, ctx.span_id)] * 2 == [(r.trace_id, r.span_id) for r in records]
        assert CARD not in repr([(r.body, dict(r.attributes or {})) for r in records])

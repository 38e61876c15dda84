"""Stdlib log records scrubbed, and given the current span's ids, as they are made: for every handler.

A log record factory (``logging.setLogRecordFactory``) wraps whatever factory is in place. Scrubbing when
a record is made, rather than in a formatter, covers every handler in the process, whoever added it and
when: a user's file handler, Sentry, OpenTelemetry's ``LoggingHandler``. A record with nothing to mask is
left as it was (template and arguments kept); one with something to mask gets its message masked and
formatted, its arguments emptied.

Lines structlog has already rendered and scrubbed come as :class:`RenderedLine` messages and pass as
they are.

Values given as ``extra={...}`` are set on the record by ``Logger.makeRecord`` after the factory has
run, so that method is wrapped too (at class level, as sentry-python wraps ``Logger.callHandlers``):
OpenTelemetry's ``LoggingHandler`` exports extras as attributes, and a formatter may print them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id

from tracing.scrubbing import scrub_text, scrub_value

__all__ = ["RenderedLine", "install_record_factory", "uninstall_record_factory"]

_TRACEBACKS: Final = logging.Formatter()
_correlate = True


class RenderedLine(str):
    """A log line structlog has rendered and scrubbed: the factory and tracehook's handler pass it on."""

    __slots__ = ()


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        text = record.getMessage()
    except Exception:  # the handler reports a bad format string with msg and args: scrub those
        record.msg = scrub_value("msg", record.msg)
        record.args = scrub_value("args", record.args)
        return
    clean = scrub_text(text)
    if clean != text:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None:
        text = _TRACEBACKS.formatException(record.exc_info)
        clean = scrub_text(text)
        if clean != text:
            # Handlers that read the exception itself (OpenTelemetry's exception.message, Sentry) would see
            # it unmasked: they get the masked traceback text instead, which formatters append as usual.
            record.exc_info, record.exc_text = None, clean
    if record.stack_info:
        record.stack_info = scrub_text(record.stack_info)


class _RecordFactory:
    """Wraps the log record factory: stdlib records are scrubbed, and given the span's ids, when made."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        if type(record.msg) is RenderedLine:
            return record
        if _correlate:
            ctx = trace.get_current_span().get_span_context()
            if ctx.is_valid:
                record.trace_id = format_trace_id(ctx.trace_id)
                record.span_id = format_span_id(ctx.span_id)
        _scrub_record(record)
        return record


_factory: _RecordFactory | None = None
_make_record: Callable[..., logging.LogRecord] | None = None


def _scrubbing_make_record(make_record: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def makeRecord(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:  # noqa: N802
        record = make_record(self, *args, **kwargs)
        extra = kwargs.get("extra") if len(args) < 9 else args[8]  # its 9th parameter
        if extra:
            fields = record.__dict__
            for key in extra:
                value = fields.get(key)
                clean = scrub_value(key, value)
                if clean is not value:
                    fields[key] = clean
        return record

    makeRecord.__wrapped__ = make_record  # type: ignore[attr-defined]
    return makeRecord


def install_record_factory(*, correlate: bool) -> None:
    """Put the scrubbing factory on top, once per process; ``correlate`` adds ``trace_id``/``span_id``."""
    global _factory, _correlate  # noqa: PLW0603  # one record factory per process
    _correlate = correlate
    current = logging.getLogRecordFactory()
    if current is _factory:
        return
    # Not ours on top: first call, or someone set a factory since (wrapping ours, or replacing it). Wrap
    # what is there; scrubbing twice changes nothing.
    _factory = _RecordFactory(current)
    logging.setLogRecordFactory(_factory)
    _wrap_make_record()


def _wrap_make_record() -> None:
    global _make_record  # noqa: PLW0603  # one wrapper per process
    if _make_record is None:
        _make_record = logging.Logger.makeRecord
        logging.Logger.makeRecord = _scrubbing_make_record(_make_record)  # type: ignore[method-assign]


def uninstall_record_factory() -> None:
    """Put back the factory ours wrapped, if ours is still on top."""
    global _factory  # noqa: PLW0603  # one record factory per process
    if _factory is not None and logging.getLogRecordFactory() is _factory:
        logging.setLogRecordFactory(_factory.inner)
    _factory = None
    global _make_record  # noqa: PLW0603
    if _make_record is not None:
        logging.Logger.makeRecord = _make_record  # type: ignore[method-assign]
        _make_record = None

"""Structured logs correlated with traces: every line, structlog's and stdlib's, through the root's handlers.

A structlog line runs through structlog's processors once (contextvars, level, logger name, timestamp,
service, ``trace_id``/``span_id`` of the current span, scrubbing, mirroring into the span, rendering) and
then becomes one stdlib record of the logger of the same name, whose message is the rendered line
(structlog's "rendering within structlog" set-up). That logger's level and filters apply, and the record
propagates to the root logger's handlers like any other: tracehook's own handler writes it as it is, a
user's file handler, Sentry or OpenTelemetry's ``LoggingHandler`` get it too.

Stdlib records (Celery's, uvicorn's, a library's) are scrubbed as they are made (``tracing._log_records``),
so every handler sees them scrubbed, whoever added it and when; inside a span they carry ``trace_id`` and
``span_id`` as attributes, for a user's formatter. tracehook's handler renders them with the same
processors as structlog lines. Lines at INFO and above written inside a recording span are also added to
that span as events, so Jaeger shows them in place.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Final

import structlog
from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id
from structlog.typing import EventDict, Processor, WrappedLogger

from tracing._log_records import RenderedLine, install_record_factory, uninstall_record_factory
from tracing.scrubbing import scrub_text, scrub_value
from tracing.settings import TracingSettings, load_settings
from tracing.spans import flatten_attributes

__all__ = [
    "add_trace_context",
    "configure_logging",
    "get_logger",
    "mirror_to_span",
    "reset_logging",
    "scrub_event",
]

_MIRROR_LEVELS: Final = frozenset({"info", "warning", "error", "critical", "exception"})
_NOT_MIRRORED: Final = frozenset({"event", "timestamp", "trace_id", "span_id", "level", "logger", "service"})
_HANDLER_NAME: Final = "tracehook"
_LEVELS: Final = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
# structlog's method names (after its own aliasing) as stdlib levels.
_METHOD_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` (32 hex) and ``span_id`` (16 hex) of the current span, unless already given."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        if "trace_id" not in event_dict:
            event_dict["trace_id"] = format_trace_id(ctx.trace_id)
        if "span_id" not in event_dict:
            event_dict["span_id"] = format_span_id(ctx.span_id)
    return event_dict


# Fields the pipeline itself adds: never secrets, and a timestamp looks like a run of digits.
_OWN_FIELDS: Final = frozenset({"timestamp", "level", "logger", "service", "trace_id", "span_id"})


def scrub_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Redact sensitive keys and mask card numbers and SSNs in every value of the line."""
    for key, value in event_dict.items():
        if key in _OWN_FIELDS or key.startswith("_"):
            continue
        if key == "event":
            if isinstance(value, str):
                event_dict[key] = scrub_text(value)
            continue
        new = scrub_value(key, value)
        if new is not value:
            event_dict[key] = new
    return event_dict


def mirror_to_span(_: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add lines at INFO and above to the current recording span as an event named by the line."""
    level = event_dict.get("level", method_name)
    if level not in _MIRROR_LEVELS:
        return event_dict
    span = trace.get_current_span()
    if not span.is_recording():
        return event_dict
    attributes: dict[str, Any] = {"log.severity": str(level).upper()}
    logger_name = event_dict.get("logger")
    if logger_name:
        attributes["log.logger"] = str(logger_name)
    for key, value in event_dict.items():
        if key in _NOT_MIRRORED or key.startswith("_"):
            continue
        attributes[key] = value
    span.add_event(str(event_dict.get("event", "log")), flatten_attributes(attributes))
    return event_dict


def _add_service(service: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


# -- structlog lines as stdlib records ---------------------------------------------------------------


class _StdlibLogger:
    """structlog's wrapped logger: each rendered line becomes one record of the stdlib logger of that name."""

    __slots__ = ("name", "stdlib")

    def __init__(self, name: str) -> None:
        self.name = name
        self.stdlib = logging.getLogger(name)

    def _handle(self, level: int, line: str, trace_id: str | None, span_id: str | None) -> None:
        # No caller lookup (the stdlib's findCaller walks the stack on every line): structlog lines carry
        # no file and line number, as with logging._srcfile = None.
        logger = self.stdlib
        record = logger.makeRecord(self.name, level, "(unknown file)", 0, RenderedLine(line), (), None)
        if trace_id is not None:
            record.trace_id = trace_id
            record.span_id = span_id
        logger.handle(record)

    def debug(self, line: str, trace_id: str | None = None, span_id: str | None = None) -> None:
        """A DEBUG line."""
        self._handle(logging.DEBUG, line, trace_id, span_id)

    def info(self, line: str, trace_id: str | None = None, span_id: str | None = None) -> None:
        """An INFO line."""
        self._handle(logging.INFO, line, trace_id, span_id)

    def warning(self, line: str, trace_id: str | None = None, span_id: str | None = None) -> None:
        """A WARNING line."""
        self._handle(logging.WARNING, line, trace_id, span_id)

    def error(self, line: str, trace_id: str | None = None, span_id: str | None = None) -> None:
        """An ERROR line."""
        self._handle(logging.ERROR, line, trace_id, span_id)

    def critical(self, line: str, trace_id: str | None = None, span_id: str | None = None) -> None:
        """A CRITICAL line."""
        self._handle(logging.CRITICAL, line, trace_id, span_id)

    msg = info
    warn = warning
    exception = error
    fatal = critical


class _StdlibLoggerFactory:
    def __init__(self) -> None:
        self._loggers: dict[str, _StdlibLogger] = {}

    def __call__(self, *args: Any) -> _StdlibLogger:
        name = str(args[0]) if args else "app"
        logger = self._loggers.get(name)
        if logger is None:
            logger = self._loggers[name] = _StdlibLogger(name)
        return logger


def _drop_if_disabled(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Drop the line before any work when its stdlib logger would (its level, or ``logging.disable``)."""
    if isinstance(logger, _StdlibLogger) and not logger.stdlib.isEnabledFor(
        _METHOD_LEVELS.get(method_name, logging.INFO)
    ):
        raise structlog.DropEvent
    return event_dict


_NO_KEYWORDS: Final[dict[str, Any]] = {}


class _ToRecord:
    """Last processor: render the line once; its trace ids go along as record attributes."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        trace_id = event_dict.get("trace_id")
        span_id = event_dict.get("span_id", "")
        return (self._renderer(logger, method_name, event_dict), trace_id, span_id), _NO_KEYWORDS


def _add_logger_name(logger: WrappedLogger, _: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger"] = record.name
    elif "logger" not in event_dict:
        event_dict["logger"] = getattr(logger, "name", "app")
    return event_dict


# -- tracehook's handler ------------------------------------------------------------------------------


class _LineFormatter(structlog.stdlib.ProcessorFormatter):
    """Writes structlog's lines as they were rendered; renders stdlib records with the shared processors."""

    def format(self, record: logging.LogRecord) -> str:
        """The line of a structlog record, or the stdlib record rendered."""
        if type(record.msg) is RenderedLine:
            return record.msg
        return super().format(record)


def _exception_text(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A stdlib record whose traceback was masked carries it as text only (see ``tracing._log_records``)."""
    record = event_dict.get("_record")
    if record is not None and record.exc_text and "exc_info" not in event_dict:
        event_dict["exception"] = record.exc_text
    return event_dict


def _shared_processors(service: str, *, correlate: bool, mirror: bool) -> list[Processor]:
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_service(service),
    ]
    if correlate:
        processors.append(add_trace_context)
    processors += [structlog.processors.format_exc_info, scrub_event]
    if mirror:
        processors.append(mirror_to_span)
    return processors


def configure_logging(
    settings: TracingSettings | None = None,
    *,
    service: str | None = None,
    level: str | None = None,
    fmt: str | None = None,
    stream: IO[str] | None = None,
    correlate: bool = True,
    mirror_to_spans: bool = True,
) -> None:
    """Configure structlog and the stdlib root logger to write one correlated line per event.

    Every structlog line goes, rendered once, to the handlers of the stdlib logger of the same name and
    its parents (the root's among them); stdlib records are scrubbed when made, for every handler.
    Calling it again replaces the previous configuration (handlers are not stacked).

    Args:
        settings: supplies service name, LOG_LEVEL and LOG_FORMAT; read from the environment when omitted.
        service: the ``service`` field; the settings' service name when omitted.
        level: minimum level for every logger (e.g. ``"INFO"``).
        fmt: ``"json"`` (one JSON object per line) or ``"console"`` (for humans).
        stream: where tracehook's own handler writes; standard output when omitted.
        correlate: add ``trace_id``/``span_id`` of the current span (to lines and as record attributes).
        mirror_to_spans: add lines at INFO+ to the current recording span as events.

    Raises:
        ValueError: ``level`` or ``fmt`` is not one of the known values.
    """
    settings = settings if settings is not None else load_settings()
    service = service or settings.service_name
    level_name = (level or settings.log_level).upper()
    if level_name not in _LEVELS:
        msg = f"log level {level_name!r} is not one of {', '.join(_LEVELS)}"
        raise ValueError(msg)
    fmt = (fmt or settings.log_format).lower()
    if fmt not in ("json", "console"):
        msg = f"log format {fmt!r} is not one of json, console"
        raise ValueError(msg)
    out: IO[str] = stream if stream is not None else sys.stdout
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared = _shared_processors(service, correlate=correlate, mirror=mirror_to_spans)
    structlog.configure(
        processors=[_drop_if_disabled, *shared, _ToRecord(renderer)],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level_name]),
        logger_factory=_StdlibLoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    install_record_factory(correlate=correlate)
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        _LineFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), _exception_text, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    _remove_handler(root)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level_name])


def _remove_handler(root: logging.Logger) -> None:
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)


def reset_logging() -> None:
    """Undo :func:`configure_logging`: tracehook's handler, record factory and structlog configuration."""
    _remove_handler(logging.getLogger())
    uninstall_record_factory()
    structlog.reset_defaults()


def get_logger(name: str = "app", **initial: Any) -> Any:
    """A structlog logger whose lines carry ``logger=name`` and the given fields."""
    logger = structlog.get_logger(name)
    return logger.bind(**initial) if initial else logger

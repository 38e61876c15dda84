"""Structured logs correlated with traces: structlog for our code, the stdlib bridge for everyone else.

Every line, whether it came from structlog or from a stdlib logger (Celery's, uvicorn's, a library's),
goes through the same processors: contextvars, level, logger name, timestamp, service, ``trace_id`` and
``span_id`` of the current span, scrubbing, then JSON (or console) rendering. Lines at INFO and above
written inside a recording span are also added to that span as events, so Jaeger shows them in place.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Final, TextIO, cast

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from tracing.scrubbing import scrub_text, scrub_value
from tracing.settings import TracingSettings, load_settings
from tracing.spans import flatten_attributes

__all__ = [
    "TraceContextAdder",
    "configure_logging",
    "get_logger",
    "mirror_to_span",
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


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` (32 hex) and ``span_id`` (16 hex) of the current span, unless already given."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        if "trace_id" not in event_dict:
            event_dict["trace_id"] = format(ctx.trace_id, "032x")
        if "span_id" not in event_dict:
            event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


class TraceContextAdder:
    """Processor adding the current span's ids; ``TraceContextAdder()`` is :func:`add_trace_context`."""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return add_trace_context(logger, method_name, event_dict)


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


class _NamedLogger(structlog.WriteLogger):
    """structlog's fast writer, carrying the name it was asked for (for the ``logger`` field)."""

    def __init__(self, file: IO[str], name: str) -> None:
        super().__init__(cast(TextIO, file))
        self.name = name


class _NamedLoggerFactory:
    def __init__(self, file: IO[str]) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedLogger:
        name = str(args[0]) if args else "app"
        return _NamedLogger(self._file, name)


def _add_logger_name(logger: WrappedLogger, _: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger"] = record.name
    elif "logger" not in event_dict:
        event_dict["logger"] = getattr(logger, "name", "app")
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

    Calling it again replaces the previous configuration (handlers are not stacked).

    Args:
        settings: supplies service name, LOG_LEVEL and LOG_FORMAT; read from the environment when omitted.
        service: the ``service`` field; the settings' service name when omitted.
        level: minimum level for every logger (e.g. ``"INFO"``).
        fmt: ``"json"`` (one JSON object per line) or ``"console"`` (for humans).
        stream: where lines go; standard output when omitted.
        correlate: add ``trace_id``/``span_id`` of the current span.
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
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level_name]),
        logger_factory=_NamedLoggerFactory(out),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level_name])


def get_logger(name: str = "app", **initial: Any) -> Any:
    """A structlog logger whose lines carry ``logger=name`` and the given fields."""
    logger = structlog.get_logger(name)
    return logger.bind(**initial) if initial else logger

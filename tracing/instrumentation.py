"""Turning on the stock OpenTelemetry instrumentations that are installed, in one call."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable
from typing import Final

from opentelemetry.trace import TracerProvider

from tracing._guard import capture_internal_errors

__all__ = ["KNOWN_INSTRUMENTATIONS", "instrument_libraries"]

_log = logging.getLogger("tracing")

# library import name -> (instrumentation module, instrumentor class)
KNOWN_INSTRUMENTATIONS: Final = {
    "redis": ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    "fastapi": ("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor"),
    "sqlalchemy": ("opentelemetry.instrumentation.sqlalchemy", "SQLAlchemyInstrumentor"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def instrument_libraries(
    names: Iterable[str] | None = None, *, tracer_provider: TracerProvider | None = None
) -> list[str]:
    """Instrument each named library (all of :data:`KNOWN_INSTRUMENTATIONS` by default) that is installed.

    A library or instrumentation that is not installed is skipped; one that fails to instrument is
    logged and skipped. Calling it twice does nothing more.

    Args:
        names: library names, e.g. ``["redis", "httpx"]``.
        tracer_provider: the provider to use; the global one when omitted.

    Returns:
        The names that are instrumented after the call.

    Raises:
        ValueError: a name is not one of :data:`KNOWN_INSTRUMENTATIONS`.
    """
    wanted = list(KNOWN_INSTRUMENTATIONS) if names is None else list(names)
    unknown = [name for name in wanted if name not in KNOWN_INSTRUMENTATIONS]
    if unknown:
        msg = f"unknown instrumentation(s) {unknown}; known: {sorted(KNOWN_INSTRUMENTATIONS)}"
        raise ValueError(msg)
    enabled: list[str] = []
    for name in wanted:
        module_name, class_name = KNOWN_INSTRUMENTATIONS[name]
        if not (_installed(name) and _installed(module_name)):
            continue
        with capture_internal_errors(_log, "tracing: could not instrument %s", name):
            instrumentor = getattr(importlib.import_module(module_name), class_name)()
            if not instrumentor.is_instrumented_by_opentelemetry:
                kwargs: dict[str, object] = {}
                if tracer_provider is not None:
                    kwargs["tracer_provider"] = tracer_provider
                if name == "sqlalchemy":
                    kwargs["enable_commenter"] = False
                instrumentor.instrument(**kwargs)
            enabled.append(name)
    return enabled

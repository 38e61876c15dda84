"""Carrying a trace across process boundaries: W3C trace context and baggage in any string carrier."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

__all__ = ["extract_context", "inject_headers"]


class _CaseInsensitiveGetter(Getter[Mapping[str, Any]]):
    """Reads header-like carriers whatever the key's case and whether values are str, bytes or lists."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            lowered = key.lower()
            for name, candidate in carrier.items():
                if isinstance(name, str) and name.lower() == lowered:
                    value = candidate
                    break
        if value is None:
            return None
        if isinstance(value, bytes):
            return [value.decode("latin-1")]
        if isinstance(value, list | tuple):
            return [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in value]
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [str(key) for key in carrier]


_getter = _CaseInsensitiveGetter()


def inject_headers(
    carrier: MutableMapping[str, str] | None = None, context: Context | None = None
) -> MutableMapping[str, str]:
    """Write ``traceparent``, ``tracestate`` and ``baggage`` for the current (or given) context.

    Args:
        carrier: the headers to add to; a new dict when omitted.
        context: the context to propagate; the current one when omitted.

    Returns:
        The carrier, for chaining.
    """
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier, context=context)
    return carrier


def extract_context(carrier: Mapping[str, Any] | None, context: Context | None = None) -> Context:
    """Read a trace context and baggage from any header-like mapping (case-insensitive keys).

    A missing or malformed ``traceparent`` gives a context with no parent span, never an error.
    """
    return propagate.extract(carrier or {}, context=context, getter=_getter)

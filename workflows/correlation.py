"""Source correlation (docs/design.md, step 8): which traced API operation last changed an entity.

The RentVine client records ``entity id → (trace id, span id)`` in Redis for an hour when a step changes
an entity through the API; a later webhook about that entity links its root span to that operation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from opentelemetry.trace import Link, Span, SpanContext, TraceFlags

from tracing import span_ids
from workflows.store import KeyValueStore

__all__ = [
    "ENTITY_KEYS",
    "SOURCE_TTL_S",
    "entity_ids",
    "record_source",
    "source_from",
    "source_keys",
]

SOURCE_TTL_S: Final = 3600
ENTITY_KEYS: Final = ("work_order_id", "lease_id", "payment_id")
_PREFIX: Final = "tracehook:source:"


def entity_ids(data: Mapping[str, Any]) -> list[str]:
    """The ids of the entities a webhook's ``data`` is about."""
    return [str(data[key]) for key in ENTITY_KEYS if isinstance(data.get(key), str) and data[key]]


def record_source(client: KeyValueStore, entity_id: str, span: Span) -> None:
    """Remember that ``span`` (an API call) changed ``entity_id``; errors are the caller's to swallow."""
    ids = span_ids(span.get_span_context())
    if ids:
        client.set(_PREFIX + entity_id, json.dumps(ids), ex=SOURCE_TTL_S)


def source_keys(ids: Iterable[str]) -> list[str]:
    """The store keys of the entities ``ids``: what :func:`source_from` reads (one ``MGET``)."""
    return [_PREFIX + entity for entity in ids]


def source_from(values: Iterable[Any]) -> tuple[dict[str, str], Link] | None:
    """The recorded operation of the first value (of an ``MGET`` of :func:`source_keys`) that holds one,
    and a span Link to it."""
    for raw in values:
        if not raw:
            continue
        try:
            found = json.loads(raw)
            context = SpanContext(
                trace_id=int(found["trace_id"], 16),
                span_id=int(found["span_id"], 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        except (ValueError, KeyError, TypeError):
            continue
        return found, Link(context, {"link.kind": "source_operation"})
    return None

"""What tracehook reads from and writes into a Celery task message, in one place.

The trace headers a message carries (W3C ``traceparent``, ``tracestate``, ``baggage``, and the enqueue
time), where each Celery version and message protocol keeps the task's fields, the broker's messaging
system, and the queue wait measured from them. Used by the Celery instrumentation on both sides of the
broker (:mod:`tracing.celery_tracing`), as opentelemetry-python-contrib keeps its Celery ``utils``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any, Final

__all__ = [
    "ENQUEUED_AT_HEADER",
    "TRACE_HEADERS",
    "enqueued_now",
    "headers_of",
    "merge_baggage",
    "messaging_system",
    "queue_wait",
    "request_headers",
    "task_fields",
]

ENQUEUED_AT_HEADER: Final = "tracehook_enqueued_at"
TRACE_HEADERS: Final = ("traceparent", "tracestate", "baggage")
# A broker URL's scheme → OpenTelemetry's messaging.system (redis and the rest keep their scheme).
_SYSTEMS: Final = {"amqp": "rabbitmq", "amqps": "rabbitmq", "pyamqp": "rabbitmq", "rediss": "redis"}


def headers_of(message: Any) -> MutableMapping[str, Any]:
    """The headers dict of a Celery task message (a namedtuple whose first field is the headers)."""
    headers: MutableMapping[str, Any] = message[0] if isinstance(message, tuple) else message.headers
    return headers


def task_fields(message: Any, headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where the message keeps the task's id, retries, ETA and group: the headers (protocol 2), or the
    body (protocol 1, ``task_protocol=1``, which old producers still use)."""
    if "id" in headers:
        return headers
    body = message[2] if isinstance(message, tuple) else getattr(message, "body", None)
    return body if isinstance(body, Mapping) else headers


def merge_baggage(existing: str, ours: str) -> str:
    """One baggage header: the user's entries kept, ours added where the key is new."""
    entries: dict[str, str] = {}
    for part in (existing + "," + ours).split(","):
        item = part.strip()
        if not item:
            continue
        key = item.split("=", 1)[0].strip()
        entries.setdefault(key, item)
    return ",".join(entries.values())


def enqueued_now() -> str:
    """The value of :data:`ENQUEUED_AT_HEADER` for a message published now: unix seconds, a string."""
    return repr(time.time())


def request_headers(request: Any) -> dict[str, Any]:
    """The trace headers of a Celery request, wherever this Celery version put them."""
    found: dict[str, Any] = {}
    nested = getattr(request, "headers", None)
    nested = nested if isinstance(nested, Mapping) else {}
    for key in (*TRACE_HEADERS, ENQUEUED_AT_HEADER):
        value = getattr(request, key, None)
        if value is None:
            value = nested.get(key)
        if value is None and isinstance(request, Mapping):
            value = request.get(key)
        if value is not None:
            found[key] = value
    return found


def messaging_system(broker_url: str) -> str:
    """``messaging.system`` for a broker URL: ``rabbitmq`` for AMQP, ``redis``, ...; ``celery`` if none."""
    transport = broker_url.split("://", 1)[0].split("+", 1)[0]
    return _SYSTEMS.get(transport, transport or "celery")


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _eta_seconds(eta: Any) -> float | None:
    if eta is None:
        return None
    if isinstance(eta, datetime):
        return eta.timestamp()
    try:
        return datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


def queue_wait(carrier: Mapping[str, Any], eta: Any, now: float) -> dict[str, float]:
    """The run span's wait attributes: ``celery.queue_wait_ms`` (enqueue, or the ETA when later, → ``now``)
    and ``celery.scheduled_delay_ms`` (enqueue → ETA) when a countdown or ETA put the task off; none when
    the message carries no enqueue time."""
    enqueued = _float(carrier.get(ENQUEUED_AT_HEADER))
    if enqueued is None:
        return {}
    waited: dict[str, float] = {}
    ready = enqueued
    scheduled = _eta_seconds(eta)
    if scheduled is not None and scheduled > enqueued:
        waited["celery.scheduled_delay_ms"] = round((scheduled - enqueued) * 1000, 3)
        ready = scheduled
    waited["celery.queue_wait_ms"] = round(max(0.0, now - ready) * 1000, 3)
    return waited

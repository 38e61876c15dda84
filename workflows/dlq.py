"""The dead-letter list: events whose workflow failed after the last retry, with their trace and error.

Entries live in a Redis hash (id → JSON) plus a list for order. ``replay`` re-enqueues an event in a new
trace whose root span links to the failed one.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, format_trace_id

from tracing import trace_span
from workflows.queue import TASK_NAME, Publisher
from workflows.store import KeyValueStore

__all__ = ["DeadLetter", "DeadLetters"]

_HASH: Final = "tracehook:dlq"
_ORDER: Final = "tracehook:dlq:order"


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered event."""

    id: str
    event: dict[str, Any]
    event_id: str
    event_type: str
    trace_id: str
    span_id: str
    error: str
    error_type: str
    attempts: int
    task_id: str
    failed_at: float


class DeadLetters:
    """The dead-letter list in Redis."""

    def __init__(self, client: KeyValueStore) -> None:
        self.client = client

    def add(
        self,
        *,
        event: dict[str, Any],
        trace_id: str,
        span_id: str,
        error: BaseException,
        attempts: int,
        task_id: str,
    ) -> DeadLetter:
        """Store a failed event; returns the entry."""
        entry = DeadLetter(
            id=f"dlq_{uuid.uuid4().hex[:16]}",
            event=event,
            event_id=str(event.get("id")),
            event_type=str(event.get("type")),
            trace_id=trace_id,
            span_id=span_id,
            error=str(error)[:2000],
            error_type=type(error).__name__,
            attempts=attempts,
            task_id=task_id,
            failed_at=time.time(),
        )
        pipe = self.client.pipeline()
        pipe.hset(_HASH, entry.id, json.dumps(asdict(entry)))
        pipe.rpush(_ORDER, entry.id)
        pipe.execute()
        return entry

    def list(self) -> list[DeadLetter]:
        """Every entry, oldest first."""
        ids = [raw.decode() if isinstance(raw, bytes) else raw for raw in self.client.lrange(_ORDER, 0, -1)]
        entries = []
        for raw in self.client.hmget(_HASH, ids) if ids else []:
            if raw:
                entries.append(DeadLetter(**json.loads(raw)))
        return entries

    def get(self, entry_id: str) -> DeadLetter | None:
        """One entry by id."""
        raw = self.client.hget(_HASH, entry_id)
        return DeadLetter(**json.loads(raw)) if raw else None

    def remove(self, entry_id: str) -> None:
        """Drop an entry."""
        pipe = self.client.pipeline()
        pipe.hdel(_HASH, entry_id)
        pipe.lrem(_ORDER, 0, entry_id)
        pipe.execute()

    def replay(self, entry_id: str, publisher: Publisher) -> tuple[str, str]:
        """Re-enqueue an entry in a new trace linked to the failed one; removes it once queued.

        The replay is a webhook of its own: its receipt (the task's ``received_at``, the start of the new
        trace's root span) is now.

        Returns:
            (new trace id, task id).

        Raises:
            KeyError: no such entry.
        """
        received_ns = time.time_ns()
        entry = self.get(entry_id)
        if entry is None:
            raise KeyError(entry_id)
        old = SpanContext(
            int(entry.trace_id, 16),
            int(entry.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        attributes = {
            "rentvine.event_type": entry.event_type,
            "rentvine.event_id": entry.event_id,
            "dlq.entry_id": entry.id,
            "dlq.original_trace_id": entry.trace_id,
            "workflow.priority": "critical",
        }
        with trace_span(
            f"dlq.replay.{entry.event_type}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            links=[Link(old, {"link.kind": "replay_of"})],
            context=Context(),
            start_time=received_ns,
        ) as span:
            result = publisher.send_task(
                TASK_NAME,
                kwargs={"event": entry.event, "replay_of": entry.id, "received_at": received_ns / 1e9},
                retry=False,
            )
            trace_id = format_trace_id(span.get_span_context().trace_id)
        self.remove(entry.id)
        return trace_id, str(result.id)

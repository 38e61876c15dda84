"""The webhook's end-to-end objective: from the intake's receipt to the work done, once per webhook.

The intake reads the clock once when a request starts (``time.time_ns()``) and uses the reading twice: as
the start of the webhook's root span, and as the task's ``received_at`` keyword (seconds since the epoch).
A replay from the dead-letter list is a webhook of its own: its receipt is the replay's. The worker calls
:func:`record_completion` on a webhook's last attempt only (its workflow completed, or it was
dead-lettered after the last retry), so retries count toward the figure and no webhook counts twice. The
figure goes to ``tracehook_webhook_completion_seconds`` (the attempt's run span as exemplar) and onto that
span (:data:`COMPLETION_MS`, :data:`OUTCOME`, :data:`OBJECTIVE_MET`), which is what ``tracehook trace``
and the demo print as "receipt → done".

Receipt and end are read on two machines' clocks when the intake and the worker run on two: keep them in
sync (NTP), as the traces' waterfall needs anyway. A negative difference counts as 0.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

from opentelemetry import trace

from tracing.metrics import observe
from workflows.metrics import WEBHOOK_COMPLETION, event_type_label

__all__ = ["COMPLETION_MS", "OBJECTIVE_MET", "OUTCOME", "record_completion"]

COMPLETION_MS: Final = "webhook.completion_ms"
OUTCOME: Final = "webhook.outcome"
OBJECTIVE_MET: Final = "webhook.objective_met"


def record_completion(event_type: Any, outcome: str, received_at: Any, objective_s: float) -> float | None:
    """Record, now, one webhook's receipt → done; call it on the webhook's last attempt, in its run span.

    Args:
        event_type: the event's type (folded to a known one or ``unknown`` for the label).
        outcome: ``completed`` or ``dead_lettered``.
        received_at: the task's ``received_at`` (seconds since the epoch), or None.
        objective_s: WEBHOOK_OBJECTIVE_S; within it and completed is ``webhook.objective_met=true``.

    Returns:
        The seconds recorded; None (and nothing recorded) when the task carries no receipt time: a task
        published by someone other than the intake or a replay, or by an intake older than this figure.
    """
    if isinstance(received_at, bool) or not isinstance(received_at, int | float):
        return None
    if not math.isfinite(received_at):
        return None
    seconds = max(0.0, time.time() - received_at)
    observe(WEBHOOK_COMPLETION, seconds, {"event_type": event_type_label(event_type), "outcome": outcome})
    trace.get_current_span().set_attributes(
        {
            COMPLETION_MS: round(seconds * 1000, 3),
            OUTCOME: outcome,
            OBJECTIVE_MET: outcome == "completed" and seconds <= objective_s,
        }
    )
    return seconds

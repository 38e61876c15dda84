"""The RentVine side's metrics: webhooks at the intake, workflows and their steps, business counts.

The instruments are declared here (the generic task and batch ones live in ``tracing.metrics``); the
label helpers keep every label value in a small, known set, whatever a sender puts in a payload.
"""

from __future__ import annotations

import re
from typing import Any, Final

from tracing.metrics import DURATION_BUCKETS_S, MetricSpec, define, start_at_zero
from workflows.events import EVENT_TYPES

__all__ = [
    "COMPLETION_BUCKETS_S",
    "COMPLETION_OUTCOMES",
    "INTAKE_DURATION",
    "PAYMENTS_AMOUNT",
    "UNKNOWN",
    "WEBHOOKS_RECEIVED",
    "WEBHOOK_COMPLETION",
    "WEBHOOK_OUTCOMES",
    "WORKFLOW_DURATION",
    "WORKFLOW_STEP_DURATION",
    "WORK_ORDERS",
    "currency_label",
    "event_type_label",
    "outcome_of",
    "priority_label",
    "start_intake_counters",
    "start_worker_counters",
]

UNKNOWN: Final = "unknown"
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_PRIORITIES: Final = ("low", "normal", "high", "emergency")
# The intake's error codes (docs/intake.md) as outcomes of tracehook_webhooks_received_total.
_OUTCOMES: Final = {
    "payload_too_large": "too_large",
    "invalid_signature": "rejected_signature",
    "unsupported_media_type": "rejected_media_type",
    "invalid_json": "rejected_json",
    "invalid_event": "rejected_schema",
    "store_unavailable": "store_unavailable",
    "broker_unavailable": "broker_unavailable",
    # Another delivery of the same id is being queued (or an intake died doing so): the sender retries.
    "in_flight": "in_flight",
}
# Every value the ``outcome`` label takes.
WEBHOOK_OUTCOMES: Final = ("queued", "duplicate", *_OUTCOMES.values(), "rejected")
# How a webhook's last attempt ended: the ``outcome`` of tracehook_webhook_completion_seconds.
COMPLETION_OUTCOMES: Final = ("completed", "dead_lettered")
# Receipt → done. Bounds at most 1.67x apart from 50 ms to 60 s, where webhooks normally finish, so a
# quantile read off the buckets is known to within a bucket that narrow (the soak benchmark checks it
# against the traces); then minutes, for retries and dead letters. WEBHOOK_OBJECTIVE_S must be one of
# them: the objective's alerts count the webhooks under it with that bucket's ``le``.
COMPLETION_BUCKETS_S: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

WEBHOOKS_RECEIVED: Final = define(
    MetricSpec(
        "tracehook_webhooks_received",
        "counter",
        "Webhooks answered by the intake, by event type and outcome (queued, duplicate, rejected_*, ...)",
        ("event_type", "outcome"),
    )
)
INTAKE_DURATION: Final = define(
    MetricSpec(
        "tracehook_intake_duration_seconds",
        "histogram",
        "Time the intake took to answer a webhook, by HTTP status",
        ("status",),
        "s",
        DURATION_BUCKETS_S,
    )
)
WORKFLOW_DURATION: Final = define(
    MetricSpec(
        "tracehook_workflow_duration_seconds",
        "histogram",
        "Run time of a workflow, by workflow (event type) and status (completed, failed)",
        ("workflow", "status"),
        "s",
        DURATION_BUCKETS_S,
    )
)
WORKFLOW_STEP_DURATION: Final = define(
    MetricSpec(
        "tracehook_workflow_step_duration_seconds",
        "histogram",
        "Run time of one workflow step, by workflow (event type) and step",
        ("workflow", "step"),
        "s",
        DURATION_BUCKETS_S,
    )
)
PAYMENTS_AMOUNT: Final = define(
    MetricSpec(
        "tracehook_payments_amount",
        "counter",
        "Money in payment events processed, by currency and outcome (received, failed)",
        ("currency", "outcome"),
    )
)
WEBHOOK_COMPLETION: Final = define(
    MetricSpec(
        "tracehook_webhook_completion_seconds",
        "histogram",
        "From the intake's receipt of a webhook to the end of its workflow's last attempt, retries "
        "included, by event type and outcome (completed, dead_lettered)",
        ("event_type", "outcome"),
        "s",
        COMPLETION_BUCKETS_S,
    )
)
WORK_ORDERS: Final = define(
    MetricSpec("tracehook_work_orders", "counter", "Work orders created, by priority", ("priority",))
)


def event_type_label(value: Any) -> str:
    """The event type when it is one we know, else ``unknown`` (a sender must not create label values)."""
    return value if isinstance(value, str) and value in EVENT_TYPES else UNKNOWN


def currency_label(value: Any) -> str:
    """A three-letter upper-case currency code, else ``other``."""
    return value if isinstance(value, str) and _CURRENCY.fullmatch(value) else "other"


def priority_label(value: Any) -> str:
    """A work order priority of the schema, else ``normal`` (the schema's default)."""
    return value if isinstance(value, str) and value in _PRIORITIES else "normal"


def outcome_of(code: str) -> str:
    """The outcome label of one of the intake's error codes."""
    return _OUTCOMES.get(code, "rejected")


def start_intake_counters() -> None:
    """Every (event type, outcome) of ``tracehook_webhooks_received_total`` at 0, at the intake's start."""
    start_at_zero(
        WEBHOOKS_RECEIVED,
        (
            {"event_type": kind, "outcome": outcome}
            for kind in (*EVENT_TYPES, UNKNOWN)
            for outcome in WEBHOOK_OUTCOMES
        ),
    )


def start_worker_counters() -> None:
    """Every priority of ``tracehook_work_orders_total``, and every (event type, outcome) of
    ``tracehook_webhook_completion_seconds`` (the objective's alerts take its rate), at 0 at the worker's
    start."""
    start_at_zero(WORK_ORDERS, ({"priority": priority} for priority in _PRIORITIES))
    start_at_zero(
        WEBHOOK_COMPLETION,
        (
            {"event_type": kind, "outcome": outcome}
            for kind in (*EVENT_TYPES, UNKNOWN)
            for outcome in COMPLETION_OUTCOMES
        ),
    )

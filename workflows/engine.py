"""The RentVine workflows: one ``workflow.<type>`` span per event, a ``workflow.step.<name>`` span per step.

Steps are idempotent per event id: notices and ledger entries carry an ``Idempotency-Key`` derived from
the event id, and changes are only sent when the remote state differs, so a task run twice (redelivery
after a worker was killed) sends nothing twice, and the sandbox's change announcements do not loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from decimal import Decimal
from typing import Any, Final

import structlog
from opentelemetry.trace import Span, Status, StatusCode

from tracing import trace_batch, trace_span
from tracing.metrics import count, observe
from workflows.metrics import (
    PAYMENTS_AMOUNT,
    WORK_ORDERS,
    WORKFLOW_DURATION,
    WORKFLOW_STEP_DURATION,
    currency_label,
    event_type_label,
    priority_label,
)
from workflows.rentvine import RentVineClient, RentVineError

__all__ = ["WORK_ORDER_STATUSES", "WorkflowError", "run_workflow"]

WORK_ORDER_STATUSES: Final = frozenset({"open", "scheduled", "in_progress", "completed", "cancelled"})
BATCH_SIZE: Final = 10

log = structlog.get_logger("workflows.engine")
_workflow: ContextVar[str] = ContextVar("tracehook_workflow", default="unknown")

_ENTITY_ATTRIBUTES: Final = ("work_order_id", "property_id", "lease_id", "tenant_id", "payment_id", "unit_id")


class WorkflowError(ValueError):
    """An event the workflow cannot process (not retryable)."""


@contextmanager
def step(name: str, **entities: Any) -> Iterator[Span]:
    """A ``workflow.step.<name>`` span with the entity ids as ``rentvine.*`` attributes."""
    attributes = {f"rentvine.{key}": str(value) for key, value in entities.items() if value is not None}
    started = time.perf_counter()
    with trace_span(f"workflow.step.{name}", attributes=attributes) as span:
        try:
            yield span
        finally:
            observe(
                WORKFLOW_STEP_DURATION,
                time.perf_counter() - started,
                {"workflow": _workflow.get(), "step": name},
            )


def _ids(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data.get(key) for key in _ENTITY_ATTRIBUTES if data.get(key) is not None}


def _amount(value: Any) -> Decimal:
    """A money amount from ``"1850.00"`` or ``{"amount": "1850.00", "currency": ...}``; 0 when absent."""
    if isinstance(value, dict):
        value = value.get("amount")
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except ArithmeticError:
        return Decimal(0)


class _Run:
    def __init__(self, event: dict[str, Any], client: RentVineClient) -> None:
        self.event = event
        self.event_id = str(event["id"])
        self.data: dict[str, Any] = event.get("data") or {}
        self.api = client

    def notify(self, kind: str, recipient: str, subject: str) -> None:
        with step("notify", **_ids(self.data)) as span:
            answer = self.api.request(
                "POST",
                "/notifications",
                resource="notification",
                action="send",
                json={"kind": kind, "recipient": recipient, "subject": subject, "event_id": self.event_id},
                idempotency_key=f"{self.event_id}:{kind}",
            )
            span.set_attribute("notification.duplicate", bool(answer.get("duplicate")))

    # -- work orders ---------------------------------------------------------------------------------

    def work_order_created(self) -> None:
        wo_id, prop_id = self.data["work_order_id"], self.data["property_id"]
        with step("validate", work_order_id=wo_id, property_id=prop_id):
            if not self.data.get("category"):
                self.data.setdefault("category", "general")
        with step("fetch_property", property_id=prop_id):
            prop = self.api.request("GET", f"/properties/{prop_id}", resource="property", action="get")
        with step("assign_vendor", work_order_id=wo_id, property_id=prop_id) as span:
            self.api.request(
                "POST",
                "/work-orders",
                resource="work_order",
                action="create",
                json={
                    "work_order_id": wo_id,
                    "property_id": prop_id,
                    "priority": self.data.get("priority"),
                    "category": self.data.get("category"),
                    "status": "open",
                },
            )
            assigned = self.api.request(
                "POST",
                f"/work-orders/{wo_id}/assign-vendor",
                resource="work_order",
                action="assign_vendor",
                json={"category": self.data.get("category")},
                changes=wo_id,
            )
            span.set_attribute("rentvine.vendor_id", str(assigned.get("vendor_id", "")))
        manager = str(prop.get("manager_email") or prop.get("manager") or "property-manager")
        self.notify("work_order_created", manager, f"Work order {wo_id} ({self.data.get('priority')})")
        count(WORK_ORDERS, 1, {"priority": priority_label(self.data.get("priority"))})

    def work_order_changed(self) -> None:
        wo_id = self.data["work_order_id"]
        with step("fetch_work_order", work_order_id=wo_id):
            current = self.api.request("GET", f"/work-orders/{wo_id}", resource="work_order", action="get")
        wanted = self.data.get("status")
        with step("sync_status", work_order_id=wo_id) as span:
            changed = bool(wanted) and wanted != current.get("status")
            span.set_attribute("workflow.changed", changed)
            if changed:
                self.api.request(
                    "PATCH",
                    f"/work-orders/{wo_id}",
                    resource="work_order",
                    action="update",
                    json={"status": wanted},
                    changes=wo_id,
                )
        self.notify(self.event["type"].replace(".", "_"), "property-manager", f"Work order {wo_id}: {wanted}")

    def work_order_bulk_updated(self) -> None:
        items: list[dict[str, Any]] = list(self.data["work_orders"])
        with step("validate") as span:
            span.set_attribute("batch.items_total", len(items))

        def apply(item: dict[str, Any]) -> str:
            wo_id = item.get("work_order_id")
            if not wo_id:
                msg = "work order without work_order_id"
                raise WorkflowError(msg)
            if not item.get("property_id"):
                msg = f"{wo_id}: property_id is missing"
                raise WorkflowError(msg)
            if item.get("status") not in WORK_ORDER_STATUSES:
                msg = f"{wo_id}: status {item.get('status')!r} is not one of {sorted(WORK_ORDER_STATUSES)}"
                raise WorkflowError(msg)
            self.api.request(
                "PATCH",
                f"/work-orders/{wo_id}",
                resource="work_order",
                action="update",
                json={"status": item["status"], "property_id": item["property_id"]},
                changes=str(wo_id),
            )
            return str(wo_id)

        with step("apply_updates") as span:
            results, errors = trace_batch(
                "update_work_orders",
                items,
                apply,
                batch_size=BATCH_SIZE,
                attributes={"batch.type": "work_orders"},
            )
            span.set_attributes({"batch.items_succeeded": len(results), "batch.items_failed": len(errors)})
            for error in errors:
                log.warning("batch.item_failed", index=error.index, error=str(error.error))
            retryable = [e for e in errors if isinstance(e.error, RentVineError) and e.error.retryable]
            if retryable:
                # The API, not the items, failed: try the whole batch again later (updates are idempotent).
                raise retryable[0].error

    # -- leases --------------------------------------------------------------------------------------

    def lease_expiring(self) -> None:
        lease_id = self.data["lease_id"]
        with step("fetch_lease", lease_id=lease_id, tenant_id=self.data.get("tenant_id")):
            lease = self.api.request("GET", f"/leases/{lease_id}", resource="lease", action="get")
        with step("decide_renewal_offer", lease_id=lease_id) as span:
            rent = _amount(lease.get("monthly_rent")) or _amount(self.data.get("monthly_rent"))
            offer = (rent * Decimal("1.03")).quantize(Decimal("0.01"))
            span.set_attributes({"lease.offer_months": 12, "lease.offer_rent": str(offer)})
            self.api.request(
                "POST",
                f"/leases/{lease_id}/renewal-offers",
                resource="lease",
                action="offer_renewal",
                json={"months": 12, "monthly_rent": str(offer)},
                idempotency_key=f"{self.event_id}:offer",
            )
        self.notify("lease_renewal_offer", str(self.data.get("tenant_id")), f"Renewal offer for {lease_id}")

    def lease_renewed(self) -> None:
        lease_id = self.data["lease_id"]
        with step("fetch_lease", lease_id=lease_id):
            lease = self.api.request("GET", f"/leases/{lease_id}", resource="lease", action="get")
        with step("update_records", lease_id=lease_id) as span:
            new_end = str(date.fromisoformat(str(self.data["new_end_date"])))
            changed = str(lease.get("end_date")) != new_end
            span.set_attribute("workflow.changed", changed)
            if changed:
                self.api.request(
                    "PUT",
                    f"/leases/{lease_id}",
                    resource="lease",
                    action="update",
                    json={"end_date": new_end},
                    changes=lease_id,
                )

    # -- payments ------------------------------------------------------------------------------------

    def payment(self) -> None:
        pay_id = self.data["payment_id"]
        with step("fetch_payment", payment_id=pay_id, lease_id=self.data.get("lease_id")):
            self.api.request("GET", f"/payments/{pay_id}", resource="payment", action="get")
        failed = self.event["type"] == "payment.failed"
        with step("reconcile_ledger", payment_id=pay_id) as span:
            span.set_attributes(
                {
                    "payment.amount": str(self.data.get("amount")),
                    "payment.currency": str(self.data.get("currency")),
                }
            )
            self.api.request(
                "POST",
                "/ledger/entries",
                resource="ledger",
                action="reconcile",
                json={
                    "payment_id": pay_id,
                    "amount": str(self.data.get("amount")),
                    "currency": self.data.get("currency"),
                    "kind": "reversal" if failed else "payment",
                },
                idempotency_key=f"{self.event_id}:ledger",
            )
        tenant = str((self.data.get("payer") or {}).get("tenant_id") or "tenant")
        if failed:
            self.notify("dunning_notice", tenant, f"Payment {pay_id} failed")
        else:
            self.notify("receipt", tenant, f"Receipt for payment {pay_id}")
        # Counted once the whole workflow went through, so a retried attempt does not count it twice.
        count(
            PAYMENTS_AMOUNT,
            float(_amount(self.data.get("amount"))),
            {
                "currency": currency_label(self.data.get("currency")),
                "outcome": "failed" if failed else "received",
            },
        )


_HANDLERS: Final[dict[str, Callable[[_Run], None]]] = {
    "work_order.created": _Run.work_order_created,
    "work_order.updated": _Run.work_order_changed,
    "work_order.completed": _Run.work_order_changed,
    "work_order.bulk_updated": _Run.work_order_bulk_updated,
    "lease.expiring": _Run.lease_expiring,
    "lease.expired": _Run.lease_expiring,
    "lease.renewed": _Run.lease_renewed,
    "payment.received": _Run.payment,
    "payment.failed": _Run.payment,
}


def run_workflow(
    event: dict[str, Any], client: RentVineClient, *, priority: str = "normal", workflow_id: str | None = None
) -> dict[str, Any]:
    """Run the workflow of one event inside a ``workflow.<type>`` span.

    Returns:
        ``{"status": "completed", "event_id", "event_type", "duration_ms"}``.

    Raises:
        RentVineError: an API call failed (``retryable`` tells the task whether to retry).
        WorkflowError: the event cannot be processed.
    """
    event_type = str(event.get("type"))
    event_id = str(event.get("id"))
    handler = _HANDLERS.get(event_type)
    if handler is None:
        msg = f"no workflow for event type {event_type!r}"
        raise WorkflowError(msg)
    attributes = {
        "workflow.id": workflow_id or event_id,
        "workflow.event_id": event_id,
        "workflow.priority": priority,
        "workflow.status": "running",
        "rentvine.event_type": event_type,
    }
    started = time.perf_counter()
    label = event_type_label(event_type)
    token = _workflow.set(label)
    with trace_span(f"workflow.{event_type}", attributes=attributes) as span:
        log.info("workflow.started", event_id=event_id, event_type=event_type, priority=priority)
        try:
            handler(_Run(event, client))
        except Exception as exc:
            elapsed = time.perf_counter() - started
            observe(WORKFLOW_DURATION, elapsed, {"workflow": label, "status": "failed"})
            _workflow.reset(token)
            duration_ms = round(elapsed * 1000, 3)
            span.set_attribute("workflow.status", "failed")
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            log.exception(
                "workflow.failed",
                event_id=event_id,
                event_type=event_type,
                duration_ms=duration_ms,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            raise
        elapsed = time.perf_counter() - started
        observe(WORKFLOW_DURATION, elapsed, {"workflow": label, "status": "completed"})
        _workflow.reset(token)
        duration_ms = round(elapsed * 1000, 3)
        span.set_attribute("workflow.status", "completed")
        log.info("workflow.completed", event_id=event_id, event_type=event_type, duration_ms=duration_ms)
    return {"status": "completed", "event_id": event_id, "event_type": event_type, "duration_ms": duration_ms}

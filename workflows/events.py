"""RentVine webhook events: one pydantic model per event type, and their priority."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "EVENT_TYPES",
    "FIXTURES",
    "EventError",
    "WebhookEvent",
    "classify_priority",
    "load_fixture",
    "parse_event",
]


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class WorkOrderCreatedData(_Data):
    work_order_id: str = Field(min_length=1)
    property_id: str = Field(min_length=1)
    unit_id: str | None = None
    priority: Literal["low", "normal", "high", "emergency"] = "normal"
    category: str | None = None
    description: str | None = None


class WorkOrderChangedData(_Data):
    work_order_id: str = Field(min_length=1)
    property_id: str | None = None
    status: str | None = None
    vendor_id: str | None = None


class WorkOrderBulkData(_Data):
    # Items are checked one by one inside the batch, so one bad item never rejects the others.
    work_orders: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class LeaseData(_Data):
    lease_id: str = Field(min_length=1)
    property_id: str = Field(min_length=1)
    tenant_id: str = Field(min_length=1)
    end_date: date | None = None


class LeaseRenewedData(_Data):
    lease_id: str = Field(min_length=1)
    property_id: str | None = None
    tenant_id: str | None = None
    new_end_date: date


class PaymentData(_Data):
    payment_id: str = Field(min_length=1)
    lease_id: str = Field(min_length=1)
    amount: Decimal = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    method: str | None = None
    failure_reason: str | None = None


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    created_at: datetime
    account_id: str = Field(min_length=1)


class WorkOrderCreated(_Event):
    type: Literal["work_order.created"]
    data: WorkOrderCreatedData


class WorkOrderChanged(_Event):
    type: Literal["work_order.updated", "work_order.completed"]
    data: WorkOrderChangedData


class WorkOrderBulkUpdated(_Event):
    type: Literal["work_order.bulk_updated"]
    data: WorkOrderBulkData


class LeaseEvent(_Event):
    type: Literal["lease.expiring", "lease.expired"]
    data: LeaseData


class LeaseRenewed(_Event):
    type: Literal["lease.renewed"]
    data: LeaseRenewedData


class PaymentEvent(_Event):
    type: Literal["payment.received", "payment.failed"]
    data: PaymentData


WebhookEvent = Annotated[
    WorkOrderCreated | WorkOrderChanged | WorkOrderBulkUpdated | LeaseEvent | LeaseRenewed | PaymentEvent,
    Field(discriminator="type"),
]
_adapter: TypeAdapter[WebhookEvent] = TypeAdapter(WebhookEvent)

EVENT_TYPES: Final = (
    "work_order.created",
    "work_order.updated",
    "work_order.completed",
    "work_order.bulk_updated",
    "lease.expiring",
    "lease.expired",
    "lease.renewed",
    "payment.received",
    "payment.failed",
)


class EventError(ValueError):
    """A body that is JSON but not a valid event; ``field`` names the first offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_event(payload: object) -> WebhookEvent:
    """Validate a decoded JSON body as one of the event models.

    Raises:
        EventError: unknown type or invalid field, naming the field (never echoing its value).
    """
    if not isinstance(payload, dict):
        raise EventError("body", "must be a JSON object")
    kind = payload.get("type")
    if kind not in EVENT_TYPES:
        raise EventError("type", f"unknown event type; expected one of {', '.join(EVENT_TYPES)}")
    try:
        return _adapter.validate_python(payload)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        location = [str(part) for part in first["loc"] if str(part) != kind]
        raise EventError(".".join(location) or "body", str(first["msg"])) from None


def classify_priority(event: WebhookEvent) -> str:
    """``emergency`` for emergency work orders, ``critical`` for payments, ``normal`` otherwise."""
    if isinstance(event, WorkOrderCreated) and event.data.priority == "emergency":
        return "emergency"
    if event.type.startswith("payment."):
        return "critical"
    return "normal"


FIXTURES: Final = (
    "work_order_created",
    "work_order_emergency",
    "work_order_completed",
    "work_order_bulk_updated",
    "lease_expiring",
    "lease_renewed",
    "payment_received",
    "payment_failed",
)


def load_fixture(name: str) -> dict[str, Any]:
    """A sample event shipped with the package (``workflows/fixtures/webhooks/<name>.json``)."""
    name = name.removesuffix(".json")
    text = resources.files("workflows").joinpath("fixtures", "webhooks", f"{name}.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded

"""The sandbox's request bodies and path, header and query parameters, validated as RentVine would."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "EntityId",
    "FaultSpec",
    "HintId",
    "IdemKey",
    "LeaseUpdate",
    "LedgerEntryCreate",
    "NotificationCreate",
    "RenewalOfferCreate",
    "VendorRequest",
    "WorkOrderCreate",
    "WorkOrderUpdate",
]

EntityId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
HintId = Annotated[str | None, Query(min_length=1, max_length=200)]
Status = Literal["open", "scheduled", "in_progress", "completed", "cancelled"]
Money = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WorkOrderCreate(_Body):
    """``POST /work-orders``; a null field takes its default."""

    work_order_id: Text = Field(default_factory=lambda: f"wo_{uuid.uuid4().hex[:12]}")
    property_id: Text
    unit_id: Text | None = None
    status: Status = "open"
    priority: Literal["low", "normal", "high", "emergency"] = "normal"
    category: Text = "general"
    description: str = Field(default="", max_length=2000)

    @field_validator("unit_id", "status", "priority", "category", "description", mode="before")
    @classmethod
    def _null_means_default(cls, value: Any, info: ValidationInfo) -> Any:
        return cls.model_fields[str(info.field_name)].default if value is None else value


class WorkOrderUpdate(_Body):
    """``PATCH /work-orders/{id}``."""

    status: Status
    property_id: Text | None = None


class VendorRequest(_Body):
    """``POST /work-orders/{id}/assign-vendor``."""

    category: Text | None = None


class RenewalOfferCreate(_Body):
    """``POST /leases/{id}/renewal-offers``."""

    months: int = Field(ge=1, le=60)
    monthly_rent: Money


class LeaseUpdate(_Body):
    """``PUT /leases/{id}``."""

    end_date: date
    monthly_rent: Money | None = None


class LedgerEntryCreate(_Body):
    """``POST /ledger/entries``; ``amount`` may be negative (a reversal), never zero."""

    payment_id: Text
    amount: Annotated[Decimal, Field(max_digits=12, decimal_places=2)]
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    kind: Text


class NotificationCreate(_Body):
    """``POST /notifications``."""

    kind: Text
    recipient: str = Field(min_length=1, max_length=320)
    subject: str = Field(min_length=1, max_length=500)
    event_id: Text | None = None


class FaultSpec(_Body):
    """``POST /_sandbox/faults``: the next ``count`` matching requests wait ``delay_s``, then get ``status``.

    A null ``status`` means a delay only; then ``delay_after_s`` also holds the answer that long after the
    route ran (the change is made, the caller does not hear of it yet: a caller killed meanwhile has made
    a change it never saw). Paths under ``/_sandbox`` and ``/healthz`` are never faulted.
    """

    status: int | None = Field(default=503, ge=400, le=599)
    count: int = Field(default=1, ge=1, le=100_000)
    delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    delay_after_s: float = Field(default=0.0, ge=0.0, le=60.0)
    path_prefix: str = Field(default="/", pattern=r"^/")
    method: str | None = None
    retry_after_s: int | None = Field(default=None, ge=0, le=3600)

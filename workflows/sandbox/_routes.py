"""The sandbox's routes: the RentVine API calls the workflows make, and the fault controls."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from starlette.exceptions import HTTPException

from tracing import get_logger
from workflows.sandbox._db import LedgerEntry, Notification, SandboxStore, cents
from workflows.sandbox._faults import FaultInjector
from workflows.sandbox._models import (
    EntityId,
    FaultSpec,
    HintId,
    IdemKey,
    LeaseUpdate,
    LedgerEntryCreate,
    NotificationCreate,
    RenewalOfferCreate,
    VendorRequest,
    WorkOrderCreate,
    WorkOrderUpdate,
)
from workflows.sandbox._webhooks import WebhookAnnouncer

__all__ = ["http_error", "router", "server_error", "validation_error"]

_log = get_logger("workflows.sandbox")


def _error(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return _error(400, "invalid_json", "the body is not valid JSON")
    field = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
    return _error(422, "validation_error", f"{field}: {first['msg']}", field=field)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
    return _error(status, code, str(getattr(exc, "detail", "error")))


async def server_error(_: Request, __: Exception) -> JSONResponse:
    return _error(500, "internal_error", "the sandbox failed; see its log")


def _created(response: Response, created: bool) -> dict[str, bool]:
    response.status_code = 201 if created else 200
    return {"duplicate": not created}


def _store(request: Request) -> SandboxStore:
    store: SandboxStore = request.app.state.store
    return store


def _faults(request: Request) -> FaultInjector:
    faults: FaultInjector = request.app.state.faults
    return faults


class _Announce:
    """Announces a change as a webhook after the response is sent (nothing when webhooks are off)."""

    def __init__(self, request: Request, tasks: BackgroundTasks) -> None:
        self._webhooks: WebhookAnnouncer | None = request.app.state.webhooks
        self._tasks = tasks

    def __call__(self, event_type: str, record: dict[str, Any], keys: tuple[str, ...], **extra: Any) -> None:
        if self._webhooks is not None:
            data = {key: record[key] for key in keys} | extra
            cause = trace.get_current_span().get_span_context()
            self._tasks.add_task(self._webhooks.announce, event_type, data, cause)


Store = Annotated[SandboxStore, Depends(_store)]
Faults = Annotated[FaultInjector, Depends(_faults)]
Announce = Annotated[_Announce, Depends()]
_WORK_ORDER_KEYS: Final = ("work_order_id", "property_id", "status", "vendor_id")
router = APIRouter()


@router.get("/healthz", tags=["sandbox"])
def healthz() -> dict[str, str]:
    """Liveness; never traced."""
    return {"status": "ok"}


@router.get("/properties/{property_id}", tags=["properties"])
def get_property(property_id: EntityId, store: Store) -> dict[str, Any]:
    """A property (made up from its id the first time)."""
    return store.property(property_id)


@router.get("/work-orders/{work_order_id}", tags=["work orders"])
def get_work_order(work_order_id: EntityId, store: Store, property_id: HintId = None) -> dict[str, Any]:
    """A work order (made up the first time; on ``property_id`` when given)."""
    return store.work_order(work_order_id, property_id)


@router.post("/work-orders", status_code=201, tags=["work orders"])
def create_work_order(body: WorkOrderCreate, response: Response, store: Store) -> dict[str, Any]:
    """Create a work order: 201; 200 with ``duplicate: true`` when its id exists (left unchanged)."""
    change = store.create_work_order(body.model_dump())
    _log.info("sandbox.work_order.created", work_order_id=body.work_order_id, duplicate=not change.changed)
    return change.record | _created(response, change.changed)


@router.patch("/work-orders/{work_order_id}", tags=["work orders"])
def update_work_order(
    work_order_id: EntityId, body: WorkOrderUpdate, store: Store, announce: Announce
) -> dict[str, Any]:
    """Set a work order's status; a real change is announced as ``work_order.updated``."""
    change = store.update_work_order(work_order_id, body.status, body.property_id)
    _log.info(
        "sandbox.work_order.updated", work_order_id=work_order_id, status=body.status, changed=change.changed
    )
    if change.changed:
        announce("work_order.updated", change.record, _WORK_ORDER_KEYS)
    return change.record


@router.post("/work-orders/{work_order_id}/assign-vendor", tags=["work orders"])
def assign_vendor(
    work_order_id: EntityId,
    store: Store,
    announce: Announce,
    body: Annotated[VendorRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Assign the trade's vendor; a new assignment is announced as ``work_order.updated``."""
    change = store.assign_vendor(work_order_id, body.category if body else None)
    _log.info("sandbox.work_order.vendor_assigned", work_order_id=work_order_id, changed=change.changed)
    if change.changed:
        announce("work_order.updated", change.record, _WORK_ORDER_KEYS)
    return {key: change.record[key] for key in ("work_order_id", "vendor_id", "vendor_name", "status")}


@router.get("/leases/{lease_id}", tags=["leases"])
def get_lease(
    lease_id: EntityId, store: Store, property_id: HintId = None, tenant_id: HintId = None
) -> dict[str, Any]:
    """A lease (made up the first time; on ``property_id``/``tenant_id`` when given)."""
    return store.lease(lease_id, property_id, tenant_id)


@router.put("/leases/{lease_id}", tags=["leases"])
def update_lease(lease_id: EntityId, body: LeaseUpdate, store: Store, announce: Announce) -> dict[str, Any]:
    """Set a lease's end date (and rent); a new end date is announced as ``lease.renewed``."""
    rent = cents(body.monthly_rent) if body.monthly_rent is not None else None
    change, previous = store.update_lease(lease_id, body.end_date, rent)
    _log.info("sandbox.lease.updated", lease_id=lease_id, changed=change.changed)
    if previous is not None:
        new_end = change.record["end_date"]
        keys = ("lease_id", "property_id", "tenant_id")
        announce(
            "lease.renewed", change.record, keys, new_end_date=new_end, previous_end_date=previous.isoformat()
        )
    return change.record


@router.post("/leases/{lease_id}/renewal-offers", status_code=201, tags=["leases"])
def create_renewal_offer(
    lease_id: EntityId,
    body: RenewalOfferCreate,
    response: Response,
    store: Store,
    idempotency_key: IdemKey = None,
) -> dict[str, Any]:
    """Offer a renewal: 201; 200 with ``duplicate: true`` for an ``Idempotency-Key`` seen before.

    Not announced: the webhook contract has no event for an offer, and announcing it as a lease event
    would start the lease workflow again, which makes another offer.
    """
    change = store.create_renewal_offer(lease_id, body.months, cents(body.monthly_rent), idempotency_key)
    _log.info("sandbox.lease.renewal_offered", lease_id=lease_id, offer_id=change.record["id"])
    return change.record | _created(response, change.changed)


@router.get("/payments/{payment_id}", tags=["payments"])
def get_payment(payment_id: EntityId, store: Store, lease_id: HintId = None) -> dict[str, Any]:
    """A payment (made up the first time, for the lease's rent; on ``lease_id`` when given)."""
    return store.payment(payment_id, lease_id)


@router.post("/ledger/entries", status_code=201, tags=["ledger"])
def create_ledger_entry(
    body: LedgerEntryCreate, response: Response, store: Store, idempotency_key: IdemKey = None
) -> Any:
    """Record a ledger entry: 201; 200 with ``duplicate: true`` for an ``Idempotency-Key`` seen before."""
    if body.amount == 0:
        return _error(422, "validation_error", "amount: must not be zero", field="amount")
    fields = body.model_dump(exclude={"amount"}) | {"amount_cents": cents(body.amount)}
    change = store.create_ledger_entry(fields, idempotency_key)
    _log.info("sandbox.ledger.entry_recorded", payment_id=body.payment_id, entry_id=change.record["id"])
    return change.record | _created(response, change.changed)


@router.get("/ledger/entries", tags=["ledger"])
def list_ledger_entries(store: Store, payment_id: HintId = None) -> dict[str, Any]:
    """Ledger entries, oldest first, of one payment when given."""
    entries = store.list_rows(LedgerEntry, payment_id=payment_id)
    return {"entries": entries, "count": len(entries)}


@router.post("/notifications", status_code=201, tags=["notifications"])
def create_notification(
    body: NotificationCreate, response: Response, store: Store, idempotency_key: IdemKey = None
) -> dict[str, Any]:
    """Send a notification: 201; 200 with ``duplicate: true`` (not sent again) for a repeated key."""
    change = store.create_notification(body.model_dump(), idempotency_key)
    duplicate = not change.changed
    _log.info("sandbox.notification.sent", kind=body.kind, event_id=body.event_id, duplicate=duplicate)
    return change.record | _created(response, change.changed)


@router.get("/notifications", tags=["notifications"])
def list_notifications(store: Store, event_id: HintId = None) -> dict[str, Any]:
    """Notifications sent, oldest first, for one event when given."""
    found = store.list_rows(Notification, event_id=event_id)
    return {"notifications": found, "count": len(found)}


@router.get("/_sandbox/faults", tags=["sandbox"])
def list_faults(faults: Faults) -> dict[str, Any]:
    """The armed faults (local stand-in only)."""
    return {"faults": faults.armed()}


@router.post("/_sandbox/faults", status_code=201, tags=["sandbox"])
def add_fault(spec: FaultSpec, faults: Faults) -> dict[str, Any]:
    """Arm a fault (local stand-in only); see :class:`FaultSpec`."""
    faults.add(spec)
    return {"faults": faults.armed()}


@router.delete("/_sandbox/faults", tags=["sandbox"])
def clear_faults(faults: Faults) -> dict[str, int]:
    """Disarm every fault."""
    return {"cleared": faults.clear()}

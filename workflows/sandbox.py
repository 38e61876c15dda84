"""The RentVine API sandbox: a local stand-in for RentVine's API, not RentVine itself (``tracehook sandbox``).

It answers the calls the workflows make (properties, work orders, leases, payments, the ledger,
notifications) from a SQLite file, making up believable records for ids it has not seen. It is traced like
any service (``rentvine-sandbox``): its server spans are children of the caller's client span, with one
span per SQL query under them. Like RentVine, it announces changes made through its API as signed webhooks
(``SANDBOX_WEBHOOK_URL``), and for tests it can be told to fail (``POST /_sandbox/faults``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import metadata
from pathlib import Path as FilePath
from typing import Annotated, Any, Final, Literal

import httpx
import sqlalchemy
import uvicorn
from fastapi import APIRouter, BackgroundTasks, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from opentelemetry import context, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanContext, TracerProvider
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import event
from sqlalchemy.pool import StaticPool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tracing import configure_logging, configure_tracing, flush_tracing, get_logger
from workflows._fastapi import telemetry_off
from workflows._sandbox_db import LedgerEntry, Notification, SandboxStore, cents
from workflows.settings import AppSettings, load_app_settings
from workflows.signing import signed_headers

__all__ = ["SERVICE_NAME", "TITLE", "FaultInjector", "FaultSpec", "WebhookAnnouncer", "create_app", "serve"]

SERVICE_NAME: Final = "rentvine-sandbox"
TITLE: Final = "RentVine API sandbox (local stand-in)"
ACCOUNT_ID: Final = "acct_sandbox"
_log = get_logger("workflows.sandbox")

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


@dataclass
class _Fault:
    spec: FaultSpec
    remaining: int


class FaultInjector:
    """Faults armed through ``/_sandbox/faults``, kept in memory; the first matching fault is used up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []

    def add(self, spec: FaultSpec) -> None:
        """Arm a fault after those already armed."""
        with self._lock:
            self._faults.append(_Fault(spec, spec.count))

    def clear(self) -> int:
        """Disarm every fault; returns how many were armed."""
        with self._lock:
            count, self._faults = len(self._faults), []
        return count

    def armed(self) -> list[dict[str, Any]]:
        """The armed faults with the requests each has left."""
        with self._lock:
            return [{**fault.spec.model_dump(), "remaining": fault.remaining} for fault in self._faults]

    def take(self, method: str, path: str) -> FaultSpec | None:
        """The fault this request gets, if any (counted as used)."""
        if path.startswith("/_sandbox") or path == "/healthz":
            return None
        with self._lock:
            for fault in self._faults:
                spec = fault.spec
                if path.startswith(spec.path_prefix) and (spec.method or method).upper() == method.upper():
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return spec
        return None


class _FaultMiddleware:
    """Answers with the armed fault before the route runs (inside the server span, so it is traced)."""

    def __init__(self, app: ASGIApp, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = self.faults.take(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if spec is not None and spec.delay_s > 0:
            await asyncio.sleep(spec.delay_s)
        if spec is None or spec.status is None:
            held = spec.delay_after_s if spec is not None else 0.0
            await self.app(scope, receive, _held(send, held) if held > 0 else send)
            return
        headers = {"Retry-After": str(spec.retry_after_s)} if spec.retry_after_s is not None else None
        detail = f"fault injected through /_sandbox/faults: {spec.status}"
        response = JSONResponse({"error": "sandbox_fault", "detail": detail}, spec.status, headers)
        await response(scope, receive, send)


def _held(send: Send, delay_s: float) -> Send:
    """``send`` that waits ``delay_s`` before the response starts."""

    async def held_send(message: Any) -> None:
        if message.get("type") == "http.response.start":
            await asyncio.sleep(delay_s)
        await send(message)

    return held_send


class WebhookAnnouncer:
    """Sends change events to ``url`` as signed webhooks, one at a time, off the request path.

    No trace context goes with them: the intake ties a webhook to the change that caused it by entity id.
    A failed delivery is logged, never raised, and not retried.

    Args:
        url: where to POST (the intake's ``/webhooks/rentvine``).
        secret: the signing secret (as :func:`workflows.signing.decode_secret` reads it); unsigned when None.
        timeout_s: per-request timeout.
    """

    def __init__(self, url: str, secret: str | None, timeout_s: float = 3.0) -> None:
        self.url = url
        self._secret = secret
        self._client = httpx.Client(timeout=timeout_s)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-webhook")

    def announce(self, event_type: str, data: dict[str, Any], cause: SpanContext | None = None) -> str:
        """Queue one event; returns its id (``evt_sbx_<hex>``).

        Args:
            event_type: e.g. ``work_order.updated``.
            data: the event's ``data`` object.
            cause: the span of the request that made the change; only the delivery's log line names it.
        """
        created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        event_id = f"evt_sbx_{uuid.uuid4().hex}"
        event = {
            "id": event_id,
            "type": event_type,
            "created_at": created,
            "account_id": ACCOUNT_ID,
            "data": data,
        }
        ids = {}
        if cause is not None and cause.is_valid:
            ids = {"trace_id": format(cause.trace_id, "032x"), "span_id": format(cause.span_id, "016x")}
        self._executor.submit(self._send, event, ids)
        return event_id

    def _send(self, event: dict[str, Any], cause: dict[str, str]) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = (
            signed_headers(self._secret, body, msg_id=event["id"])
            if self._secret
            else {"content-type": "application/json"}
        )
        fields = {"event_id": event["id"], "event_type": event["type"], **cause}
        token = context.attach(context.Context())
        try:
            answer = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            _log.warning("sandbox.webhook.failed", error=f"{type(exc).__name__}: {exc}", **fields)
            return
        finally:
            context.detach(token)
        level = "info" if answer.is_success else "warning"
        getattr(_log, level)("sandbox.webhook.sent", status_code=answer.status_code, **fields)

    def close(self) -> None:
        """Send what is queued, then release the connection pool."""
        self._executor.shutdown(wait=True)
        self._client.close()


def _engine(path: str) -> sqlalchemy.Engine:
    if path == ":memory:":
        return sqlalchemy.create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
    FilePath(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(
        f"sqlite:///{FilePath(path).expanduser()}", connect_args={"check_same_thread": False, "timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _foreign_keys(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    return engine


def _error(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return _error(400, "invalid_json", "the body is not valid JSON")
    field = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
    return _error(422, "validation_error", f"{field}: {first['msg']}", field=field)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
    return _error(status, code, str(getattr(exc, "detail", "error")))


async def _server_error(_: Request, __: Exception) -> JSONResponse:
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


def create_app(
    settings: AppSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """Build the sandbox app on ``settings.sandbox_db``, instrumented (FastAPI and SQLAlchemy).

    Tracing itself is the process's to configure (:func:`serve` does); until then spans go nowhere.

    Args:
        settings: the sandbox's settings; read from the environment when omitted.
        tracer_provider: the provider for the instrumentations; the global one when omitted.
    """
    settings = settings if settings is not None else load_app_settings(service_name=SERVICE_NAME)
    engine = _engine(settings.sandbox_db)
    store = SandboxStore(engine)
    with suppress_instrumentation():
        store.create_schema()
    instrumentor = SQLAlchemyInstrumentor()
    # Once on in a process, create_engine is wrapped and engines made after that are traced already.
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(engine=engine, enable_commenter=False, tracer_provider=tracer_provider)
    secret = settings.webhook_secrets[0] if settings.webhook_secrets else None
    webhooks = (
        WebhookAnnouncer(settings.sandbox_webhook_url, secret) if settings.sandbox_webhook_url else None
    )
    if webhooks is not None and secret is None:
        _log.warning("sandbox.webhook.unsigned", detail="WEBHOOK_SECRET is not set: webhooks go out unsigned")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if webhooks is not None:
            await asyncio.to_thread(webhooks.close)
        engine.dispose()
        # uvicorn re-raises SIGTERM with the default handler once it has shut down, so atexit hooks (the
        # tracing library's final flush among them) never run: export the last spans here.
        await asyncio.to_thread(flush_tracing)

    try:
        version = metadata.version("tracehook")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    app = FastAPI(
        title=TITLE,
        version=version,
        description=__doc__,
        lifespan=lifespan,
        # A bearer key is accepted (and shown in the OpenAPI document), never checked, logged or traced.
        dependencies=[Depends(HTTPBearer(auto_error=False))],
        **telemetry_off(),
    )
    app.state.store, app.state.faults, app.state.webhooks = store, FaultInjector(), webhooks
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(_FaultMiddleware, faults=app.state.faults)
    # One SERVER span per request: the ASGI receive/send sub-spans say nothing a reader needs.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="healthz", tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
    )
    return app


def serve(host: str = "127.0.0.1", port: int = 8081, settings: AppSettings | None = None) -> None:
    """Run the sandbox with uvicorn until stopped, tracing and logging as ``rentvine-sandbox``.

    Args:
        host: interface to listen on.
        port: port to listen on (8081 is where the workers look by default).
        settings: read from the environment when omitted (service name ``rentvine-sandbox``).
    """
    settings = settings if settings is not None else load_app_settings(service_name=SERVICE_NAME)
    configure_tracing(settings.tracing)
    configure_logging(settings.tracing)
    _log.info("sandbox.starting", host=host, port=port, webhooks=bool(settings.sandbox_webhook_url))
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)

"""The webhook intake: ``POST /webhooks/rentvine`` verifies, classifies, dedupes and enqueues events.

Order (docs/intake.md): size limit → signature → content type → JSON → schema → classify → root span →
dedupe → enqueue → 202. The root span ``webhook.<type>`` (SERVER) is made only once the event is
classified, so the sampler sees its priority, and dated from the request's receipt; a sender's
``traceparent`` becomes a Link, never the parent.
Run it with ``tracehook intake`` or ``uvicorn workflows.intake:app``. ``GET /metrics`` serves the
intake's metrics (``workflows.metrics``) for Prometheus.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import redis
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    format_trace_id,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

from tracing import (
    configure_logging,
    configure_tracing,
    extract_context,
    flush_tracing,
    span_ids,
    trace_span,
)
from tracing.metrics import configure_metrics, count, observe
from tracing.prometheus import metrics_registry, render
from workflows._fastapi import telemetry_off
from workflows._offload import Offload
from workflows.correlation import entity_ids, source_from, source_keys
from workflows.events import EventError, WebhookEvent, classify_priority, parse_event
from workflows.metrics import (
    INTAKE_DURATION,
    WEBHOOKS_RECEIVED,
    event_type_label,
    outcome_of,
    start_intake_counters,
)
from workflows.queue import CONFIRM_HEADER, REDIS_TRANSPORT, TASK_NAME, Publisher, producer_app
from workflows.settings import AppSettings, load_app_settings
from workflows.signing import SignatureError, StandardWebhooksVerifier, Verifier
from workflows.store import KeyValueStore, StoreScript, open_store

__all__ = ["DEDUPE_TTL_S", "PENDING_TTL_S", "ROUTE", "create_app"]

ROUTE: Final = "/webhooks/rentvine"
DEDUPE_TTL_S: Final = 24 * 3600
PENDING_TTL_S: Final = 30
RETRY_AFTER_S: Final = "5"
_DEDUPE_PREFIX: Final = "tracehook:dedupe:"
_PENDING: Final = "tracehook:pending"
_UNAVAILABLE: Final = frozenset({"store_unavailable", "broker_unavailable"})
# The claim, atomically: the webhook id's key (KEYS[1]) set to pending (ARGV[1]) for ARGV[2] seconds unless
# it exists; the key's state; the values of the source keys (KEYS[2...]), if any.
_CLAIM: Final = StoreScript(
    "local fresh = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])\n"
    "local found = {}\n"
    "if #KEYS > 1 then found = redis.call('MGET', unpack(KEYS, 2)) end\n"
    "return {fresh and 1 or 0, redis.call('GET', KEYS[1]), found}\n"
)

log = structlog.get_logger("workflows.intake")
_root_span: contextvars.ContextVar[SpanContext] = contextvars.ContextVar("tracehook_intake_root_span")
# The request's receipt (time.time_ns() when handle() starts): the root span's start, and the task's
# received_at, from which the worker measures receipt → done (workflows.objective).
_received_ns: contextvars.ContextVar[int] = contextvars.ContextVar("tracehook_intake_received_ns")
# Set when the store or the broker could not be reached: the call then counts as failed (workflows._offload).
_unreachable: contextvars.ContextVar[bool] = contextvars.ContextVar("tracehook_intake_unreachable")


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _received_at() -> float:
    """The request's receipt in seconds since the epoch (the task's ``received_at``)."""
    return _received_ns.get(time.time_ns()) / 1e9


class _TooLargeError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Claim:
    """What the store answered before the root span: the webhook id's claim, the source operation."""

    key: str
    fresh: bool = False
    state: bytes | str | None = None
    source: tuple[dict[str, str], Link] | None = None
    reachable: bool = True


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (without reading it whole) anything over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


class Intake:
    """The intake's collaborators: verifier, dedupe store, publisher. Injectable for tests."""

    def __init__(
        self,
        settings: AppSettings,
        verifier: Verifier | None,
        store: KeyValueStore,
        publisher: Publisher,
        *,
        confirm_in_publish: bool = False,
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self.store = store
        self.publisher = publisher
        # The store is the broker's Redis and the broker's transport is REDIS_TRANSPORT: the dedupe key is
        # confirmed in the publish's own transaction, not by a round trip after it.
        self.confirm_in_publish = confirm_in_publish
        self._offload = Offload()

    def reject(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        event_id: str = "",
        event_type: str = "",
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        """Answer an error, count it and log ``webhook.rejected``."""
        count(WEBHOOKS_RECEIVED, 1, {"event_type": event_type_label(event_type), "outcome": outcome_of(code)})
        log.info(
            "webhook.rejected",
            outcome=code,
            status=status,
            event_id=event_id or None,
            event_type=event_type or None,
        )
        return _error(status, code, detail, headers)

    async def handle(self, request: Request) -> JSONResponse:
        """The whole check-and-enqueue path of one webhook, timed."""
        started = time.perf_counter()
        ctx = contextvars.copy_context()
        ctx.run(_received_ns.set, time.time_ns())
        response = await self._handle(request, ctx)
        root = ctx.get(_root_span, None)
        observe(
            INTAKE_DURATION,
            time.perf_counter() - started,
            {"status": response.status_code},
            context=trace.set_span_in_context(NonRecordingSpan(root)) if root is not None else None,
        )
        return response

    async def _handle(self, request: Request, ctx: contextvars.Context) -> JSONResponse:
        try:
            body = await _read_body(request, self.settings.max_bytes)
        except _TooLargeError:
            return self.reject(413, "payload_too_large", f"body is over {self.settings.max_bytes} bytes")
        headers = {key.lower(): value for key, value in request.headers.items()}
        if self.verifier is not None:
            try:
                self.verifier.verify(headers, body)
            except SignatureError as exc:
                return self.reject(401, "invalid_signature", str(exc))
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return self.reject(415, "unsupported_media_type", "content type must be application/json")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # bad JSON, bad UTF-8, over-long integer literals, deep nesting
            return self.reject(400, "invalid_json", "body is not valid JSON")
        try:
            event = parse_event(payload)
        except EventError as exc:
            event_type = payload.get("type") if isinstance(payload, dict) else None
            return self.reject(
                422,
                "invalid_event",
                f"{exc.field}: {exc.message}",
                event_type=event_type if isinstance(event_type, str) else "",
            )
        return await self._offload.run(
            lambda: ctx.run(self._accept, event, payload, headers),
            lambda _: ctx.get(_unreachable, False),
        )

    def _claim(self, event: WebhookEvent, headers: dict[str, str]) -> _Claim:
        """One round trip to the store, before the root span: the entities' source operations, and the
        webhook id claimed as pending (``SET NX``) with the state it had if it was claimed already."""
        key = _DEDUPE_PREFIX + (headers.get("webhook-id") or event.id)
        sources = source_keys(entity_ids(event.data.model_dump()))
        try:
            # Before the root span exists: a Redis span here would be a trace of its own.
            with suppress_instrumentation():
                # Claimed as pending until the task is queued: an intake that dies (or loses Redis) between
                # the claim and the publish must not leave a key that answers the sender's retry
                # "duplicate" for an event that was never queued. A pending key expires on its own.
                fresh, state, found = _CLAIM(self.store, [key, *sources], [_PENDING, PENDING_TTL_S])
        except redis.RedisError:
            return _Claim(key, reachable=False)
        return _Claim(key, bool(fresh), state, source_from(found) if found else None)

    def _links(self, headers: dict[str, str], claim: _Claim) -> tuple[list[Link], dict[str, str] | None]:
        links: list[Link] = []
        sender = trace.get_current_span(extract_context(headers)).get_span_context()
        if sender.is_valid:
            links.append(Link(sender, {"link.kind": "sender"}))
        source = None
        if claim.source is not None:
            source, link = claim.source
            links.append(link)
        return links, source

    def _accept(self, event: WebhookEvent, payload: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
        priority = classify_priority(event)
        claim = self._claim(event, headers)
        links, source = self._links(headers, claim)
        attributes: dict[str, Any] = {
            "rentvine.event_type": event.type,
            "rentvine.event_id": event.id,
            "rentvine.account_id": event.account_id,
            "workflow.priority": priority,
            "webhook.source": "rentvine",
            "http.request.method": "POST",
            "url.path": ROUTE,
        }
        if source is not None:
            attributes["webhook.source_trace_id"] = source["trace_id"]
            attributes["webhook.source_span_id"] = source["span_id"]
        with trace_span(
            f"webhook.{event.type}",
            kind=SpanKind.SERVER,
            attributes=attributes,
            context=otel_context.Context(),
            links=links,
            start_time=_received_ns.get(None),
        ) as span:
            # Read back by handle(): the intake's duration gets this trace as its exemplar.
            _root_span.set(span.get_span_context())
            trace_id = format_trace_id(span.get_span_context().trace_id)
            response, accepted = self._dedupe_and_enqueue(event, payload, claim, priority, trace_id)
            span.set_attribute("http.response.status_code", response.status_code)
            if accepted is not None:  # a refusal set its own (_retry_later)
                span.set_attribute("webhook.outcome", accepted["outcome"])
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR, "broker unavailable"))
        if accepted is not None:
            # Logged with the root span's ids once it has ended: the line is correlated to it, and the span,
            # which has the line's facts as attributes (webhook.outcome), gets no span event for it. That
            # event cost about 0.3-0.9 ms of CPU per webhook under load (benchmarks/intake_cpu.py).
            log.info("webhook.accepted", **accepted, **span_ids(span.get_span_context()))
        return response

    def _retry_later(self, code: str, detail: str, event: WebhookEvent) -> JSONResponse:
        """503 + Retry-After: nothing was kept, so the sender's retry of the same webhook goes through."""
        trace.get_current_span().set_attribute("webhook.outcome", code)
        if code in _UNAVAILABLE:
            _unreachable.set(True)
        return self.reject(
            503,
            code,
            f"{detail}; retry later",
            event_id=event.id,
            event_type=event.type,
            headers={"Retry-After": RETRY_AFTER_S},
        )

    def _dedupe_and_enqueue(
        self, event: WebhookEvent, payload: dict[str, Any], claim: _Claim, priority: str, trace_id: str
    ) -> tuple[JSONResponse, dict[str, Any] | None]:
        """The answer, and the fields of its ``webhook.accepted`` line when it accepted the webhook."""
        if not claim.reachable:
            return self._retry_later("store_unavailable", "the dedupe store cannot be reached", event), None
        if not claim.fresh and claim.state in {_PENDING, _PENDING.encode()}:
            in_flight = "a delivery of this webhook id is being queued"
            return self._retry_later("in_flight", in_flight, event), None
        if not claim.fresh:
            count(WEBHOOKS_RECEIVED, 1, {"event_type": event_type_label(event.type), "outcome": "duplicate"})
            line = {"outcome": "duplicate", "event_id": event.id, "event_type": event.type}
            return JSONResponse({"status": "duplicate", "event_id": event.id}, status_code=200), line
        confirm = [claim.key, event.id, DEDUPE_TTL_S] if self.confirm_in_publish else None
        try:
            task_id = self._publish(event, payload, priority, confirm)
        except Exception as exc:
            # Nothing was queued: release the key so the sender's retry goes through.
            try:
                self.store.delete(claim.key)
            except redis.RedisError:
                log.warning("webhook.dedupe_release_failed", event_id=event.id)
            trace.get_current_span().record_exception(exc)
            return self._retry_later("broker_unavailable", "the queue cannot be reached", event), None
        if confirm is None:  # not confirmed with the push: a command of its own
            try:
                self.store.set(claim.key, event.id, ex=DEDUPE_TTL_S)
            except redis.RedisError:
                # Queued all the same: answer 202. The pending claim expires, after which a new delivery
                # of this id would be queued again; its steps are idempotent per event id.
                log.warning("webhook.dedupe_confirm_failed", event_id=event.id)
        count(WEBHOOKS_RECEIVED, 1, {"event_type": event_type_label(event.type), "outcome": "queued"})
        line = {
            "outcome": "queued",
            "event_id": event.id,
            "event_type": event.type,
            "priority": priority,
            "task_id": task_id,
        }
        return JSONResponse(
            {"status": "queued", "event_id": event.id, "trace_id": trace_id, "task_id": task_id},
            status_code=202,
        ), line

    def _publish(
        self, event: WebhookEvent, payload: dict[str, Any], priority: str, confirm: list[Any] | None
    ) -> str:
        """Publish the workflow's task with the event in the baggage; its task id. ``confirm``, when
        given, is the dedupe key the broker's transport sets with the push (``CONFIRM_HEADER``)."""
        ctx = baggage.set_baggage("event_id", event.id)
        ctx = baggage.set_baggage("event_type", event.type, ctx)
        token = otel_context.attach(ctx)
        try:
            result = self.publisher.send_task(
                TASK_NAME,
                kwargs={"event": payload, "priority": priority, "received_at": _received_at()},
                retry=False,
                # The intake reads only the task id: no result subscription per publish; and the
                # message's repr headers name the event instead of copying its payload.
                ignore_result=True,
                argsrepr="()",
                kwargsrepr=f"{{'event': <{event.type} {event.id}>}}",
                **({"headers": {CONFIRM_HEADER: confirm}} if confirm is not None else {}),
            )
        finally:
            otel_context.detach(token)
        return str(result.id)


def create_app(
    settings: AppSettings | None = None,
    *,
    verifier: Verifier | None = None,
    store: KeyValueStore | None = None,
    publisher: Publisher | None = None,
    configure: bool = True,
    confirm_in_publish: bool | None = None,
) -> FastAPI:
    """Build the intake app.

    Args:
        settings: read from the environment when omitted.
        verifier: the signature scheme; Standard Webhooks over WEBHOOK_SECRET when omitted.
        store: the Redis client for dedupe and source correlation; from REDIS_URL when omitted.
        publisher: the Celery app that publishes; a producer app for CELERY_BROKER_URL when omitted.
        configure: set up tracing and logging for this process.
        confirm_in_publish: confirm the dedupe key in the publish's own transaction (one round trip
            less), where the broker is the store's Redis through ``REDIS_TRANSPORT``; by default, when
            this function builds both the store and the publisher from the settings.

    Raises:
        SettingsError: no WEBHOOK_SECRET and WEBHOOK_ALLOW_UNSIGNED is not true, or a bad setting.
    """
    settings = settings or load_app_settings(service_name="tracehook-intake")
    settings.require_webhook_security()
    if verifier is None and settings.webhook_secrets:
        verifier = StandardWebhooksVerifier(settings.webhook_secrets)
    if configure:
        configure_tracing(settings.tracing)
        configure_logging(settings.tracing)
        configure_metrics(settings.tracing)
    start_intake_counters()
    if confirm_in_publish is None:
        confirm_in_publish = store is None and publisher is None
    # No retries with backoff: a Redis that is down must give the sender a quick 503, not hold a thread.
    store = store or open_store(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    publisher = publisher or producer_app()
    conf = getattr(publisher, "conf", None)
    # Only where the transport is ours (it removes the header and sets the key) and its Redis is the store's.
    confirm_in_publish = (
        confirm_in_publish
        and conf is not None
        and conf.broker_transport == REDIS_TRANSPORT
        and conf.broker_url == settings.redis_url
    )
    intake = Intake(settings, verifier, store, publisher, confirm_in_publish=confirm_in_publish)

    # FastAPI's own telemetry would open a root span above ours, before the event is classified.
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn re-raises SIGTERM after its shutdown, so atexit never runs: export what is left now.
        flush_tracing()

    app = FastAPI(title="tracehook intake", lifespan=lifespan, **telemetry_off())

    @app.post(ROUTE, status_code=202)
    async def receive(request: Request) -> JSONResponse:
        return await intake.handle(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    registry = metrics_registry()

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        # Never traced, like /healthz: the app has no HTTP instrumentation, only the webhook's root span.
        body, content_type = render(registry, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            await anyio.to_thread.run_sync(store.ping)
        except redis.RedisError as exc:
            return _error(503, "redis_unavailable", type(exc).__name__)
        return JSONResponse({"status": "ready"})

    app.state.intake = intake
    return app


def __getattr__(name: str) -> Callable[..., Any] | FastAPI:
    # `uvicorn workflows.intake:app` builds the app from the environment on first access, so importing
    # this module (tests, the CLI) does not require a webhook secret.
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)

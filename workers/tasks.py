"""The workers' task: ``process_webhook_event`` runs one event's workflow, retries, dead-letters."""

from __future__ import annotations

import random
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id

from tracing.celery_metrics import set_task_status
from workers.celery_app import app
from workflows.dlq import DeadLetters
from workflows.engine import run_workflow
from workflows.objective import record_completion
from workflows.queue import TASK_NAME
from workflows.rentvine import RentVineClient, RentVineError
from workflows.settings import AppSettings, load_app_settings
from workflows.store import KeyValueStore, open_store

__all__ = ["backoff_s", "process_webhook_event"]

log = structlog.get_logger("workers.tasks")
_settings: AppSettings | None = None
_client: RentVineClient | None = None
_store: KeyValueStore | None = None


def _resources() -> tuple[AppSettings, RentVineClient, KeyValueStore]:
    """Per-process settings, API client and Redis client (made after fork, in the pool child)."""
    global _settings, _client, _store  # noqa: PLW0603
    if _settings is None or _client is None or _store is None:
        _settings = load_app_settings(service_name="tracehook-worker")
        _store = open_store(_settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        _client = RentVineClient(
            _settings.rentvine_api_url,
            _settings.rentvine_api_key,
            timeout_s=_settings.rentvine_timeout_s,
            source_store=_store,
        )
    return _settings, _client, _store


def backoff_s(retries: int, base_s: float, cap_s: float = 300.0) -> float:
    """Exponential backoff with full jitter: a random delay up to ``base * 2**retries``, capped."""
    return random.uniform(0, min(cap_s, base_s * (2**retries)))  # noqa: S311  # jitter, not security


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def process_webhook_event(
    self: Any,
    event: dict[str, Any],
    priority: str = "normal",
    received_at: float | None = None,
    replay_of: str | None = None,
) -> dict[str, Any]:
    """Run the workflow of one RentVine event; retry API failures, dead-letter after the last retry.

    ``received_at`` is the intake's receipt of the webhook (seconds since the epoch; a replay's own time):
    the last attempt records receipt → done (``workflows.objective``). Absent in a task published by an
    older intake or by hand: the task runs the same, unmeasured.
    """
    settings, client, store = _resources()
    client.tenant_id = str(event.get("account_id") or "")
    if replay_of:
        trace.get_current_span().set_attribute("dlq.replay_of", replay_of)
    with structlog.contextvars.bound_contextvars(
        event_id=str(event.get("id")), event_type=str(event.get("type"))
    ):
        try:
            result = run_workflow(event, client, priority=priority, workflow_id=self.request.id)
        except RentVineError as exc:
            if exc.retryable and self.request.retries < settings.task_max_retries:
                delay = backoff_s(self.request.retries, settings.task_retry_backoff_s)
                log.warning(
                    "workflow.retry",
                    attempt=self.request.retries + 1,
                    countdown_s=round(delay, 3),
                    error=str(exc),
                )
                raise self.retry(exc=exc, countdown=delay, max_retries=settings.task_max_retries) from exc
            _dead_letter(store, event, exc, self.request, received_at, settings.webhook_objective_s)
            raise
        except Exception as exc:
            _dead_letter(store, event, exc, self.request, received_at, settings.webhook_objective_s)
            raise
        record_completion(event.get("type"), "completed", received_at, settings.webhook_objective_s)
        return result


def _dead_letter(
    store: KeyValueStore,
    event: dict[str, Any],
    exc: BaseException,
    request: Any,
    received_at: float | None,
    objective_s: float,
) -> None:
    """Put the event on the dead-letter list with its trace; the webhook's last attempt is over."""
    ctx = trace.get_current_span().get_span_context()
    entry = DeadLetters(store).add(
        event=event,
        trace_id=format_trace_id(ctx.trace_id),
        span_id=format_span_id(ctx.span_id),
        error=exc,
        attempts=int(request.retries or 0) + 1,
        task_id=str(request.id),
    )
    set_task_status(str(request.id), "dead_lettered")
    log.error("workflow.dead_lettered", dlq_id=entry.id, error=str(exc), attempts=entry.attempts)
    record_completion(event.get("type"), "dead_lettered", received_at, objective_s)

"""The sandbox's change announcements: signed webhooks to the intake, as RentVine sends them."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final

import httpx
from opentelemetry import context
from opentelemetry.trace import SpanContext

from tracing import get_logger, span_ids
from workflows.signing import signed_headers

__all__ = ["ACCOUNT_ID", "WebhookAnnouncer"]

ACCOUNT_ID: Final = "acct_sandbox"
_log = get_logger("workflows.sandbox")


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
        self._executor.submit(self._send, event, span_ids(cause) if cause is not None else {})
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

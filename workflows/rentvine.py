"""RentVine API client on httpx: every call a CLIENT span, context and correlation id sent, key never shown.

5xx answers, timeouts and connection errors are retryable (the task retries with backoff); 4xx are not.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode

from tracing import inject_headers, trace_span
from workflows.correlation import record_source
from workflows.store import KeyValueStore

__all__ = ["RentVineClient", "RentVineError"]


class RentVineError(Exception):
    """A RentVine API call failed; ``retryable`` says whether trying again later may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles task exceptions; keyword-only arguments need spelling out.
        return (_rebuild_error, (str(self), self.retryable, self.status))


def _rebuild_error(message: str, retryable: bool, status: int | None) -> RentVineError:
    return RentVineError(message, retryable=retryable, status=status)


class RentVineClient:
    """A small, traced RentVine API client.

    Args:
        base_url: the API's base URL (RENTVINE_API_URL).
        api_key: sent as a bearer token; never put in a span or a log line.
        timeout_s: per-request timeout.
        tenant_id: the account the calls are made for (``rentvine.tenant_id`` on spans).
        source_store: a Redis client to record which operation changed which entity (source correlation).
        transport: an httpx transport (tests).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        timeout_s: float = 5.0,
        tenant_id: str = "",
        source_store: KeyValueStore | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant_id = tenant_id
        self._source_store = source_store
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # httpx logs every request at INFO; our CLIENT span records the same, so keep its lines out of the
        # logs (and out of the span events they would be mirrored into).
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, headers=headers, transport=transport
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        resource: str,
        action: str,
        json: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        changes: str | None = None,
    ) -> Any:
        """Call the API in a ``rentvine.<resource>.<action>`` CLIENT span and return the decoded JSON.

        Args:
            changes: the id of the entity this call changes, recorded for source correlation.

        Raises:
            RentVineError: the call failed (``retryable`` for 5xx, timeouts and connection errors).
        """
        correlation_id = str(uuid.uuid4())
        attributes = {
            "http.request.method": method,
            "http.method": method,
            "url.full": f"{self.base_url}{path}",
            "server.address": self._http.base_url.host,
            "rentvine.tenant_id": self.tenant_id,
            "correlation_id": correlation_id,
        }
        with trace_span(f"rentvine.{resource}.{action}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            if changes and self._source_store is not None:
                # Before the call: RentVine may announce the change before we have read its answer.
                try:
                    record_source(self._source_store, changes, span)
                except Exception as exc:  # correlation is a nicety; never fail the call for it
                    span.add_event("source_correlation.failed", {"exception.type": type(exc).__name__})
            headers = dict(inject_headers({"X-Correlation-ID": correlation_id}))
            if idempotency_key:
                headers["Idempotency-Key"] = idempotency_key
            try:
                response = self._http.request(method, path, json=json, headers=headers)
            except httpx.TimeoutException as exc:
                msg = f"RentVine {resource}.{action} timed out"
                raise RentVineError(msg, retryable=True) from exc
            except httpx.TransportError as exc:
                msg = f"RentVine {resource}.{action}: {type(exc).__name__}"
                raise RentVineError(msg, retryable=True) from exc
            span.set_attributes(
                {
                    "http.response.status_code": response.status_code,
                    "http.status_code": response.status_code,
                    "response.size": len(response.content),
                }
            )
            if response.status_code >= 400:
                retryable = response.status_code >= 500 or response.status_code == 429
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
                detail = _detail(response)
                msg = f"RentVine {resource}.{action}: HTTP {response.status_code} {detail}".strip()
                raise RentVineError(msg, retryable=retryable, status=response.status_code)
            return response.json() if response.content else {}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or "")[:200]
    return ""

"""A small client of Jaeger v2's query API (``/api/v3``), for ``tracehook trace``.

``GET {query_url}/api/v3/traces/{trace_id}`` answers 200 with ``{"result": {"resourceSpans": [...]}}``
(Jaeger's HTTP gateway wraps OTLP/JSON ``TracesData`` in ``result``), or 404 with
``{"error": {"httpCode": 404, "message": "No traces found"}}``. Older gRPC-gateway builds streamed several
``{"result": ...}`` objects back to back; those are read too.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["JaegerError", "JaegerUnreachableError", "TraceNotFoundError", "fetch_trace", "trace_url"]


class JaegerError(Exception):
    """Jaeger answered, but not with a trace (5xx, 400, or a body that is not JSON)."""


class JaegerUnreachableError(JaegerError):
    """Nothing answered at the query URL (connection refused, DNS failure, timeout)."""


class TraceNotFoundError(JaegerError):
    """Jaeger has no trace with that id (404, or an empty answer)."""


def trace_url(query_url: str, trace_id: str) -> str:
    """The API address of one trace."""
    return f"{query_url.rstrip('/')}/api/v3/traces/{trace_id}"


def _documents(text: str) -> list[Any]:
    """One JSON document, or several written back to back (a streamed gateway answer)."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    index, size = 0, len(text)
    while True:
        while index < size and text[index].isspace():
            index += 1
        if index >= size:
            return documents
        document, index = decoder.raw_decode(text, index)
        documents.append(document)


def fetch_trace(query_url: str, trace_id: str, *, timeout: float = 10.0) -> list[Any]:
    """The JSON documents Jaeger returns for ``trace_id`` (hex).

    Raises:
        JaegerUnreachableError: nothing answered.
        TraceNotFoundError: 404.
        JaegerError: any other non-200 answer, or a body that is not JSON.
    """
    url = trace_url(query_url, trace_id)
    try:
        response = httpx.get(url, timeout=timeout, headers={"accept": "application/json"})
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise JaegerUnreachableError(f"{type(exc).__name__}: {exc}") from None
    if response.status_code == 404:
        raise TraceNotFoundError(response.text.strip()[:500])
    if response.status_code != 200:
        raise JaegerError(f"HTTP {response.status_code}: {response.text.strip()[:500]}")
    try:
        return _documents(response.text)
    except json.JSONDecodeError as exc:
        raise JaegerError(f"the answer is not JSON ({exc}): {response.text[:200]!r}") from None

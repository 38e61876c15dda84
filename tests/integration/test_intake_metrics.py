"""The intake's metrics in process, against the real Redis: one outcome per answer, bounded labels, never
a failed request because of a metric."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from tests.integration.conftest import REDIS_URL
from tests.integration.test_intake import close_publisher, closed_port, make_publisher, new_secret
from tests.metrics_scrape import Scrape
from tracing import TracingSettings
from tracing.metrics import configure_metrics
from workflows.events import EVENT_TYPES, load_fixture
from workflows.intake import ROUTE, create_app
from workflows.metrics import WEBHOOK_OUTCOMES
from workflows.settings import AppSettings
from workflows.signing import signed_headers

pytestmark = pytest.mark.integration
RECEIVED = "tracehook_webhooks_received_total"


@pytest.fixture
def secret() -> str:
    return new_secret()


def intake_client(secret: str, store: redis.Redis[bytes], publisher: Any) -> httpx.AsyncClient:
    tracing = TracingSettings(service_name="tracehook-intake", exporter="none")
    assert configure_metrics(tracing)
    settings = AppSettings(tracing=tracing, redis_url=REDIS_URL, webhook_secrets=(secret,), max_bytes=4096)
    app = create_app(settings, store=store, publisher=publisher, configure=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake")


@pytest.fixture
async def client(secret: str, store: redis.Redis[bytes], queue: str) -> AsyncIterator[httpx.AsyncClient]:
    """The intake app with metrics on, publishing for real to the test's queue."""
    publisher = make_publisher(queue)
    async with intake_client(secret, store, publisher) as http:
        yield http
    close_publisher(publisher)


async def post(client: httpx.AsyncClient, secret: str, payload: Any, **headers: str) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signed = {**signed_headers(secret, body, msg_id=headers.pop("webhook-id", None)), **headers}
    return await client.post(ROUTE, content=body, headers=signed)


async def scraped(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert 200 == response.status_code
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


def event(fixture: str = "lease_expiring") -> dict[str, Any]:
    payload = load_fixture(fixture)
    payload["id"] = f"evt_metrics_{uuid.uuid4().hex}"
    return payload


class TestOutcomes:
    """Each answer of the intake is counted once, under its outcome and (when known) its event type."""

    async def test_every_rejection(self, client: httpx.AsyncClient, secret: str) -> None:
        """413, 401, 415, 400 and 422 are too_large, rejected_signature, _media_type, _json and _schema."""
        assert 413 == (await post(client, secret, b"{" + b" " * 5000 + b"}")).status_code
        assert 401 == (await post(client, new_secret(), event())).status_code
        text = await post(client, secret, b"{}", **{"content-type": "text/plain"})
        assert 415 == text.status_code
        assert 400 == (await post(client, secret, b"{not json")).status_code
        invalid = event("payment_received")
        del invalid["data"]["payment_id"]
        assert 422 == (await post(client, secret, invalid)).status_code
        metrics = await scraped(client)
        for outcome in ("too_large", "rejected_signature", "rejected_media_type", "rejected_json"):
            assert 1 == metrics.value(RECEIVED, event_type="unknown", outcome=outcome), outcome
        assert 1 == metrics.value(RECEIVED, event_type="payment.received", outcome="rejected_schema")
        assert 5 == metrics.value(RECEIVED)
        assert 5 == metrics.value("tracehook_intake_duration_seconds_count")

    async def test_senders_cannot_make_label_values(self, client: httpx.AsyncClient, secret: str) -> None:
        """Event types nobody knows, invented by the sender, are all counted as ``unknown``."""
        for index in range(5):
            made_up = {**event(), "type": f"lease.made_up_{index}"}
            assert 422 == (await post(client, secret, made_up)).status_code
        metrics = await scraped(client)
        assert {"unknown"} == metrics.label_values(RECEIVED, "event_type", counted=True)
        assert 5 == metrics.value(RECEIVED, event_type="unknown", outcome="rejected_schema")

    async def test_queued_and_duplicate(
        self, client: httpx.AsyncClient, secret: str, store: redis.Redis[bytes]
    ) -> None:
        """A 202 then, with the same webhook-id, a 200: one queued, one duplicate."""
        payload = event()
        headers = {"webhook-id": f"msg_{payload['id']}"}
        try:
            body = json.dumps(payload).encode()
            for expected in (202, 200):
                answer = await client.post(
                    ROUTE, content=body, headers=signed_headers(secret, body, msg_id=headers["webhook-id"])
                )
                assert expected == answer.status_code
        finally:
            store.delete(f"tracehook:dedupe:{headers['webhook-id']}")
        metrics = await scraped(client)
        assert 1 == metrics.value(RECEIVED, event_type="lease.expiring", outcome="queued")
        assert 1 == metrics.value(RECEIVED, event_type="lease.expiring", outcome="duplicate")
        assert (1, 1) == (
            metrics.value("tracehook_intake_duration_seconds_count", status="202"),
            metrics.value("tracehook_intake_duration_seconds_count", status="200"),
        )

    async def test_broker_down(self, secret: str, store: redis.Redis[bytes], queue: str) -> None:
        """The 503 of an unreachable broker is counted as broker_unavailable."""
        publisher = make_publisher(queue, CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0")
        try:
            async with intake_client(secret, store, publisher) as http:
                assert 503 == (await post(http, secret, event())).status_code
                metrics = await scraped(http)
        finally:
            close_publisher(publisher)
        assert 1 == metrics.value(RECEIVED, event_type="lease.expiring", outcome="broker_unavailable")


class TestCountersStartAtZero:
    """A fresh intake exports every (event type, outcome) at 0 before any webhook, so the first 503 after
    a start is an increase Prometheus sees (TracehookQueueUnavailable)."""

    async def test_before_any_webhook(self, client: httpx.AsyncClient) -> None:
        """Each known event type and ``unknown``, with each outcome: present, and all 0."""
        metrics = await scraped(client)
        assert {(kind, outcome) for kind in (*EVENT_TYPES, "unknown") for outcome in WEBHOOK_OUTCOMES} == {
            (s.labels["event_type"], s.labels["outcome"]) for s in metrics.samples if s.name == RECEIVED
        }
        assert 0 == metrics.value(RECEIVED)


class TestMetricsNeverFailARequest:
    """A metric that cannot be recorded is logged; the webhook is still answered and queued."""

    async def test_broken_meter(
        self,
        client: httpx.AsyncClient,
        secret: str,
        store: redis.Redis[bytes],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """With every instrument raising, the answer is still 202 and /metrics still answers."""

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("meter exploded")

        monkeypatch.setattr("tracing.metrics._key", broken)
        msg_id = f"msg_{uuid.uuid4().hex}"
        try:
            assert 202 == (await post(client, secret, event(), **{"webhook-id": msg_id})).status_code
        finally:
            store.delete(f"tracehook:dedupe:{msg_id}")
        assert any("could not record metric" in record.getMessage() for record in caplog.records)
        assert 0 == (await scraped(client)).value(RECEIVED)

    async def test_openmetrics_on_request(self, client: httpx.AsyncClient) -> None:
        """A scraper asking for OpenMetrics (Prometheus with exemplar storage) gets it."""
        response = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.endswith("# EOF\n")

"""The webhook intake in process, against the real Redis: docs/intake.md's answer table, root span, logs.

Each test builds the app with ``create_app(..., configure=False)`` (tracing, when a test looks at spans,
comes from the in-memory ``span_exporter`` fixture) and talks to it through ``httpx.ASGITransport``, which
hands the request body to the app chunk by chunk as the app asks for it. Accepted events are published
for real, on the real Redis, to a queue of the test's own that nobody consumes; the queue, its kombu
bindings and every dedupe key a test used are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import CapturedLogs, by_name
from tests.integration.conftest import REDIS_URL, ROOT
from tracing import TracingSettings, configure_tracing, instrument_celery
from tracing.celery_tracing import ENQUEUED_AT_HEADER
from tracing.settings import SettingsError
from workflows.correlation import ENTITY_KEYS
from workflows.events import FIXTURES, load_fixture
from workflows.intake import ROUTE, create_app
from workflows.queue import CONFIRM_HEADER, TASK_NAME, producer_app
from workflows.settings import AppSettings
from workflows.signing import decode_secret, new_secret, sign, signed_headers

pytestmark = pytest.mark.integration

DEDUPE_PREFIX = "tracehook:dedupe:"
PUBLISH = f"publish {TASK_NAME}"
HEX32 = re.compile(r"[0-9a-f]{32}")
MIB = 1024 * 1024
SMALL_LIMIT = 64 * 1024

PRIORITIES = {
    "work_order_emergency": "emergency",
    "payment_received": "critical",
    "payment_failed": "critical",
}


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def dead_redis() -> redis.Redis[bytes]:
    """A client for a Redis that is not there, failing at once (no retries with backoff)."""
    return redis.Redis(
        host="127.0.0.1",
        port=closed_port(),
        socket_connect_timeout=1,
        socket_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )


class BlackHoleProxy:
    """A TCP proxy in front of the test's Redis that can stop answering: while stopped, what clients send
    is dropped, as a network partition or a hung server would leave it."""

    def __init__(self) -> None:
        target = redis.Redis.from_url(REDIS_URL).connection_pool.connection_kwargs
        self._target = (target.get("host", "127.0.0.1"), int(target.get("port", 6379)))
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.forwarding.is_set():
                    sink.sendall(chunk)
                else:
                    self.dropped += 1
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()
        for sock in self._sockets:
            sock.close()


def tracing_settings(**changes: Any) -> TracingSettings:
    return TracingSettings(service_name="tracehook-intake", exporter="none", **changes)


def queued(store: redis.Redis[bytes], queue: str) -> list[dict[str, Any]]:
    """The kombu messages waiting in a queue's Redis list, decoded."""
    return [json.loads(raw) for raw in store.lrange(queue, 0, -1)]


def task_kwargs(message: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a Celery (protocol 2) task message."""
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    found: dict[str, Any] = kwargs
    return found


def roots(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [span for span in spans if span.name.startswith("webhook.")]


def assert_error(response: httpx.Response, status: int, code: str, *, secret: str, marker: str) -> None:
    """An error answer: JSON ``{"error", "detail"}`` with this code, echoing neither secret nor body."""
    assert status == response.status_code, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert {"error", "detail"} == set(payload)
    assert code == payload["error"]
    assert isinstance(payload["detail"], str)
    assert payload["detail"]
    assert secret not in response.text
    assert secret.removeprefix("whsec_") not in response.text
    assert marker not in response.text


@dataclass
class Webhooks:
    """Builds, signs and posts webhooks to one in-process intake; remembers the dedupe keys it used."""

    client: httpx.AsyncClient
    secret: str
    keys: set[str]
    marker: str = field(default_factory=lambda: f"do-not-echo-{uuid.uuid4().hex}")

    def event(self, fixture: str = "lease_expiring") -> dict[str, Any]:
        """A copy of a fixture with a fresh id, fresh entity ids and a marker field that no answer may echo.

        Fresh entity ids: a source-correlation entry another run left in the shared Redis for a fixture's
        entity would otherwise add a Link to the root span.
        """
        payload = load_fixture(fixture)
        payload["id"] = f"evt_test_{uuid.uuid4().hex}"
        data = payload.get("data") or {}
        for key in ENTITY_KEYS:
            if isinstance(data.get(key), str):
                data[key] = f"{data[key]}_{uuid.uuid4().hex[:8]}"
        payload["note"] = self.marker
        self.keys.add(DEDUPE_PREFIX + payload["id"])
        return payload

    def headers(
        self,
        body: bytes,
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        """Standard Webhooks headers signing ``body``."""
        msg_id = msg_id or f"msg_test_{uuid.uuid4().hex}"
        self.keys.add(DEDUPE_PREFIX + msg_id)
        return signed_headers(secret or self.secret, body, msg_id=msg_id, timestamp=timestamp)

    async def post(
        self,
        payload: dict[str, Any] | bytes,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        """Post a body (a dict is JSON-encoded), signed unless ``headers`` are given."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if headers is None:
            headers = self.headers(body, msg_id=msg_id, timestamp=timestamp, secret=secret)
        return await self.client.post(ROUTE, content=body, headers=headers)


@pytest.fixture
def settings() -> TracingSettings:
    """The intake's tracing settings (overrides the unit-test default used by span_exporter/captured_logs)."""
    return tracing_settings()


def make_publisher(queue: str, **env: str) -> Any:
    return producer_app({"REDIS_URL": REDIS_URL, "CELERY_DEFAULT_QUEUE": queue, **env})


def close_publisher(app: Any) -> None:
    instrument_celery(app).uninstrument()
    app.close()


@pytest.fixture
def publisher(queue: str) -> Iterator[Any]:
    """A working producer app publishing to the test's queue."""
    app = make_publisher(queue)
    yield app
    close_publisher(app)


@pytest.fixture
def broken_publisher(queue: str) -> Iterator[Any]:
    """A producer app whose broker is a closed port."""
    app = make_publisher(queue, CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0")
    yield app
    close_publisher(app)


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def dedupe_keys(store: redis.Redis[bytes]) -> Iterator[set[str]]:
    """Dedupe keys the test may have created; deleted afterwards."""
    keys: set[str] = set()
    yield keys
    if keys:
        store.delete(*keys)


@pytest.fixture
def build(store: redis.Redis[bytes], publisher: Any, secret: str) -> Callable[..., FastAPI]:
    """Build an intake app: the test's secret, Redis and publisher unless told otherwise."""

    def build_app(
        *,
        secrets: tuple[str, ...] | None = None,
        max_bytes: int = SMALL_LIMIT,
        allow_unsigned: bool = False,
        publisher: Any = publisher,
        store: Any = store,
        confirm_in_publish: bool | None = None,
    ) -> FastAPI:
        app_settings = AppSettings(
            tracing=tracing_settings(),
            redis_url=REDIS_URL,
            webhook_secrets=(secret,) if secrets is None else secrets,
            allow_unsigned=allow_unsigned,
            max_bytes=max_bytes,
        )
        return create_app(
            app_settings,
            store=store,
            publisher=publisher,
            configure=False,
            confirm_in_publish=confirm_in_publish,
        )

    return build_app


@pytest.fixture
async def webhooks(
    build: Callable[..., FastAPI], secret: str, dedupe_keys: set[str]
) -> AsyncIterator[Callable[..., Webhooks]]:
    """Connect a :class:`Webhooks` sender to an app (a default-built one when none is given)."""
    clients: list[httpx.AsyncClient] = []

    def connect(app: FastAPI | None = None, *, secret_: str | None = None) -> Webhooks:
        transport = httpx.ASGITransport(app=app if app is not None else build())
        client = httpx.AsyncClient(transport=transport, base_url="http://intake")
        clients.append(client)
        return Webhooks(client, secret_ or secret, dedupe_keys)

    yield connect
    for client in clients:
        await client.aclose()


class TestQueued:
    """202: a verified, valid event is published to the broker with the trace context in its headers."""

    async def test_answer_names_event_trace_and_task(
        self,
        webhooks: Callable[..., Webhooks],
        span_exporter: InMemorySpanExporter,
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        hooks = webhooks()
        event = hooks.event("work_order_created")

        response = await hooks.post(event)

        assert 202 == response.status_code, response.text
        body = response.json()
        assert {"status", "event_id", "trace_id", "task_id"} == set(body)
        assert "queued" == body["status"]
        assert event["id"] == body["event_id"]
        assert HEX32.fullmatch(body["trace_id"])
        assert "0" * 32 != body["trace_id"]
        assert body["task_id"]

    async def test_message_sits_in_the_queue_with_the_answers_trace(
        self,
        webhooks: Callable[..., Webhooks],
        span_exporter: InMemorySpanExporter,
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        hooks = webhooks()
        event = hooks.event("work_order_created")

        body = (await hooks.post(event)).json()

        (message,) = queued(store, queue)
        headers = message["headers"]
        assert TASK_NAME == headers["task"]
        assert body["task_id"] == headers["id"]
        version, trace_id, span_id, _flags = headers["traceparent"].split("-")
        assert "00" == version
        assert body["trace_id"] == trace_id
        assert f"event_id={event['id']}" in headers["baggage"].split(",")
        assert float(headers[ENQUEUED_AT_HEADER]) > 0
        kwargs = task_kwargs(message)
        assert event == kwargs["event"]
        assert "normal" == kwargs["priority"]
        publish = by_name(span_exporter.get_finished_spans(), PUBLISH)
        assert format(publish.context.span_id, "016x") == span_id

    async def test_signature_covers_the_raw_bytes_not_reserialised_json(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        """A body in any JSON layout is accepted when its own bytes are signed."""
        hooks = webhooks()
        body = json.dumps(hooks.event(), indent=3, sort_keys=True).encode()

        response = await hooks.post(body)

        assert 202 == response.status_code, response.text
        assert 1 == len(queued(store, queue))

    async def test_content_type_parameters_are_allowed(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()
        headers = {**hooks.headers(body), "content-type": "Application/JSON; charset=utf-8"}

        response = await hooks.post(body, headers=headers)

        assert 202 == response.status_code, response.text


class TestDuplicate:
    """200: an event whose dedupe key (webhook-id header, else body id) was accepted before is not queued again."""

    async def test_same_webhook_id_twice(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        """A sender's retry keeps webhook-id; it is re-signed with a new timestamp and answered 200."""
        hooks = webhooks()
        event = hooks.event()
        msg_id = f"msg_test_{uuid.uuid4().hex}"

        first = await hooks.post(event, msg_id=msg_id)
        again = await hooks.post(event, msg_id=msg_id)

        assert 202 == first.status_code, first.text
        assert 200 == again.status_code, again.text
        assert {"status": "duplicate", "event_id": event["id"]} == again.json()
        assert 1 == len(queued(store, queue))

    async def test_dedupe_key_lives_24_hours(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        msg_id = f"msg_test_{uuid.uuid4().hex}"

        response = await hooks.post(hooks.event(), msg_id=msg_id)

        assert 202 == response.status_code, response.text
        assert 23 * 3600 < store.ttl(DEDUPE_PREFIX + msg_id) <= 24 * 3600

    async def test_header_is_the_key_when_present(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        """docs/intake.md: the key is the webhook-id header; the same body id under new webhook-ids is queued."""
        hooks = webhooks()
        event = hooks.event()

        first = await hooks.post(event)
        second = await hooks.post(event)

        assert (202, 202) == (first.status_code, second.status_code)
        assert 2 == len(queued(store, queue))

    async def test_body_id_is_the_key_without_header(
        self,
        webhooks: Callable[..., Webhooks],
        build: Callable[..., FastAPI],
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        """An unsigned intake (WEBHOOK_ALLOW_UNSIGNED) gets no webhook-id: the body's id dedupes."""
        hooks = webhooks(build(secrets=(), allow_unsigned=True))
        event = hooks.event()
        plain = {"content-type": "application/json"}

        first = await hooks.post(event, headers=plain)
        again = await hooks.post(event, headers=plain)

        assert 202 == first.status_code, first.text
        assert {"status": "duplicate", "event_id": event["id"]} == again.json()
        assert 200 == again.status_code
        assert 1 == len(queued(store, queue))


class TestNotJson:
    """400: a signed body that is not JSON (or not decodable) is refused, without echoing it."""

    @pytest.mark.parametrize(
        "body",
        [
            b"not json at all {",
            b'{"id": "evt", "type": ',
            b'{"id": "\xff\xfe broken utf-8"}',
            b"[" * 10_000 + b"]" * 10_000,
            b"",
        ],
        ids=["text", "truncated", "invalid-utf8", "nested-10000", "empty"],
    )
    async def test_refused(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str, body: bytes
    ) -> None:
        hooks = webhooks()
        body = body + hooks.marker.encode()

        response = await hooks.post(body)

        assert_error(response, 400, "invalid_json", secret=hooks.secret, marker=hooks.marker)
        assert [] == queued(store, queue)

    async def test_integer_over_python_digit_limit(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        event = hooks.event()
        body = json.dumps(event).encode()[:-1] + b', "amount": 1' + b"0" * 5000 + b"}"

        response = await hooks.post(body)

        assert_error(response, 400, "invalid_json", secret=hooks.secret, marker=hooks.marker)


class TestUnauthorized:
    """401: missing signature headers, a signature no secret made, or a stale/future timestamp."""

    @pytest.mark.parametrize(
        "dropped",
        [
            ("webhook-id",),
            ("webhook-timestamp",),
            ("webhook-signature",),
            ("webhook-id", "webhook-signature"),
        ],
    )
    async def test_missing_headers(
        self,
        webhooks: Callable[..., Webhooks],
        store: redis.Redis[bytes],
        queue: str,
        dropped: tuple[str, ...],
    ) -> None:
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()
        headers = {k: v for k, v in hooks.headers(body).items() if k not in dropped}

        response = await hooks.post(body, headers=headers)

        assert_error(response, 401, "invalid_signature", secret=hooks.secret, marker=hooks.marker)
        assert [] == queued(store, queue)

    async def test_wrong_secret(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()
        headers = hooks.headers(body, secret=new_secret())
        expected = sign(
            decode_secret(hooks.secret), headers["webhook-id"], headers["webhook-timestamp"], body
        )

        response = await hooks.post(body, headers=headers)

        assert_error(response, 401, "invalid_signature", secret=hooks.secret, marker=hooks.marker)
        assert expected.removeprefix("v1,") not in response.text
        assert [] == queued(store, queue)

    async def test_body_changed_after_signing(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        """The same JSON re-serialised is other bytes: the signature no longer matches."""
        hooks = webhooks()
        event = hooks.event()
        headers = hooks.headers(json.dumps(event).encode())

        response = await hooks.post(json.dumps(event, indent=2).encode(), headers=headers)

        assert_error(response, 401, "invalid_signature", secret=hooks.secret, marker=hooks.marker)

    @pytest.mark.parametrize("offset", [-360, 360, -(10**6)])
    async def test_timestamp_outside_tolerance(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str, offset: int
    ) -> None:
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()
        headers = hooks.headers(body, timestamp=int(time.time()) + offset)

        response = await hooks.post(body, headers=headers)

        assert_error(response, 401, "invalid_signature", secret=hooks.secret, marker=hooks.marker)
        assert "300" in response.json()["detail"]
        assert [] == queued(store, queue)

    @pytest.mark.parametrize("offset", [-240, 240])
    async def test_timestamp_inside_tolerance_is_accepted(
        self, webhooks: Callable[..., Webhooks], queue: str, offset: int
    ) -> None:
        hooks = webhooks()

        response = await hooks.post(hooks.event(), timestamp=int(time.time()) + offset)

        assert 202 == response.status_code, response.text

    @pytest.mark.parametrize("signer", [0, 1], ids=["old-secret", "new-secret"])
    async def test_rotation_any_configured_secret_may_sign(
        self, webhooks: Callable[..., Webhooks], build: Callable[..., FastAPI], queue: str, signer: int
    ) -> None:
        secrets = (new_secret(), new_secret())
        hooks = webhooks(build(secrets=secrets), secret_=secrets[signer])

        response = await hooks.post(hooks.event())

        assert 202 == response.status_code, response.text

    async def test_several_signatures_where_only_the_second_matches(
        self,
        webhooks: Callable[..., Webhooks],
        build: Callable[..., FastAPI],
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        secrets = (new_secret(), new_secret())
        hooks = webhooks(build(secrets=secrets), secret_=secrets[1])
        body = json.dumps(hooks.event()).encode()
        headers = hooks.headers(body)
        stranger = sign(
            decode_secret(new_secret()), headers["webhook-id"], headers["webhook-timestamp"], body
        )
        headers["webhook-signature"] = f"{stranger} v2,notours {headers['webhook-signature']}"

        response = await hooks.post(body, headers=headers)

        assert 202 == response.status_code, response.text
        assert 1 == len(queued(store, queue))

    async def test_several_signatures_none_matching(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()
        headers = hooks.headers(body)
        others = [
            sign(decode_secret(new_secret()), headers["webhook-id"], headers["webhook-timestamp"], body)
            for _ in range(3)
        ]
        headers["webhook-signature"] = " ".join(others)

        response = await hooks.post(body, headers=headers)

        assert_error(response, 401, "invalid_signature", secret=hooks.secret, marker=hooks.marker)


class _Counted:
    """An async request body of ``total`` bytes that counts how many bytes the app pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = chunk
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            piece = b" " * min(self.chunk, self.total - self.pulled)
            self.pulled += len(piece)
            yield piece


class TestTooLarge:
    """413: a body over WEBHOOK_MAX_BYTES is refused before the signature, and never read whole."""

    async def test_declared_content_length_over_limit(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        event = hooks.event()
        event["padding"] = "x" * SMALL_LIMIT
        body = json.dumps(event).encode()

        response = await hooks.post(body)

        assert_error(response, 413, "payload_too_large", secret=hooks.secret, marker=hooks.marker)
        assert [] == queued(store, queue)

    async def test_declared_content_length_refused_before_reading(
        self, webhooks: Callable[..., Webhooks]
    ) -> None:
        hooks = webhooks()
        body = _Counted(2 * SMALL_LIMIT)
        headers = {"content-type": "application/json", "content-length": str(body.total)}

        response = await hooks.client.post(ROUTE, content=body, headers=headers)

        assert_error(response, 413, "payload_too_large", secret=hooks.secret, marker=hooks.marker)
        assert 0 == body.pulled

    async def test_chunked_without_content_length(self, webhooks: Callable[..., Webhooks]) -> None:
        hooks = webhooks()
        body = _Counted(4 * SMALL_LIMIT, chunk=4096)

        response = await hooks.client.post(ROUTE, content=body, headers={"content-type": "application/json"})

        assert "content-length" not in response.request.headers
        assert "chunked" == response.request.headers["transfer-encoding"]
        assert_error(response, 413, "payload_too_large", secret=hooks.secret, marker=hooks.marker)
        assert SMALL_LIMIT < body.pulled < 4 * SMALL_LIMIT

    async def test_two_mib_stream_is_not_read_whole(
        self, webhooks: Callable[..., Webhooks], build: Callable[..., FastAPI]
    ) -> None:
        """With the default 1 MiB limit, a streamed 2 MiB body is cut off just past 1 MiB."""
        hooks = webhooks(build(max_bytes=MIB))
        body = _Counted(2 * MIB)

        response = await hooks.client.post(ROUTE, content=body, headers={"content-type": "application/json"})

        assert_error(response, 413, "payload_too_large", secret=hooks.secret, marker=hooks.marker)
        assert MIB < body.pulled < 2 * MIB

    async def test_body_at_the_limit_is_accepted(self, webhooks: Callable[..., Webhooks], queue: str) -> None:
        hooks = webhooks()
        event = hooks.event()
        event["padding"] = ""
        size = len(json.dumps(event).encode())
        event["padding"] = "x" * (SMALL_LIMIT - size)
        body = json.dumps(event).encode()
        assert SMALL_LIMIT == len(body)

        response = await hooks.post(body)

        assert 202 == response.status_code, response.text


class TestUnsupportedMediaType:
    """415: a correctly signed body whose content type is not application/json."""

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
    async def test_refused(
        self,
        webhooks: Callable[..., Webhooks],
        store: redis.Redis[bytes],
        queue: str,
        content_type: str | None,
    ) -> None:
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()
        headers = hooks.headers(body)
        del headers["content-type"]
        if content_type is not None:
            headers["content-type"] = content_type

        response = await hooks.post(body, headers=headers)

        assert_error(response, 415, "unsupported_media_type", secret=hooks.secret, marker=hooks.marker)
        assert [] == queued(store, queue)


class TestInvalidEvent:
    """422: JSON that is not a valid event; ``detail`` names the field, never its value."""

    async def test_unknown_type(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        event = hooks.event()
        event["type"] = hooks.marker

        response = await hooks.post(event)

        assert_error(response, 422, "invalid_event", secret=hooks.secret, marker=hooks.marker)
        assert response.json()["detail"].startswith("type")
        assert [] == queued(store, queue)

    async def test_missing_field_is_named(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        event = hooks.event("lease_renewed")
        del event["data"]["new_end_date"]

        response = await hooks.post(event)

        assert_error(response, 422, "invalid_event", secret=hooks.secret, marker=hooks.marker)
        assert "data.new_end_date" in response.json()["detail"]
        assert [] == queued(store, queue)

    async def test_wrong_value_is_named_not_echoed(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        hooks = webhooks()
        event = hooks.event("payment_received")
        event["data"]["amount"] = hooks.marker

        response = await hooks.post(event)

        assert_error(response, 422, "invalid_event", secret=hooks.secret, marker=hooks.marker)
        assert "data.amount" in response.json()["detail"]

    async def test_not_an_object(self, webhooks: Callable[..., Webhooks]) -> None:
        hooks = webhooks()

        response = await hooks.post(json.dumps([hooks.marker]).encode())

        assert_error(response, 422, "invalid_event", secret=hooks.secret, marker=hooks.marker)


class TestBrokerUnavailable:
    """503 + Retry-After when the broker cannot be reached; the dedupe key is released for the retry."""

    async def test_answer_and_release(
        self,
        webhooks: Callable[..., Webhooks],
        build: Callable[..., FastAPI],
        broken_publisher: Any,
        span_exporter: InMemorySpanExporter,
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        down = webhooks(build(publisher=broken_publisher))
        up = webhooks()
        event = down.event()
        msg_id = f"msg_test_{uuid.uuid4().hex}"

        refused = await down.post(event, msg_id=msg_id)

        assert_error(refused, 503, "broker_unavailable", secret=down.secret, marker=down.marker)
        assert int(refused.headers["retry-after"]) > 0
        assert 0 == store.exists(DEDUPE_PREFIX + msg_id)
        root = by_name(span_exporter.get_finished_spans(), "webhook.lease.expiring")
        assert StatusCode.ERROR == root.status.status_code
        assert "broker_unavailable" == root.attributes["webhook.outcome"]

        retried = await up.post(event, msg_id=msg_id)

        assert 202 == retried.status_code, retried.text
        assert "queued" == retried.json()["status"]
        (message,) = queued(store, queue)
        assert event["id"] == task_kwargs(message)["event"]["id"]


class TestStoreUnavailable:
    """503 + Retry-After when the dedupe store cannot be reached: nothing is queued, the retry is safe."""

    async def test_nothing_queued(
        self,
        webhooks: Callable[..., Webhooks],
        build: Callable[..., FastAPI],
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        dead = dead_redis()
        hooks = webhooks(build(store=dead))

        response = await hooks.post(hooks.event())

        dead.close()
        assert_error(response, 503, "store_unavailable", secret=hooks.secret, marker=hooks.marker)
        assert int(response.headers["retry-after"]) > 0
        assert [] == queued(store, queue)


class TestRootSpan:
    """One SERVER root span ``webhook.<type>`` per accepted event, made after classification and dated
    from the request's receipt."""

    @pytest.mark.parametrize("fixture", FIXTURES)
    async def test_root_and_publish_spans(
        self, webhooks: Callable[..., Webhooks], span_exporter: InMemorySpanExporter, queue: str, fixture: str
    ) -> None:
        hooks = webhooks()
        event = hooks.event(fixture)

        response = await hooks.post(event)

        assert 202 == response.status_code, response.text
        spans = span_exporter.get_finished_spans()
        (root,) = roots(spans)
        assert f"webhook.{event['type']}" == root.name
        assert SpanKind.SERVER == root.kind
        assert root.parent is None
        assert root.attributes is not None
        assert event["type"] == root.attributes["rentvine.event_type"]
        assert PRIORITIES.get(fixture, "normal") == root.attributes["workflow.priority"]
        assert response.json()["trace_id"] == format(root.context.trace_id, "032x")
        publish = by_name(spans, PUBLISH)
        assert SpanKind.PRODUCER == publish.kind
        assert publish.parent is not None
        assert root.context.span_id == publish.parent.span_id
        assert root.context.trace_id == publish.context.trace_id

    async def test_sender_traceparent_is_a_link_never_the_parent(
        self,
        webhooks: Callable[..., Webhooks],
        span_exporter: InMemorySpanExporter,
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        hooks = webhooks()
        sender_trace, sender_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        body = json.dumps(hooks.event()).encode()
        headers = {
            **hooks.headers(body),
            "traceparent": f"00-{sender_trace}-{sender_span}-01",
            "baggage": "event_id=spoofed,tenant=evil",
        }

        response = await hooks.post(body, headers=headers)

        assert 202 == response.status_code, response.text
        (root,) = roots(span_exporter.get_finished_spans())
        assert root.parent is None
        assert sender_trace != format(root.context.trace_id, "032x")
        linked = [
            (format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"))
            for link in root.links
        ]
        assert [(sender_trace, sender_span)] == linked
        (message,) = queued(store, queue)
        assert sender_trace not in message["headers"]["traceparent"]
        assert "spoofed" not in message["headers"]["baggage"]
        assert "evil" not in message["headers"]["baggage"]

    async def test_root_starts_at_the_receipt_the_task_carries(
        self,
        webhooks: Callable[..., Webhooks],
        span_exporter: InMemorySpanExporter,
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        """The request's start, before its body has arrived, is the root span's start and the task's
        ``received_at``: the receipt the worker measures receipt → done from."""
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()
        headers = hooks.headers(body)
        marks: list[int] = []

        async def slow_sender() -> AsyncIterator[bytes]:
            yield body[:10]
            await asyncio.sleep(0.2)  # a sender still sending: the receipt is not when the body is whole
            marks.append(time.time_ns())
            yield body[10:]

        sent = time.time_ns()
        response = await hooks.client.post(ROUTE, content=slow_sender(), headers=headers)

        assert 202 == response.status_code, response.text
        (root,) = roots(span_exporter.get_finished_spans())
        assert root.start_time is not None
        assert sent <= root.start_time < marks[0] - 100_000_000
        (message,) = queued(store, queue)
        assert root.start_time / 1e9 == pytest.approx(task_kwargs(message)["received_at"], abs=1e-6)

    async def test_rejected_webhook_has_no_root_span(
        self, webhooks: Callable[..., Webhooks], span_exporter: InMemorySpanExporter
    ) -> None:
        hooks = webhooks()
        body = json.dumps(hooks.event()).encode()

        response = await hooks.post(body, headers=hooks.headers(body, secret=new_secret()))

        assert 401 == response.status_code
        assert [] == roots(span_exporter.get_finished_spans())


class TestSampling:
    """Emergency work orders and payments are kept at TRACE_SAMPLING_RATE=0; the answer's trace_id is real."""

    async def test_emergency_and_payments_kept_ordinary_dropped(
        self, webhooks: Callable[..., Webhooks], store: redis.Redis[bytes], queue: str
    ) -> None:
        exporter = InMemorySpanExporter()
        configure_tracing(
            tracing_settings(sampling_rate=0.0, emergency_sampling_rate=1.0), exporter=exporter, batch=False
        )
        hooks = webhooks()
        answers = {}
        for fixture in ("work_order_emergency", "payment_received", "lease_expiring"):
            response = await hooks.post(hooks.event(fixture))
            assert 202 == response.status_code, response.text
            answers[fixture] = response.json()

        recorded = {
            format(span.context.trace_id, "032x"): span.name for span in roots(exporter.get_finished_spans())
        }
        assert {
            answers["work_order_emergency"]["trace_id"]: "webhook.work_order.created",
            answers["payment_received"]["trace_id"]: "webhook.payment.received",
        } == recorded
        ordinary = answers["lease_expiring"]["trace_id"]
        assert HEX32.fullmatch(ordinary)
        assert "0" * 32 != ordinary
        by_task = {message["headers"]["id"]: message["headers"] for message in queued(store, queue)}
        _version, trace_id, _span, flags = by_task[answers["lease_expiring"]["task_id"]]["traceparent"].split(
            "-"
        )
        assert ordinary == trace_id
        assert 0 == int(flags, 16) & 1


class TestLogs:
    """``webhook.accepted`` is logged with the root span's ids, which has its outcome as an attribute; every
    refusal logs ``webhook.rejected``."""

    async def test_accepted_with_the_root_span(
        self,
        webhooks: Callable[..., Webhooks],
        span_exporter: InMemorySpanExporter,
        captured_logs: CapturedLogs,
        queue: str,
    ) -> None:
        hooks = webhooks()
        event = hooks.event("payment_failed")

        response = await hooks.post(event)

        assert 202 == response.status_code, response.text
        (line,) = [line for line in captured_logs.lines if line["event"] == "webhook.accepted"]
        (root,) = roots(span_exporter.get_finished_spans())
        assert event["id"] == line["event_id"]
        assert "payment.failed" == line["event_type"]
        assert "queued" == line["outcome"]
        assert response.json()["trace_id"] == line["trace_id"]
        assert format(root.context.trace_id, "032x") == line["trace_id"]
        assert format(root.context.span_id, "016x") == line["span_id"]
        assert "queued" == root.attributes["webhook.outcome"]
        # The span has the line's facts as attributes: no span event repeats them.
        assert "webhook.accepted" not in [e.name for e in root.events]
        assert hooks.secret not in captured_logs.text

    async def test_duplicate_logged_with_its_outcome(
        self,
        webhooks: Callable[..., Webhooks],
        span_exporter: InMemorySpanExporter,
        captured_logs: CapturedLogs,
        queue: str,
    ) -> None:
        hooks = webhooks()
        event = hooks.event()
        msg_id = f"msg_test_{uuid.uuid4().hex}"

        await hooks.post(event, msg_id=msg_id)
        await hooks.post(event, msg_id=msg_id)

        lines = [line for line in captured_logs.lines if line["event"] == "webhook.accepted"]
        assert ["queued", "duplicate"] == [line["outcome"] for line in lines]
        outcomes = {
            format(root.context.span_id, "016x"): root.attributes["webhook.outcome"]
            for root in roots(span_exporter.get_finished_spans())
        }
        assert {line["span_id"]: line["outcome"] for line in lines} == outcomes

    @pytest.mark.parametrize(
        ("case", "outcome"),
        [
            ("bad-signature", "invalid_signature"),
            ("not-json", "invalid_json"),
            ("wrong-type", "unsupported_media_type"),
            ("unknown-event", "invalid_event"),
            ("too-large", "payload_too_large"),
        ],
    )
    async def test_rejected_with_outcome(
        self,
        webhooks: Callable[..., Webhooks],
        captured_logs: CapturedLogs,
        store: redis.Redis[bytes],
        queue: str,
        case: str,
        outcome: str,
    ) -> None:
        hooks = webhooks()
        event = hooks.event()
        body = json.dumps(event).encode()
        headers = hooks.headers(body)
        if case == "bad-signature":
            headers = hooks.headers(body, secret=new_secret())
        elif case == "not-json":
            body = b"{" + body
            headers = hooks.headers(body)
        elif case == "wrong-type":
            headers["content-type"] = "text/plain"
        elif case == "unknown-event":
            body = json.dumps({**event, "type": "lease.exploded"}).encode()
            headers = hooks.headers(body)
        else:
            body = b" " * (SMALL_LIMIT + 1)

        response = await hooks.post(body, headers=headers)

        assert 400 <= response.status_code < 500
        rejected = [line for line in captured_logs.lines if line["event"] == "webhook.rejected"]
        assert [outcome] == [line["outcome"] for line in rejected]
        assert not [line for line in captured_logs.lines if line["event"] == "webhook.accepted"]
        assert hooks.secret not in captured_logs.text
        assert hooks.marker not in captured_logs.text
        assert [] == queued(store, queue)


class TestHealth:
    """``/healthz`` is liveness and never traced; ``/readyz`` is 200 only while Redis answers."""

    async def test_healthz_not_traced(
        self, webhooks: Callable[..., Webhooks], span_exporter: InMemorySpanExporter
    ) -> None:
        hooks = webhooks()

        response = await hooks.client.get("/healthz")

        assert 200 == response.status_code
        assert {"status": "ok"} == response.json()
        assert () == span_exporter.get_finished_spans()

    async def test_readyz_with_redis(self, webhooks: Callable[..., Webhooks]) -> None:
        hooks = webhooks()

        response = await hooks.client.get("/readyz")

        assert 200 == response.status_code
        assert {"status": "ready"} == response.json()

    async def test_readyz_without_redis(
        self, webhooks: Callable[..., Webhooks], build: Callable[..., FastAPI]
    ) -> None:
        dead = dead_redis()
        hooks = webhooks(build(store=dead))

        response = await hooks.client.get("/readyz")

        dead.close()
        assert 503 == response.status_code
        assert "redis_unavailable" == response.json()["error"]


class TestConfirmInPublish:
    """Where the dedupe store is the broker's Redis, the key is confirmed in the push's own transaction."""

    async def test_key_confirmed_and_header_gone(
        self,
        webhooks: Callable[..., Webhooks],
        build: Callable[..., FastAPI],
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        app = build(confirm_in_publish=True)
        hooks = webhooks(app)
        msg_id = f"msg_test_{uuid.uuid4().hex}"
        event = hooks.event()

        response = await hooks.post(event, msg_id=msg_id)

        assert app.state.intake.confirm_in_publish
        assert 202 == response.status_code, response.text
        assert event["id"].encode() == store.get(DEDUPE_PREFIX + msg_id)
        assert 23 * 3600 < store.ttl(DEDUPE_PREFIX + msg_id) <= 24 * 3600
        (message,) = queued(store, queue)
        assert CONFIRM_HEADER not in message["headers"]
        assert event["id"] == task_kwargs(message)["event"]["id"]

    async def test_push_and_confirm_in_one_transaction(
        self,
        webhooks: Callable[..., Webhooks],
        build: Callable[..., FastAPI],
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        """Redis's MONITOR sees one script call from a client, naming the queue and the key, and, run by
        that script, the push to the queue and the key's SET, nothing in between (a script is atomic)."""
        hooks = webhooks(build(confirm_in_publish=True))
        msg_id = f"msg_test_{uuid.uuid4().hex}"
        key = DEDUPE_PREFIX + msg_id
        seen: list[tuple[str, str]] = []
        monitor_client = redis.Redis.from_url(REDIS_URL)
        done = threading.Event()

        def confirms(command: str) -> bool:
            return command.startswith(f"SET {key} ") and "pending" not in command

        def watch() -> None:
            with monitor_client.monitor() as monitor:
                started.set()
                while not done.is_set():
                    command = monitor.next_command()
                    seen.append((command["client_address"], command["command"]))
                    if confirms(command["command"]):
                        return

        started = threading.Event()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert started.wait(10)
        response = await hooks.post(hooks.event(), msg_id=msg_id)
        watcher.join(10)
        done.set()
        monitor_client.close()

        assert 202 == response.status_code, response.text
        # The claim (pending) is a script too: the confirmation is the SET without "pending".
        assert confirms(seen[-1][1]), seen
        (caller, call), (pusher, push), (setter, _) = seen[-3:]
        assert ("lua", "lua") == (pusher, setter), seen
        assert push.startswith(f"LPUSH {queue} "), seen
        assert caller != "lua", seen
        assert call.startswith("EVALSHA "), seen
        assert f" {queue} {key} " in call, seen

    def test_on_by_default_where_the_broker_is_the_store(
        self, monkeypatch: pytest.MonkeyPatch, secret: str, queue: str
    ) -> None:
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        monkeypatch.setenv("CELERY_DEFAULT_QUEUE", queue)
        monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        settings = AppSettings(tracing=tracing_settings(), redis_url=REDIS_URL, webhook_secrets=(secret,))

        same = create_app(settings, configure=False).state.intake
        monkeypatch.setenv("CELERY_BROKER_URL", REDIS_URL.rsplit("/", 1)[0] + "/15")
        other = create_app(settings, configure=False).state.intake

        assert (True, False) == (same.confirm_in_publish, other.confirm_in_publish)
        for intake in (same, other):
            close_publisher(intake.publisher)
            intake.store.close()


class TestStalledStore:
    """The store's and broker's calls run on the event loop while they answer quickly (a thread hop per
    webhook costs about as much CPU as a bare enqueue). A store that stops answering stalls the loop once,
    for at most its socket timeout; its calls then wait in worker threads, and the loop goes on answering,
    until the store has answered quickly again."""

    TIMEOUT_S = 1.5

    async def test_a_store_that_refuses_moves_calls_off_the_loop(
        self, webhooks: Callable[..., Webhooks], build: Callable[..., FastAPI]
    ) -> None:
        """A refusal is quick, yet the store is in trouble: the next calls wait in threads, not on the loop."""
        dead = dead_redis()
        app = build(store=dead)
        hooks = webhooks(app)

        response = await hooks.post(hooks.event())

        dead.close()
        assert "store_unavailable" == response.json()["error"]
        assert app.state.intake._offload.offloaded

    async def test_stall_moves_calls_off_the_loop_and_back(
        self, webhooks: Callable[..., Webhooks], build: Callable[..., FastAPI]
    ) -> None:
        proxy = BlackHoleProxy()
        store = redis.Redis(
            host="127.0.0.1",
            port=proxy.port,
            socket_timeout=self.TIMEOUT_S,
            socket_connect_timeout=self.TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            app = build(store=store)
            offload = app.state.intake._offload
            # Quick means under 1 s here, so that a loaded machine does not make a healthy call "slow".
            offload.slow_s, offload.recover_calls, offload.recover_s = 1.0, 2, 0.0
            hooks = webhooks(app)
            assert 202 == (await hooks.post(hooks.event())).status_code
            assert not offload.offloaded

            proxy.forwarding.clear()
            started = time.monotonic()
            first = await hooks.post(hooks.event())
            assert "store_unavailable" == first.json()["error"]
            assert time.monotonic() - started < 3 * self.TIMEOUT_S  # the one stall, bounded
            assert offload.offloaded

            dropped = proxy.dropped
            waiting = asyncio.create_task(hooks.post(hooks.event()))
            deadline = time.monotonic() + 10
            while proxy.dropped == dropped:  # the webhook is waiting on the stalled store, in a thread
                assert time.monotonic() < deadline, "the webhook never reached the store"
                await asyncio.sleep(0.01)
            health = await hooks.client.get("/healthz")
            assert 200 == health.status_code
            assert not waiting.done()  # answered while the webhook still waited: the loop was free
            assert "store_unavailable" == (await waiting).json()["error"]

            proxy.forwarding.set()
            answers = []
            while offload.offloaded and len(answers) < 20:  # two quick answers in a row bring it back
                answers.append((await hooks.post(hooks.event())).status_code)
            assert not offload.offloaded, answers
            assert {202} == set(answers)
        finally:
            store.close()
            proxy.close()


class TestStartup:
    """The intake refuses to start without a secret, unless WEBHOOK_ALLOW_UNSIGNED says otherwise."""

    def test_no_secret_refused(self) -> None:
        with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
            create_app(AppSettings(webhook_secrets=()))

    async def test_allow_unsigned_starts_and_accepts(
        self,
        webhooks: Callable[..., Webhooks],
        build: Callable[..., FastAPI],
        store: redis.Redis[bytes],
        queue: str,
    ) -> None:
        hooks = webhooks(build(secrets=(), allow_unsigned=True))

        response = await hooks.post(hooks.event(), headers={"content-type": "application/json"})

        assert 202 == response.status_code, response.text
        assert 1 == len(queued(store, queue))

    def test_cli_exits_1_without_secret(self) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"WEBHOOK_SECRET", "WEBHOOK_ALLOW_UNSIGNED"}
        }
        env["PYTHONPATH"] = str(ROOT)
        port = closed_port()

        done = subprocess.run(
            [sys.executable, "-m", "workflows.cli", "intake", "--port", str(port)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert 1 == done.returncode, done.stderr  # a setting to fix, not something unreachable
        assert "WEBHOOK_SECRET" in done.stderr
        assert "Traceback" not in done.stderr

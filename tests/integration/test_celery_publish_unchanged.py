"""instrument_celery never changes what a producer publishes, whatever order the user configures in.

Each case builds two fresh Celery apps on the real Redis, one instrumented and one not, configures both
the same way (before or after ``instrument_celery``), publishes one task with each, and compares the raw
messages Redis holds. Only the ids and the trace headers tracehook adds may differ.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Exchange, Queue
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.conftest import REDIS_URL
from tracing import instrument_celery
from tracing.celery_tracing import ENQUEUED_AT_HEADER, TRACE_HEADERS

pytestmark = pytest.mark.integration

TASK = "dropin.add"
# Differ between any two publishes, traced or not.
_VOLATILE_HEADERS = frozenset({"id", "root_id", "argsrepr", *TRACE_HEADERS, ENQUEUED_AT_HEADER})
_VOLATILE_PROPERTIES = frozenset({"correlation_id", "delivery_tag", "reply_to"})


class ConfigObject:
    """A settings object, as a user passes to ``config_from_object``."""

    task_compression = "zlib"
    task_default_delivery_mode = "transient"
    task_serializer = "json"


def _queue_settings(queue: str) -> dict[str, Any]:
    exchange = Exchange(f"{queue}-x", type="direct")
    return {
        "task_queues": (Queue(queue, exchange, routing_key=f"{queue}-key"),),
        "task_default_queue": queue,
        "task_default_exchange": f"{queue}-x",
        "task_default_routing_key": f"{queue}-key",
    }


def _settings(queue: str) -> dict[str, Any]:
    return {
        "task_compression": "zlib",
        "task_default_delivery_mode": "transient",
        "task_default_priority": 7,
        **_queue_settings(queue),
    }


def _conf_update(app: Celery, queue: str) -> None:
    app.conf.update(_settings(queue))


def _config_from_object(app: Celery, queue: str) -> None:
    app.config_from_object(ConfigObject)
    app.conf.update(_queue_settings(queue))


def _attribute_assignment(app: Celery, queue: str) -> None:
    for key, value in _settings(queue).items():
        setattr(app.conf, key, value)


CONFIGURATIONS: dict[str, Callable[[Celery, str], None]] = {
    "conf.update": _conf_update,
    "config_from_object": _config_from_object,
    "attribute assignment": _attribute_assignment,
}


def _add(x: int, y: int) -> int:
    return x + y


def _app(name: str, broker: str) -> Celery:
    app = Celery(f"{name}-{uuid.uuid4().hex[:6]}", broker=broker, set_as_current=False)
    # Not shared: a shared task would be added to every app this test process finalizes afterwards.
    app.task(name=TASK, shared=False)(_add)
    return app


def _raw_message(client: redis.Redis[bytes], queue: str) -> dict[str, Any]:
    raw = client.lpop(queue)
    assert raw is not None, f"nothing was published to {queue}"
    message: dict[str, Any] = json.loads(raw)
    return message


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    headers = {k: v for k, v in message["headers"].items() if k not in _VOLATILE_HEADERS}
    properties = {k: v for k, v in message["properties"].items() if k not in _VOLATILE_PROPERTIES}
    return {
        "body": base64.b64decode(message["body"]),
        "content-type": message["content-type"],
        "content-encoding": message["content-encoding"],
        "headers": headers,
        "properties": properties,
    }


@pytest.fixture
def client() -> Iterator[redis.Redis[bytes]]:
    store = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    yield store
    store.close()


class TestPublishedMessageUnchanged:
    """The message on the broker is the one Celery would publish without tracehook."""

    @pytest.mark.parametrize("order", ["before", "after"])
    @pytest.mark.parametrize("how", list(CONFIGURATIONS))
    def test_same_message(
        self,
        span_exporter: InMemorySpanExporter,
        client: redis.Redis[bytes],
        order: str,
        how: str,
    ) -> None:
        """Compression, delivery mode, priority, queues and routing survive configuration in any order."""
        configure = CONFIGURATIONS[how]
        messages = []
        queue = f"dropin-{uuid.uuid4().hex[:10]}"
        for traced in (False, True):
            app = _app("traced" if traced else "plain", REDIS_URL)
            if order == "before":
                configure(app, queue)
            if traced:
                instrument_celery(app, configure_worker=False, metrics=False)
            if order == "after":
                configure(app, queue)
            try:
                app.send_task(TASK, (2, 3))
                messages.append(_raw_message(client, queue))
            finally:
                client.delete(queue, f"_kombu.binding.{queue}-x")
                app.close()
        plain, traced_message = messages
        # The settings took effect without tracehook (zlib is announced as gzip, transient is mode 1).
        assert ("application/x-gzip", 1) == (
            plain["headers"]["compression"],
            plain["properties"]["delivery_mode"],
        )
        assert _comparable(plain) == _comparable(traced_message)
        assert "traceparent" in traced_message["headers"]
        assert [s.name for s in span_exporter.get_finished_spans()] == [f"publish {TASK}"]


class _CountingRefuser:
    """A TCP port that accepts each connection and closes it at once, counting them."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()


class TestPublishRetryUnchanged:
    """The publish retry settings made after instrument_celery still decide how a failed publish is retried.

    Celery fixes ``task_publish_retry`` and ``task_publish_retry_policy`` in its sender at the same moment;
    the policy is the quick one to observe (with retries off, redis-py's own backoff takes seconds).
    """

    def test_retry_policy_after_instrument(self, span_exporter: InMemorySpanExporter) -> None:
        """A broker that drops every connection is tried as often as without tracehook."""
        attempts = []
        policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}
        for traced in (False, True):
            refuser = _CountingRefuser()
            app = _app("traced" if traced else "plain", f"redis://127.0.0.1:{refuser.port}/0")
            if traced:
                instrument_celery(app, configure_worker=False, metrics=False)
            app.conf.update(task_publish_retry_policy=policy, broker_connection_retry=False)
            try:
                with pytest.raises(Exception):  # noqa: B017, PT011  # kombu's or redis-py's connection error
                    app.send_task(TASK, (2, 3))
            finally:
                app.close()
                refuser.close()
            attempts.append(refuser.accepted)
        plain, traced_attempts = attempts
        assert plain >= 1
        assert plain == traced_attempts
        (span,) = span_exporter.get_finished_spans()
        assert span.status.is_ok is False

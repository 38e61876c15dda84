"""The Redis transport that keeps one redis-py client per channel: same messages, far fewer clients."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from tests.integration.conftest import REDIS_URL
from workflows._redis_transport import Transport
from workflows.queue import CONFIRM_HEADER, celery_config, producer_app


@pytest.fixture
def clients_made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many ``redis.Redis`` objects get built while the test runs."""
    made = [0]
    original = redis.Redis.__init__

    def counting(self: redis.Redis, *args: Any, **kwargs: Any) -> None:
        made[0] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    return made


class TestRedisTransport:
    """``redis://`` brokers use it; publishing and consuming work as with kombu's own."""

    def test_selected_for_redis_only(self) -> None:
        """Chosen for redis://, never for amqp:// or the filesystem transport."""
        assert (
            "workflows._redis_transport:Transport"
            == celery_config({"REDIS_URL": REDIS_URL})["broker_transport"]
        )
        assert "broker_transport" not in celery_config({"CELERY_BROKER_URL": "amqp://guest@localhost//"})

    def test_publishes_reuse_one_client(self, clients_made: list[int]) -> None:
        """200 publishes build at most a couple of clients (kombu's own builds one per publish), and all
        200 messages are in the queue."""
        queue = f"test-transport-{uuid.uuid4().hex[:8]}"
        app = producer_app({"REDIS_URL": REDIS_URL})
        store = redis.Redis.from_url(REDIS_URL)
        try:
            for index in range(200):
                app.send_task("noop", kwargs={"i": index}, queue=queue, retry=False, ignore_result=True)
            assert clients_made[0] <= 3
            assert 200 == store.llen(queue)
        finally:
            store.delete(queue)

    def test_consume_and_ack(self) -> None:
        """Messages published through it are consumed and acked through it; none is left unacked."""
        name = f"test-transport-{uuid.uuid4().hex[:8]}"
        exchange = Exchange(name, type="direct")
        queue = Queue(name, exchange, routing_key=name)
        got: list[int] = []
        with Connection(REDIS_URL, transport=Transport) as connection:
            producer = connection.Producer(serializer="json")
            for index in range(20):
                producer.publish({"i": index}, exchange=exchange, routing_key=name, declare=[queue])

            def on_message(body: dict[str, int], message: Any) -> None:
                got.append(body["i"])
                message.ack()

            with connection.Consumer(queue, callbacks=[on_message]):
                while len(got) < 20:
                    connection.drain_events(timeout=5)
            unacked = connection.default_channel.qos.unacked_key
            queue(connection.default_channel).delete()
        assert list(range(20)) == got
        assert 0 == redis.Redis.from_url(REDIS_URL).hlen(unacked)

    @pytest.mark.parametrize("expires_s", [None, 60])
    def test_confirmation_goes_with_the_push(self, expires_s: int | None) -> None:
        """A message carrying ``CONFIRM_HEADER`` is queued without it and its key set for its seconds: by
        one script, or, for a queue with an expiry (kombu adds its PEXPIREs), in one MULTI/EXEC."""
        name = f"test-transport-{uuid.uuid4().hex[:8]}"
        key = f"{name}:confirm"
        exchange = Exchange(name, type="direct")
        queue = Queue(name, exchange, routing_key=name, expires=expires_s)
        store = redis.Redis.from_url(REDIS_URL)
        try:
            with Connection(REDIS_URL, transport=Transport) as connection:
                connection.Producer(serializer="json").publish(
                    {"i": 1},
                    exchange=exchange,
                    routing_key=name,
                    declare=[queue],
                    headers={CONFIRM_HEADER: [key, "evt_1", 600], "kept": "yes"},
                )
            assert b"evt_1" == store.get(key)
            assert 590 < store.ttl(key) <= 600
            (raw,) = store.lrange(name, 0, -1)
            headers = json.loads(raw)["headers"]
            assert CONFIRM_HEADER not in headers
            assert "yes" == headers["kept"]
            if expires_s is None:
                assert -1 == store.pttl(name)
            else:
                assert 0 < store.pttl(name) <= expires_s * 1000
        finally:
            store.delete(name, key)

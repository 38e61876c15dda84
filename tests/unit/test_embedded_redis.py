"""The demo's embedded Redis-protocol server answers what the intake, the dead-letter list and kombu ask,
as Redis does."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from tracing import SettingsError
from workflows.cli._embedded_redis import embedded_redis
from workflows.dlq import DeadLetters
from workflows.intake import _CLAIM
from workflows.settings import load_app_settings
from workflows.store import open_store

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def embedded() -> Iterator[str]:
    """The URL of a server of this test module's own."""
    with embedded_redis() as url:
        yield url


class TestAsRedis:
    """The commands tracehook sends get Redis's answers."""

    @pytest.mark.parametrize("kind", ["embedded", "redis"])
    def test_claim_script(self, embedded: str, kind: str) -> None:
        """The intake's one round trip (its claim script: SET NX, GET, MGET) answers the same on both, the
        script loaded on a server that did not have it."""
        store = open_store(embedded if kind == "embedded" else REDIS_URL)
        prefix = f"claim-{time.monotonic_ns()}:"
        try:
            store.set(prefix + "src", "s")
            store.script_flush()
            assert [1, b"p", [b"s", None]] == _CLAIM(
                store, [prefix + "k", prefix + "src", prefix + "none"], ["p", 60]
            )
            assert [0, b"p", []] == _CLAIM(store, [prefix + "k"], ["q", 60])
            assert 50 < store.ttl(prefix + "k") <= 60
        finally:
            store.delete(prefix + "src", prefix + "k")

    def test_claim_expires(self, embedded: str) -> None:
        """A key past its EX is gone: SET NX can claim it again (the intake's pending claim)."""
        client = redis.Redis.from_url(embedded)
        client.set("claim", "a", px=50)
        deadline = time.monotonic() + 5
        while client.get("claim") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.set("claim", "b", nx=True) is True

    def test_lua_lock(self, embedded: str) -> None:
        """Lua scripts run: kombu's mutex (a redis-py lock) is taken and given back."""
        lock = redis.Redis.from_url(embedded).lock("tracehook-test-mutex", timeout=5)
        assert lock.acquire(blocking=False)
        lock.release()

    def test_dead_letter_list(self, embedded: str) -> None:
        """Entries come back oldest first and go when removed (hashes, lists, pipelines)."""
        letters = DeadLetters(open_store(embedded))
        first, second = (
            letters.add(
                event={"id": f"evt_{n}", "type": "payment.received"},
                trace_id="a" * 32,
                span_id="b" * 16,
                error=RuntimeError("boom"),
                attempts=3,
                task_id=f"t{n}",
            )
            for n in (1, 2)
        )
        assert [first.id, second.id] == [entry.id for entry in letters.list()][-2:]
        letters.remove(first.id)
        assert first.id not in [entry.id for entry in letters.list()]
        assert letters.get(second.id) == second


class TestLifetime:
    """The server lives as long as its block."""

    def test_port_closed_after(self) -> None:
        """Inside the block it answers PING; after it, nothing listens on its port."""
        with embedded_redis() as url:
            assert redis.Redis.from_url(url).ping()
            port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        with socket.socket() as sock:
            sock.settimeout(1)
            assert 0 != sock.connect_ex(("127.0.0.1", port))

    def test_settings_accept_only_redis(self) -> None:
        """REDIS_URL is a Redis URL (the SQLite stand-in is gone); the message names the variable."""
        for url in ("postgres://localhost/db", "sqlite:////tmp/state.sqlite3"):
            with pytest.raises(SettingsError, match="REDIS_URL"):
                load_app_settings({"REDIS_URL": url})

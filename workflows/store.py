"""The key-value store behind dedupe keys, the source-correlation map and the dead-letter list: Redis.

:class:`KeyValueStore` is the part of redis-py's client the code uses, so a stand-in (in a test) needs only
that much. ``tracehook demo`` gives its processes a Redis-protocol server of its own
(:mod:`workflows.cli._embedded_redis`): they use it as they use Redis in production.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import redis

__all__ = ["KeyValueStore", "StorePipeline", "open_store"]


class StorePipeline(Protocol):
    """The commands a store's pipeline queues; ``execute()`` runs them in one transaction (MULTI/EXEC)."""

    def set(self, name: str, value: Any, *, ex: int | None = None, nx: bool = False) -> Any:
        """Queue ``SET name value [EX ex] [NX]``."""

    def get(self, name: str) -> Any:
        """Queue ``GET name``."""

    def mget(self, keys: Iterable[str]) -> Any:
        """Queue ``MGET keys...``."""

    def hset(self, name: str, key: str, value: Any) -> Any:
        """Queue ``HSET name key value``."""

    def hdel(self, name: str, *keys: str) -> Any:
        """Queue ``HDEL name keys...``."""

    def rpush(self, name: str, *values: Any) -> Any:
        """Queue ``RPUSH name values...``."""

    def lrem(self, name: str, count: int, value: Any) -> Any:
        """Queue ``LREM name count value``."""

    def execute(self) -> list[Any]:
        """Run what is queued; the answers in order."""


class KeyValueStore(Protocol):
    """The part of redis-py's client the dedupe keys, the source map and the dead-letter list use (a
    ``redis.Redis`` is one). Failures raise ``redis.RedisError``."""

    def ping(self) -> Any:
        """True when the store answers."""

    def set(self, name: str, value: Any, *, ex: int | None = None, nx: bool = False) -> Any:
        """``SET name value [EX ex] [NX]``: true when set, None when ``nx`` and the key exists."""

    def get(self, name: str) -> Any:
        """The value of a live key, or None."""

    def delete(self, *names: str) -> Any:
        """Remove keys; how many existed."""

    def hget(self, name: str, key: str) -> Any:
        """One field of a hash, or None."""

    def hmget(self, name: str, keys: Sequence[str]) -> Any:
        """Several fields of a hash, None where missing."""

    def lrange(self, name: str, start: int, end: int) -> Any:
        """``LRANGE name start end``."""

    def pipeline(self) -> StorePipeline:
        """A pipeline whose commands run in one transaction."""


def open_store(url: str, **redis_options: Any) -> KeyValueStore:
    """A redis-py client of ``url`` (``redis://``, ``rediss://``, ``unix://``); ``redis_options`` go to it."""
    client: KeyValueStore = redis.Redis.from_url(url, **redis_options)
    return client

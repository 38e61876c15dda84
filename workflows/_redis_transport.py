"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` for every publish, ack, requeue and queue-size call
(``Channel.conn_or_acquire``). Since redis-py 5 each construction copies about 170 response callbacks into
a ``CaseInsensitiveDict`` (redis/redis-py#3624): roughly 100 µs of CPU per publish in the intake and per
ack in a worker's main process, for no benefit — every such client draws its connections from the same
pool. This channel keeps one client per pool and hands it out instead; commands, pipelines and the pool
behave as before (a redis-py client is thread-safe; each command takes its own connection from the pool).

``workflows.queue.celery_config`` selects it for ``redis://`` brokers (``broker_transport``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]


class Channel(kombu_redis.Channel):
    """A Redis channel that reuses one synchronous client for as long as its pool lives."""

    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """The given client, else this channel's shared one (rebuilt if the pool was replaced)."""
        if client is not None:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()  # type: ignore[no-untyped-call]
        yield shared


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

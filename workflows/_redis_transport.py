"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` for every publish, ack, requeue and queue-size call
(``Channel.conn_or_acquire``). Since redis-py 5 each construction copies about 170 response callbacks into
a ``CaseInsensitiveDict`` (redis/redis-py#3624): roughly 100 µs of CPU per publish in the intake and per
ack in a worker's main process, for no benefit — every such client draws its connections from the same
pool. This channel keeps one client per pool and hands it out instead; commands, pipelines and the pool
behave as before (a redis-py client is thread-safe; each command takes its own connection from the pool).

It also writes the intake's dedupe confirmation with the task it publishes, where the dedupe store is
the broker's Redis: a message whose headers carry ``workflows.queue.CONFIRM_HEADER`` (key, value,
seconds to live) is pushed and the key set by one Lua script (a ``MULTI``/``EXEC`` where kombu adds
commands of its own, as for a queue with an expiry), one round trip instead of two, and the task is never
queued without its confirmation nor the reverse. The header is removed before the
message is written, so no worker sees it.

``workflows.queue.celery_config`` selects it for ``redis://`` brokers (``broker_transport``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

from workflows.queue import CONFIRM_HEADER
from workflows.store import StoreScript

__all__ = ["Channel", "Transport"]

# The push (KEYS[1], ARGV[1]) and the dedupe key's confirmation (KEYS[2] = ARGV[2] for ARGV[3] seconds).
_PUSH_AND_CONFIRM = StoreScript(
    "redis.call('LPUSH', KEYS[1], ARGV[1])\nredis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])\nreturn 1\n"
)


class _Commands:
    """Collects the Redis commands kombu's ``_put`` would send, as a publish batch does."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


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

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Deliver the message; with a dedupe confirmation in its headers, set that key atomically with the
        push."""
        confirm = (message.get("headers") or {}).pop(CONFIRM_HEADER, None)
        if confirm is None:
            super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
            return
        key, value, ttl_s = confirm
        batch = kwargs.pop("_publish_batch", None)
        if batch is not None:  # a producer's publish batch: its pipeline sends both
            super()._put(queue, message, _publish_batch=batch, **kwargs)  # type: ignore[no-untyped-call]
            batch.add("set", key, value, ttl_s)
            return
        # kombu's own routing (priority queue, expiry) hands its commands to the collector.
        commands = _Commands()
        super()._put(queue, message, _publish_batch=commands, **kwargs)  # type: ignore[no-untyped-call]
        with self.conn_or_acquire() as client:
            match commands.commands:
                case [("lpush", (list_key, body))]:
                    _PUSH_AND_CONFIRM(client, [list_key, key], [body, value, ttl_s])
                case _:
                    with client.pipeline() as pipe:
                        for name, args in commands.commands:
                            getattr(pipe, name)(*args)
                        pipe.set(key, value, ex=ttl_s)
                        pipe.execute()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

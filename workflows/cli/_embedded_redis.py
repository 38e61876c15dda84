"""A Redis-protocol server inside this process, for runs without a Redis (``tracehook demo``).

fakeredis's ``TcpFakeServer`` speaks the Redis protocol over TCP, Lua scripts included (kombu's mutex
and the intake's dedupe need them): Celery's Redis transport, the intake's dedupe, the source map and
the dead-letter list use it as they use Redis in production, so the path a newcomer sees is the
production one. Its data lives in this process's memory and goes with it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fakeredis import TcpFakeServer

__all__ = ["embedded_redis"]


@contextmanager
def embedded_redis(host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the Redis protocol on a free port of ``host`` while the block runs; yields its URL.

    Each connection is served on a thread of its own; the server stops when the block ends, without
    waiting for clients that are still connected.
    """
    server = TcpFakeServer((host, 0), server_type="redis")
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, name="tracehook-embedded-redis", daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield f"redis://{host}:{port}/0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

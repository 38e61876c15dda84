"""The key-value store behind dedupe keys, the source-correlation map and the dead-letter list.

Redis in production (``REDIS_URL=redis://...``). Without Redis — ``tracehook demo`` on a laptop — a SQLite
file (``REDIS_URL=sqlite:////abs/state.sqlite3``; three slashes before a relative path, as in SQLAlchemy)
speaks the small part of the redis-py API the code uses, with the same semantics (``SET NX EX``, hashes,
lists, pipelines as one transaction), shared safely by the intake and every worker process. Its failures
are raised as ``redis.RedisError`` so callers handle both stores alike.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import redis

__all__ = ["SQLITE_SCHEME", "KeyValueStore", "SqliteStore", "StorePipeline", "open_store"]

SQLITE_SCHEME: Final = "sqlite:///"
_T = TypeVar("_T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS hashes (name TEXT, field TEXT, value BLOB NOT NULL, PRIMARY KEY (name, field));
CREATE TABLE IF NOT EXISTS lists (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS lists_name ON lists (name, seq);
"""


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
    """The part of redis-py's client the dedupe keys, the source map and the dead-letter list use: a
    ``redis.Redis``, or :class:`SqliteStore` where there is no Redis. Failures raise ``redis.RedisError``."""

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


def _bytes(value: Any) -> bytes:
    """redis-py's encoding of a value: bytes as is, str as UTF-8, numbers as their text."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class SqliteStore:
    """A SQLite file with the redis-py calls tracehook uses; safe across threads and processes.

    Args:
        path: the database file (created with its folder).
        timeout_s: how long a call waits for another process's write lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        try:
            self._connection().executescript(_SCHEMA)  # its own transaction
        except sqlite3.Error as exc:
            msg = f"SQLite store {self.path}: {exc}"
            raise redis.ConnectionError(msg) from exc

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread and per process: a connection must not cross a fork.
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one immediate transaction; SQLite errors become ``redis.ConnectionError``."""
        try:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            msg = f"SQLite store {self.path}: {exc}"
            raise redis.ConnectionError(msg) from exc
        return result

    # --- strings ----------------------------------------------------------------------------------------

    @staticmethod
    def _get(db: sqlite3.Connection, key: str) -> bytes | None:
        row = db.execute(
            "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        ).fetchone()
        return bytes(row[0]) if row else None

    @classmethod
    def _set(cls, db: sqlite3.Connection, key: str, value: Any, ex: float | None, nx: bool) -> bool | None:
        if nx and cls._get(db, key) is not None:
            return None
        expires = time.time() + ex if ex is not None else None
        db.execute(
            "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
            (key, _bytes(value), expires),
        )
        return True

    def ping(self) -> bool:
        """True when the file can be written."""
        return self._call(lambda db: db.execute("SELECT 1").fetchone() is not None)

    def set(self, name: str, value: Any, ex: float | None = None, nx: bool = False) -> bool | None:
        """``SET name value [EX ex] [NX]``: True when set, None when ``nx`` and the key exists."""
        return self._call(lambda db: self._set(db, name, value, ex, nx))

    def get(self, name: str) -> bytes | None:
        """The value of a live key."""
        return self._call(lambda db: self._get(db, name))

    def mget(self, keys: Iterable[str]) -> list[bytes | None]:
        """The values of ``keys``, None where missing or expired."""
        wanted = list(keys)
        return self._call(lambda db: [self._get(db, key) for key in wanted])

    def delete(self, *names: str) -> int:
        """Remove keys (strings, hashes and lists); the number of keys that existed."""

        def work(db: sqlite3.Connection) -> int:
            removed = 0
            for name in names:
                removed += db.execute("DELETE FROM kv WHERE key = ?", (name,)).rowcount > 0
                removed += db.execute("DELETE FROM hashes WHERE name = ?", (name,)).rowcount > 0
                removed += db.execute("DELETE FROM lists WHERE name = ?", (name,)).rowcount > 0
            return removed

        return self._call(work)

    # --- hashes and lists -------------------------------------------------------------------------------

    def hset(self, name: str, key: str, value: Any) -> int:
        """Set one field of a hash; 1 when the field is new."""
        return self._call(lambda db: self._hset(db, name, key, value))

    @staticmethod
    def _hset(db: sqlite3.Connection, name: str, key: str, value: Any) -> int:
        existed = db.execute("SELECT 1 FROM hashes WHERE name = ? AND field = ?", (name, key)).fetchone()
        db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?)", (name, key, _bytes(value)))
        return 0 if existed else 1

    def hget(self, name: str, key: str) -> bytes | None:
        """One field of a hash."""
        return self.hmget(name, [key])[0]

    def hmget(self, name: str, keys: Sequence[str]) -> list[bytes | None]:
        """Several fields of a hash, None where missing."""

        def work(db: sqlite3.Connection) -> list[bytes | None]:
            found = []
            for key in keys:
                row = db.execute(
                    "SELECT value FROM hashes WHERE name = ? AND field = ?", (name, key)
                ).fetchone()
                found.append(bytes(row[0]) if row else None)
            return found

        return self._call(work)

    def hdel(self, name: str, *keys: str) -> int:
        """Remove fields of a hash; how many existed."""
        return self._call(lambda db: self._hdel(db, name, keys))

    @staticmethod
    def _hdel(db: sqlite3.Connection, name: str, keys: Iterable[str]) -> int:
        return sum(
            db.execute("DELETE FROM hashes WHERE name = ? AND field = ?", (name, k)).rowcount for k in keys
        )

    def rpush(self, name: str, *values: Any) -> int:
        """Append to a list; its new length."""
        return self._call(lambda db: self._rpush(db, name, values))

    @staticmethod
    def _rpush(db: sqlite3.Connection, name: str, values: Iterable[Any]) -> int:
        db.executemany("INSERT INTO lists (name, value) VALUES (?, ?)", [(name, _bytes(v)) for v in values])
        return int(db.execute("SELECT COUNT(*) FROM lists WHERE name = ?", (name,)).fetchone()[0])

    def lrange(self, name: str, start: int, end: int) -> list[bytes]:
        """``LRANGE name start end`` (inclusive end, negative indexes from the end)."""

        def work(db: sqlite3.Connection) -> list[bytes]:
            rows = [
                bytes(r[0])
                for r in db.execute("SELECT value FROM lists WHERE name = ? ORDER BY seq", (name,))
            ]
            stop = len(rows) + end + 1 if end < 0 else end + 1
            return rows[start if start >= 0 else max(0, len(rows) + start) : stop]

        return self._call(work)

    def lrem(self, name: str, count: int, value: Any) -> int:
        """Remove list items equal to ``value``: the first ``count`` (all when 0, from the end when < 0)."""
        return self._call(lambda db: self._lrem(db, name, count, value))

    @staticmethod
    def _lrem(db: sqlite3.Connection, name: str, count: int, value: Any) -> int:
        order = "DESC" if count < 0 else "ASC"
        seqs = [
            row[0]
            for row in db.execute(
                f"SELECT seq FROM lists WHERE name = ? AND value = ? ORDER BY seq {order}",  # noqa: S608  # fixed words
                (name, _bytes(value)),
            )
        ]
        if count:
            seqs = seqs[: abs(count)]
        db.executemany("DELETE FROM lists WHERE seq = ?", [(seq,) for seq in seqs])
        return len(seqs)

    def pipeline(self) -> _Pipeline:
        """Queue calls and run them in one transaction on ``execute()``, like a redis-py MULTI pipeline."""
        return _Pipeline(self)

    def close(self) -> None:
        """Close this thread's connection."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Pipeline:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._queued: list[Callable[[sqlite3.Connection], Any]] = []

    def set(self, name: str, value: Any, ex: float | None = None, nx: bool = False) -> _Pipeline:
        self._queued.append(lambda db: SqliteStore._set(db, name, value, ex, nx))
        return self

    def get(self, name: str) -> _Pipeline:
        self._queued.append(lambda db: SqliteStore._get(db, name))
        return self

    def mget(self, keys: Iterable[str]) -> _Pipeline:
        wanted = list(keys)
        self._queued.append(lambda db: [SqliteStore._get(db, key) for key in wanted])
        return self

    def hset(self, name: str, key: str, value: Any) -> _Pipeline:
        self._queued.append(lambda db: SqliteStore._hset(db, name, key, value))
        return self

    def hdel(self, name: str, *keys: str) -> _Pipeline:
        self._queued.append(lambda db: SqliteStore._hdel(db, name, keys))
        return self

    def rpush(self, name: str, *values: Any) -> _Pipeline:
        self._queued.append(lambda db: SqliteStore._rpush(db, name, values))
        return self

    def lrem(self, name: str, count: int, value: Any) -> _Pipeline:
        self._queued.append(lambda db: SqliteStore._lrem(db, name, count, value))
        return self

    def execute(self) -> list[Any]:
        queued, self._queued = self._queued, []
        return self._store._call(lambda db: [work(db) for work in queued])


def open_store(url: str, **redis_options: Any) -> KeyValueStore:
    """The store at ``url``: ``redis://``/``rediss://``/``unix://`` → a redis-py client (``redis_options``
    passed on), ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` → a :class:`SqliteStore`.

    Raises:
        ValueError: ``sqlite://`` without a path.
    """
    if url.startswith(SQLITE_SCHEME):
        path = url.removeprefix(SQLITE_SCHEME)
        if not path or path.endswith("/"):
            msg = f"{url!r}: give the database file, e.g. sqlite:////var/lib/tracehook/state.sqlite3"
            raise ValueError(msg)
        return SqliteStore(path, timeout_s=float(redis_options.get("socket_timeout") or 5.0))
    client: KeyValueStore = redis.Redis.from_url(url, **redis_options)
    return client

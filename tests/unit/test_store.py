"""The SQLite store that stands in for Redis without a Redis: the same answers as redis-py gives."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
import redis

from tracing import SettingsError
from workflows.dlq import DeadLetters
from workflows.queue import celery_config
from workflows.settings import load_app_settings
from workflows.store import SqliteStore, open_store

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _claim(path: str, key: str, queue: multiprocessing.Queue[bool]) -> None:
    queue.put(bool(SqliteStore(path).set(key, "mine", nx=True, ex=60)))


class TestStrings:
    """SET NX EX, GET, MGET and DEL behave as Redis does."""

    def test_set_nx_claims_once(self, tmp_path: Path) -> None:
        """The first SET NX wins; the second gets None and the value stays the first one."""
        store = SqliteStore(tmp_path / "s.db")
        assert store.set("k", "a", nx=True, ex=60) is True
        assert store.set("k", "b", nx=True, ex=60) is None
        assert store.get("k") == b"a"

    def test_expired_key_is_gone(self, tmp_path: Path) -> None:
        """A key past its EX no longer exists: GET gives None and SET NX can claim it again."""
        store = SqliteStore(tmp_path / "s.db")
        store.set("k", "a", ex=0.05)
        deadline = time.monotonic() + 5
        while store.get("k") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.get("k") is None
        assert store.set("k", "b", nx=True) is True

    @pytest.mark.parametrize("kind", ["sqlite", "redis"])
    def test_pipeline_claim(self, tmp_path: Path, kind: str) -> None:
        """The intake's one round trip (MGET, SET NX, GET in a pipeline) answers the same on both."""
        store = SqliteStore(tmp_path / "s.db") if kind == "sqlite" else redis.Redis.from_url(REDIS_URL)
        prefix = f"pipe-{time.monotonic_ns()}:"
        try:
            store.set(prefix + "src", "s")
            first = (
                store.pipeline()
                .mget([prefix + "src", prefix + "none"])
                .set(prefix + "k", "p", nx=True, ex=60)
            )
            assert [[b"s", None], True, b"p"] == first.get(prefix + "k").execute()
            again = store.pipeline().set(prefix + "k", "q", nx=True, ex=60).get(prefix + "k").execute()
            assert [None, b"p"] == again
        finally:
            store.delete(prefix + "src", prefix + "k")

    def test_mget_and_delete(self, tmp_path: Path) -> None:
        """MGET answers None for missing keys; DEL counts what existed."""
        store = SqliteStore(tmp_path / "s.db")
        store.set("a", 1)
        assert store.mget(["a", "b"]) == [b"1", None]
        assert store.delete("a", "b") == 1
        assert store.get("a") is None

    def test_one_winner_across_processes(self, tmp_path: Path) -> None:
        """Eight processes race SET NX on one key in one file: exactly one claims it."""
        path = str(tmp_path / "s.db")
        SqliteStore(path)
        ctx = multiprocessing.get_context("fork")
        answers: multiprocessing.Queue[bool] = ctx.Queue()
        workers = [ctx.Process(target=_claim, args=(path, "race", answers)) for _ in range(8)]
        for worker in workers:
            worker.start()
        results = [answers.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(30)
        assert sorted(results) == [False] * 7 + [True]


class TestDeadLetterList:
    """The dead-letter list works unchanged on the SQLite store (hashes, lists, pipelines)."""

    def test_add_list_remove(self, tmp_path: Path) -> None:
        """Entries come back oldest first and go when removed."""
        letters = DeadLetters(SqliteStore(tmp_path / "s.db"))
        first = letters.add(
            event={"id": "evt_1", "type": "payment.received"},
            trace_id="a" * 32,
            span_id="b" * 16,
            error=RuntimeError("boom"),
            attempts=3,
            task_id="t1",
        )
        second = letters.add(
            event={"id": "evt_2", "type": "lease.renewed"},
            trace_id="c" * 32,
            span_id="d" * 16,
            error=ValueError("bad"),
            attempts=1,
            task_id="t2",
        )
        assert [entry.id for entry in letters.list()] == [first.id, second.id]
        assert letters.get(first.id) == first
        letters.remove(first.id)
        assert [entry.id for entry in letters.list()] == [second.id]
        assert letters.get(first.id) is None


class TestOpening:
    """URLs pick the store; bad ones fail with a message that says what to give."""

    def test_sqlite_url(self, tmp_path: Path) -> None:
        """``sqlite:////abs/path`` opens that file; ``redis://`` a redis-py client."""
        store = open_store(f"sqlite:///{tmp_path}/state.db")
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "state.db"
        assert isinstance(open_store("redis://127.0.0.1:6379/0"), redis.Redis)

    def test_sqlite_url_without_file(self) -> None:
        """A URL without a file name is refused."""
        with pytest.raises(ValueError, match="give the database file"):
            open_store("sqlite:///")

    def test_unwritable_file_raises_redis_error(self, tmp_path: Path) -> None:
        """A file that cannot be opened raises a ``redis.RedisError``, which callers already handle."""
        with pytest.raises(redis.RedisError, match="SQLite store"):
            SqliteStore(tmp_path)  # a folder, not a file

    def test_settings_refuse_unknown_scheme(self) -> None:
        """REDIS_URL must be Redis or a SQLite file; the message names the variable."""
        with pytest.raises(SettingsError, match="REDIS_URL"):
            load_app_settings({"REDIS_URL": "postgres://localhost/db"})


class TestFilesystemBroker:
    """``filesystem:///dir`` is kombu's filesystem transport in that folder, without results by default."""

    def test_options(self, tmp_path: Path) -> None:
        """The folders are made and named in the transport options; no result backend for a SQLite store."""
        config = celery_config(
            {"CELERY_BROKER_URL": f"filesystem://{tmp_path}/q", "REDIS_URL": f"sqlite:///{tmp_path}/s.db"}
        )
        assert config["broker_url"] == "filesystem://localhost/"
        options = config["broker_transport_options"]
        assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "q" / "queue")
        assert (tmp_path / "q" / "control").is_dir()
        assert config["result_backend"] is None

    def test_relative_folder_refused(self) -> None:
        """A relative folder would depend on each process's working directory: refused."""
        with pytest.raises(SettingsError, match="absolute folder"):
            celery_config({"CELERY_BROKER_URL": "filesystem://queue"})

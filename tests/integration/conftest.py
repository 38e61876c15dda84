"""Real processes for integration tests: Celery workers on the real Redis, spans at a real OTLP receiver.

The receiver, the workers and the producer are tracing.testing's, the ones users' tests get from the
pytest plugin; here they are set up for the project's own test apps.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tracing import testing
from tracing.testing import OtlpReceiver, Worker

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available(url: str = REDIS_URL) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _need_redis() -> None:
    if not redis_available():
        pytest.fail(f"Redis does not answer at {REDIS_URL}: run `make test`, which starts one")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP endpoint for the module's processes."""
    with OtlpReceiver() as rcv:
        yield rcv


def worker_env(queue: str, **extra: str) -> dict[str, str]:
    """What the project's test apps read in a worker: the test Redis, the worker's queue as the default
    queue (for the tasks it publishes itself), its service name."""
    return {
        "REDIS_URL": REDIS_URL,
        "CELERY_DEFAULT_QUEUE": queue,
        "SERVICE_NAME": "test-worker",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def start_worker(
    receiver: OtlpReceiver,
    tmp_path: Path,
    *,
    app: str = "tests.integration.celery_app",
    concurrency: int = 2,
    extra_args: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
    **env: str,
) -> Worker:
    """Start ``celery -A app worker --pool=prefork`` on a queue of its own (behind the ``prefix`` command,
    e.g. ``opentelemetry-instrument``) with tracing.testing's :func:`~tracing.testing.start_worker`;
    :func:`wait_ready` waits until it runs tasks."""
    queue = env.pop("CELERY_DEFAULT_QUEUE", f"q-{uuid.uuid4().hex[:10]}")
    return testing.start_worker(
        app,
        receiver=receiver,
        queues=(queue,),
        concurrency=concurrency,
        env=worker_env(queue, **env),
        extra_args=extra_args,
        prefix=prefix,
        cwd=ROOT,
        log_dir=tmp_path,
        ready_timeout=None,
        name=queue,
    )


def wait_ready(
    worker: Worker, app: Any, timeout: float = 60.0, task: str = "tests.integration.celery_app.noop"
) -> None:
    """Poll with a deadline until the worker has run a task (``task``, taking no argument) from its queue."""
    worker.wait_ready(timeout, client=app, task=task)


@pytest.fixture
def producer(receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    """The test process traces like any producer: spans to the receiver, synchronously."""
    with testing.export_to(receiver):
        yield receiver


@pytest.fixture
def store() -> Iterator[redis.Redis[bytes]]:
    """A client of the integration tests' Redis database."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    yield client
    client.close()


@pytest.fixture
def queue(store: redis.Redis[bytes]) -> Iterator[str]:
    """A queue of this test's own, which no worker consumes; deleted afterwards with its bindings."""
    name = f"test-queue-{uuid.uuid4().hex[:12]}"
    yield name
    store.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")

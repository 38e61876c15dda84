"""Real processes for integration tests: Celery workers on the real Redis, spans at a real OTLP receiver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from tests.otlp_receiver import OtlpReceiver
from tracing import TracingSettings, configure_tracing

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


@dataclass
class Worker:
    """A Celery worker running as a subprocess."""

    process: subprocess.Popen[str]
    queue: str
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def worker_env(receiver: OtlpReceiver, queue: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": REDIS_URL,
        "CELERY_DEFAULT_QUEUE": queue,
        "SERVICE_NAME": "test-worker",
        "TRACE_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LOG_LEVEL": "INFO",
        # No metrics endpoint unless a test asks for one: many workers run here at once.
        "WORKER_METRICS_PORT": "0",
    }
    env.update(extra)
    return env


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
    e.g. ``opentelemetry-instrument``); :func:`wait_ready` waits until it runs tasks."""
    queue = env.pop("CELERY_DEFAULT_QUEUE", f"q-{uuid.uuid4().hex[:10]}")
    log_path = tmp_path / f"worker-{queue}.log"
    cmd = [
        *prefix,
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
        *extra_args,
    ]
    with log_path.open("w") as out:
        process = subprocess.Popen(
            cmd,
            env=worker_env(receiver, queue, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
    return Worker(process, queue, log_path)


def wait_ready(
    worker: Worker, app: Any, timeout: float = 60.0, task: str = "tests.integration.celery_app.noop"
) -> None:
    """Poll with a deadline until the worker has run a task (``task``, taking no argument) from its queue."""
    deadline = time.monotonic() + timeout
    result = app.send_task(task, queue=worker.queue)
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise AssertionError(f"worker exited with {worker.process.returncode}:\n{worker.log}")
        if result.ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"worker not ready after {timeout}s:\n{worker.log[-3000:]}")


@pytest.fixture
def producer(receiver: OtlpReceiver) -> OtlpReceiver:
    """The test process traces like any producer: spans to the receiver, synchronously."""
    configure_tracing(
        TracingSettings(service_name="test-producer", exporter="none"),
        exporter=OTLPSpanExporter(endpoint=receiver.traces_url),
        batch=False,
    )
    return receiver


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

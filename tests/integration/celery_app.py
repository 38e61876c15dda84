"""A user's own Celery app, instrumented with ``tracing.instrument_celery`` — none of tracehook's tasks.

Worker processes are started on it by the integration tests
(``celery -A tests.integration.celery_app worker --pool=prefork``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import structlog
from celery import Celery
from celery.exceptions import Ignore, Reject

from tracing import instrument_celery, trace_span
from workers.config import celery_config

app = Celery("tests_app")
# Workers get REDIS_URL from the test; the test process itself only has TEST_REDIS_URL, and must publish
# to the same database its workers consume.
_REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
app.conf.update(celery_config({**os.environ, "REDIS_URL": _REDIS_URL}))
instrument_celery(app)

log = structlog.get_logger("tests.tasks")


@app.task
def add(x: int, y: int) -> int:
    with trace_span("add.inner"):
        log.info("adding", x=x, y=y)
        return x + y


@app.task
def noop() -> None:
    return None


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task(bind=True, max_retries=5)
def flaky(self: Any, succeed_on_attempt: int) -> int:
    attempt = self.request.retries + 1
    if attempt < succeed_on_attempt:
        raise self.retry(countdown=0, exc=ConnectionError(f"attempt {attempt} failed"))
    return attempt


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(throws=(KeyError,))
def expected_failure() -> None:
    raise KeyError("not found, and that is fine")


@app.task(bind=True)
def ignored(self: Any) -> None:
    raise Ignore


@app.task(bind=True, acks_late=True)
def rejected(self: Any) -> None:
    raise Reject("no thanks", requeue=False)


@app.task(bind=True)
def echo_headers(self: Any, *keys: str) -> dict[str, Any]:
    nested = self.request.headers if isinstance(self.request.headers, dict) else {}
    return {key: getattr(self.request, key, None) or nested.get(key) for key in keys}


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def log_event(event_id: str) -> str:
    log.info("work.done", detail="in task")
    return event_id


_counter = None


@app.task(ignore_result=True)
def incr(key: str) -> None:
    global _counter  # noqa: PLW0603  # one client per worker process
    if _counter is None:
        import redis  # noqa: PLC0415

        _counter = redis.Redis.from_url(_REDIS_URL)
    _counter.incr(key)


@app.task
def rendezvous(key: str, parties: int, timeout_s: float = 30.0) -> int:
    """Wait until ``parties`` tasks reached this point (a Redis counter), then return this process's pid.

    With as many parties as pool children, each child must run one: none can take a second while all wait.
    """
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    client.incr(key)
    client.expire(key, 300)
    deadline = time.monotonic() + timeout_s
    while int(client.get(key) or 0) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {client.get(key)!r} of {parties} parties arrived")
        time.sleep(0.01)
    return os.getpid()

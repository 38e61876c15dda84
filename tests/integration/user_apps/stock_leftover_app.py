"""A user migrating from opentelemetry-instrumentation-celery who left its set-up in place.

The stock docs' pattern: ``CeleryInstrumentor().instrument()`` in a ``worker_process_init`` handler,
connected after ``instrument_celery(app)``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from tests.integration.user_apps._common import REDIS_URL
from tracing import instrument_celery

app = Celery("user_stock")
instrument_celery(app)
app.conf.update(
    broker_url=REDIS_URL, result_backend=REDIS_URL, task_default_queue=os.environ.get("USER_QUEUE", "celery")
)


@worker_process_init.connect(weak=False)
def _init_celery_tracing(**_: Any) -> None:
    CeleryInstrumentor().instrument()


@app.task(name="user_stock.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="user_stock.noop")
def noop() -> None:
    return None

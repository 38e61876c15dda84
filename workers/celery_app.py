"""The Celery app of tracehook's workers, ``workers.app`` (``celery -A workers worker``).

It is instrumented with ``tracing.instrument_celery`` exactly as a user would instrument their own app.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from tracing import instrument_celery
from workers.config import celery_config
from workflows.metrics import start_worker_counters

# "tracehook": its worker processes default to the service name "tracehook-worker" (SERVICE_NAME overrides).
app = Celery("tracehook", include=["workers.tasks"])
app.conf.update(celery_config())
instrument_celery(app)


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _start_counters(**_: Any) -> None:
    # Connected after instrument_celery's own worker_init handler, which sets the metrics up.
    start_worker_counters()

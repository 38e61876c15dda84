"""The Celery app of tracehook's workers, ``workers.app`` (``celery -A workers worker``).

It is instrumented with ``tracing.instrument_celery`` exactly as a user would instrument their own app.
"""

from __future__ import annotations

from celery import Celery

from tracing import instrument_celery
from workers.config import celery_config

# "tracehook": its worker processes default to the service name "tracehook-worker" (SERVICE_NAME overrides).
app = Celery("tracehook", include=["workers.tasks"])
app.conf.update(celery_config())
instrument_celery(app)

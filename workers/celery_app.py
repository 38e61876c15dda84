"""The Celery app of tracehook's workers, ``workers.app`` (``celery -A workers worker``).

It is instrumented with ``tracing.instrument_celery`` exactly as a user would instrument their own app.
"""

from __future__ import annotations

from celery import Celery

from tracing import instrument_celery
from workers.config import celery_config

app = Celery("workers", include=["workers.tasks"])
app.conf.update(celery_config())
instrument_celery(app)

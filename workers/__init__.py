"""The Celery app (``workers.app``), its tasks, and worker-process lifecycle.

Start a worker with ``celery -A workers worker --pool=prefork --concurrency N``.
"""

from __future__ import annotations

from workers.app import app

__all__ = ["app"]

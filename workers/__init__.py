"""The Celery app (``workers.app``), its tasks, and worker-process lifecycle.

Start a worker with ``celery -A workers worker --pool=prefork --concurrency N``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing workers.config (as a user's own app may) does not create and instrument ours.
    if name == "app":
        from workers.celery_app import app  # noqa: PLC0415

        return app
    raise AttributeError(name)

"""Celery configuration for the workers; the settings live with the producer side in ``workflows.queue``."""

from __future__ import annotations

from workflows.queue import DEFAULT_REDIS_URL, celery_config

__all__ = ["DEFAULT_REDIS_URL", "celery_config"]

"""Celery configuration for the workers; the settings live with the producer side in ``workflows.queue``."""

from __future__ import annotations

from workflows.queue import celery_config
from workflows.settings import DEFAULT_REDIS_URL

__all__ = ["DEFAULT_REDIS_URL", "celery_config"]

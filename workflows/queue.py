"""The queue between intake and workers: Celery configuration for no lost work, and the producer app.

The intake publishes ``process_webhook_event`` by name, so it needs the broker but not the workers' code
(dependencies flow workers → workflows → tracing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tracing.settings import SettingsError, env_int

__all__ = ["DEFAULT_REDIS_URL", "TASK_NAME", "celery_config", "producer_app"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
TASK_NAME = "process_webhook_event"


def celery_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, requeue on worker loss, prefetch 1, visibility timeout.

    Variables: REDIS_URL, CELERY_BROKER_URL (``amqp://`` works too), CELERY_RESULT_BACKEND,
    CELERY_VISIBILITY_TIMEOUT_S (Redis broker: how long an unacked task waits before redelivery; default
    3600), CELERY_DEFAULT_QUEUE.

    Raises:
        SettingsError: a variable has a bad value.
    """
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    broker = env.get("CELERY_BROKER_URL", "").strip() or redis_url
    if "://" not in broker:
        msg = f"CELERY_BROKER_URL={broker!r} is not a URL such as redis://host:6379/0 or amqp://host:5672//"
        raise SettingsError(msg)
    visibility = env_int(env, "CELERY_VISIBILITY_TIMEOUT_S", 3600, minimum=1)
    return {
        "broker_url": broker,
        "result_backend": env.get("CELERY_RESULT_BACKEND", "").strip() or redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Ack after the task ran and requeue when the worker dies under it: a killed worker's task runs
        # again (steps are idempotent), instead of being lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # kombu sweeps for unacked messages to restore only every interval x throttle seconds (10 x 10 by
        # default): a worker killed with its task would have it redelivered up to 100 s after the
        # visibility timeout instead of at it. Sweep at half the timeout, at most every minute.
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "unacked_restore_interval": min(60, max(1, visibility // 2)),
            "unacked_restore_throttle": 1,
        },
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "broker_connection_retry_on_startup": True,
        "task_default_queue": env.get("CELERY_DEFAULT_QUEUE", "").strip() or "celery",
        "result_expires": 86400,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def producer_app(env: Mapping[str, str] | None = None) -> Any:
    """A Celery app that only publishes (the intake's, the CLI's), traced with ``instrument_celery``."""
    from celery import Celery  # noqa: PLC0415

    from tracing import instrument_celery  # noqa: PLC0415

    app = Celery("tracehook-producer")
    config = celery_config(env)
    # A producer answering a sender must fail fast when the broker is down (the sender retries), not
    # let kombu retry the connection for seconds per request; workers keep their patient defaults.
    config["broker_transport_options"] = {**config["broker_transport_options"], "max_retries": 0}
    config["broker_connection_timeout"] = 2
    app.conf.update(config)
    instrument_celery(app, configure_worker=False)
    return app

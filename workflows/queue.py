"""The queue between intake and workers: Celery configuration for no lost work, and the producer app.

The intake publishes ``process_webhook_event`` by name, so it needs the broker but not the workers' code
(dependencies flow workers → workflows → tracing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

from tracing import instrument_celery
from workflows.settings import QueueSettings, load_queue_settings

__all__ = [
    "CONFIRM_HEADER",
    "REDIS_TRANSPORT",
    "TASK_NAME",
    "Publisher",
    "celery_config",
    "producer_app",
]

TASK_NAME = "process_webhook_event"
# kombu's Redis transport with one client per channel, and the intake's confirmation in its publish.
REDIS_TRANSPORT: Final = "workflows._redis_transport:Transport"
# A task header REDIS_TRANSPORT removes before writing the message: [key, value, seconds to live] of a
# dedupe key to set in the same transaction as the push.
CONFIRM_HEADER: Final = "tracehook-dedupe-confirm"


class Publisher(Protocol):
    """What publishes a task by name: a Celery app (:func:`producer_app`), or a stand-in in tests."""

    def send_task(self, name: str, *, kwargs: dict[str, Any], **options: Any) -> Any:
        """Publish the task ``name``; the answer has its ``id``."""


def celery_config(settings: QueueSettings | Mapping[str, str] | None = None) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, requeue on worker loss, prefetch 1, visibility timeout.

    Args:
        settings: the queue's settings, or the environment to read them from (``os.environ`` when
            omitted; :func:`workflows.settings.load_queue_settings` names the variables).

    Raises:
        SettingsError: a variable has a bad value.
    """
    if not isinstance(settings, QueueSettings):
        settings = load_queue_settings(settings)
    broker = settings.broker_url
    visibility = settings.visibility_timeout_s
    # kombu sweeps for unacked messages to restore only every interval x throttle seconds (10 x 10 by
    # default): a worker killed with its task would have it redelivered up to 100 s after the visibility
    # timeout instead of at it. Sweep at half the timeout, at most every minute.
    transport: dict[str, Any] = {
        "visibility_timeout": visibility,
        "unacked_restore_interval": min(60, max(1, visibility // 2)),
        "unacked_restore_throttle": 1,
    }
    urls: dict[str, str] = {}
    if broker.startswith("redis://"):
        # kombu's Redis transport with one redis-py client per channel, not one per publish or ack.
        urls["broker_transport"] = REDIS_TRANSPORT
    return {
        "broker_url": broker,
        **urls,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Ack after the task ran and requeue when the worker dies under it: a killed worker's task runs
        # again (steps are idempotent), instead of being lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.default_queue,
        "result_expires": 86400,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def producer_app(settings: QueueSettings | Mapping[str, str] | None = None) -> Any:
    """A Celery app that only publishes (the intake's, the CLI's), traced with ``instrument_celery``."""
    from celery import Celery  # noqa: PLC0415  # Celery only where a producer is made, not for its settings

    app = Celery("tracehook-producer")
    config = celery_config(settings)
    # A producer answering a sender must fail fast when the broker is down (the sender retries), not
    # let kombu retry the connection for seconds per request; workers keep their patient defaults.
    transport = {**config["broker_transport_options"], "max_retries": 0}
    if config["broker_url"].startswith(("redis://", "rediss://", "redis+socket://")):
        # kombu's Redis client waits forever on a stalled server by default; the intake publishes on
        # its event loop while the broker is quick (workflows._offload), so a stall holds it 2 s at most.
        transport["socket_timeout"] = 2
    config["broker_transport_options"] = transport
    config["broker_connection_timeout"] = 2
    app.conf.update(config)
    instrument_celery(app, configure_worker=False)
    return app

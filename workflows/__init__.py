"""The RentVine domain: events, workflows and their steps, the RentVine API client, the intake app.

Flat modules, one job each: ``events`` (the webhook's schema), ``signing`` (Standard Webhooks),
``intake`` (``POST /webhooks/rentvine``), ``queue`` (the Celery configuration and the producer), ``engine``
(the workflows and their steps), ``rentvine`` (the API client), ``correlation`` (source operations),
``dlq`` (the dead-letter list), ``store`` (the key-value store behind them), ``metrics`` and
``objective`` (the domain's metrics), ``settings``. The command line is :mod:`workflows.cli`, the
RentVine API stand-in :mod:`workflows.sandbox`.

Names are imported on first use: every container starts through ``python -m workflows._compose``, which
imports this package and must load nothing before it runs the service; nor does the command line load
FastAPI or Celery to print its help.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows.dlq import DeadLetter, DeadLetters
    from workflows.engine import WorkflowError, run_workflow
    from workflows.events import (
        EVENT_TYPES,
        FIXTURES,
        EventError,
        WebhookEvent,
        classify_priority,
        load_fixture,
        parse_event,
    )
    from workflows.objective import record_completion
    from workflows.queue import TASK_NAME, Publisher, celery_config, producer_app
    from workflows.rentvine import RentVineClient, RentVineError
    from workflows.settings import (
        DEFAULT_REDIS_URL,
        AppSettings,
        QueueSettings,
        load_app_settings,
        load_queue_settings,
    )
    from workflows.signing import (
        SignatureError,
        StandardWebhooksVerifier,
        Verifier,
        decode_secret,
        new_secret,
        signed_headers,
    )
    from workflows.store import KeyValueStore

__all__ = [
    "DEFAULT_REDIS_URL",
    "EVENT_TYPES",
    "FIXTURES",
    "TASK_NAME",
    "AppSettings",
    "DeadLetter",
    "DeadLetters",
    "EventError",
    "KeyValueStore",
    "Publisher",
    "QueueSettings",
    "RentVineClient",
    "RentVineError",
    "SignatureError",
    "StandardWebhooksVerifier",
    "Verifier",
    "WebhookEvent",
    "WorkflowError",
    "celery_config",
    "classify_priority",
    "decode_secret",
    "load_app_settings",
    "load_fixture",
    "load_queue_settings",
    "new_secret",
    "parse_event",
    "producer_app",
    "record_completion",
    "run_workflow",
    "signed_headers",
]

_HOMES = {
    "DeadLetter": "workflows.dlq",
    "DeadLetters": "workflows.dlq",
    "KeyValueStore": "workflows.store",
    "WorkflowError": "workflows.engine",
    "run_workflow": "workflows.engine",
    "EVENT_TYPES": "workflows.events",
    "FIXTURES": "workflows.events",
    "EventError": "workflows.events",
    "WebhookEvent": "workflows.events",
    "classify_priority": "workflows.events",
    "load_fixture": "workflows.events",
    "parse_event": "workflows.events",
    "record_completion": "workflows.objective",
    "TASK_NAME": "workflows.queue",
    "Publisher": "workflows.queue",
    "celery_config": "workflows.queue",
    "producer_app": "workflows.queue",
    "RentVineClient": "workflows.rentvine",
    "RentVineError": "workflows.rentvine",
    "DEFAULT_REDIS_URL": "workflows.settings",
    "AppSettings": "workflows.settings",
    "QueueSettings": "workflows.settings",
    "load_app_settings": "workflows.settings",
    "load_queue_settings": "workflows.settings",
    "SignatureError": "workflows.signing",
    "StandardWebhooksVerifier": "workflows.signing",
    "Verifier": "workflows.signing",
    "decode_secret": "workflows.signing",
    "new_secret": "workflows.signing",
    "signed_headers": "workflows.signing",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names."""
    return sorted(__all__)

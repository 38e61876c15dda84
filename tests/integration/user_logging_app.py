"""A user's own Celery app with a logging handler of their own on the root logger, added after tracehook's.

The integration tests run a prefork worker on it
(``celery -A tests.integration.user_logging_app worker --pool=prefork``) with ``USER_LOG_FILE`` set: each
worker child then writes every log line it makes to that file, through the user's ``FileHandler``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import structlog
from celery import Celery, signals

from tracing import instrument_celery

_REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CARD = "4111 1111 1111 1111"
USER_FORMAT = "%(levelname)s|%(name)s|%(trace_id)s|%(span_id)s|%(message)s"

app = Celery("user_logging_app", broker=_REDIS_URL, backend=_REDIS_URL)
instrument_celery(app)  # configure_worker=True: tracehook sets up logging in each worker process

log = structlog.get_logger("user.tasks")


@signals.worker_process_init.connect
def add_user_handler(**_: Any) -> None:
    """The user's own file handler, added once tracehook has set up logging in the worker child."""
    path = os.environ.get("USER_LOG_FILE")
    if not path:
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(USER_FORMAT, defaults={"trace_id": "-", "span_id": "-"}))
    logging.getLogger().addHandler(handler)


@app.task
def charge(order_id: str) -> str:
    """Log a structlog line with a card number in a field, and a stdlib line with one in its arguments."""
    log.info("charge.started", order_id=order_id, card=CARD)
    logging.getLogger("user.payments").warning("card on file %s", CARD.replace(" ", ""))
    return order_id

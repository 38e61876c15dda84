"""docs/celery.md's snippet in a user's own app: one ``instrument_celery(app)`` call, configuration after it.

No ``configure_tracing()``, no provider of the user's: tracehook sets its own up from the environment, in
the worker (``celery -A ... worker``) and in any process that only publishes (a web app calling ``.delay()``).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from tests.integration.user_apps._common import REDIS_URL, wiring
from tracing import instrument_celery

app = Celery("user_plain")
instrument_celery(app)
app.conf.update(
    broker_url=REDIS_URL,
    result_backend=REDIS_URL,
    task_default_queue=os.environ.get("USER_QUEUE", "celery"),
    task_protocol=int(os.environ.get("USER_TASK_PROTOCOL", "2")),
)


@app.task(name="user_plain.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="user_plain.noop")
def noop() -> None:
    return None


@app.task(name="user_plain.wiring")
def report_wiring() -> dict[str, Any]:
    return wiring()

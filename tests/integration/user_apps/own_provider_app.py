"""A user who brought their own OpenTelemetry SDK set-up and their own logging, then added tracehook.

``USER_PROVIDER_MODE`` says how the provider reaches tracehook:

* ``argument``: ``instrument_celery(app, tracer_provider=provider)``;
* ``global``: ``trace.set_tracer_provider(provider)`` before ``instrument_celery(app)`` (the stock pattern);
* ``process-init``: ``instrument_celery(app)`` first, and the provider set in the user's own
  ``worker_process_init`` handler, connected after tracehook's (as the stock instrumentation's docs do).

Spans go to ``USER_OTLP_ENDPOINT`` with the service name ``user-own``; log lines to ``USER_LOG_FILE``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.integration.user_apps._common import REDIS_URL, wiring
from tracing import instrument_celery

MODE = os.environ.get("USER_PROVIDER_MODE", "argument")

logging.basicConfig(
    level=logging.INFO,
    format="USER %(levelname)s %(name)s %(message)s",
    handlers=[logging.FileHandler(os.environ.get("USER_LOG_FILE", os.devnull))],
)

app = Celery("user_own")
app.conf.update(
    broker_url=REDIS_URL,
    result_backend=REDIS_URL,
    task_default_queue=os.environ.get("USER_QUEUE", "celery"),
    worker_hijack_root_logger=False,  # the user's logging stays theirs
)


def _provider() -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "user-own"}))
    endpoint = os.environ.get("USER_OTLP_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


provider: TracerProvider | None = None
if MODE == "argument":
    provider = _provider()
    instrument_celery(app, tracer_provider=provider)
elif MODE == "global":
    provider = _provider()
    trace.set_tracer_provider(provider)
    instrument_celery(app)
else:
    instrument_celery(app)

    @worker_process_init.connect(weak=False)
    def _set_up_tracing(**_: Any) -> None:
        global provider  # noqa: PLW0603
        provider = _provider()
        trace.set_tracer_provider(provider)


@app.task(name="user_own.add")
def add(x: int, y: int) -> int:
    logging.getLogger("user_own.tasks").info("adding %s and %s", x, y)
    return x + y


@app.task(name="user_own.noop")
def noop() -> None:
    return None


@app.task(name="user_own.wiring")
def report_wiring() -> dict[str, Any]:
    return wiring(provider)

"""A user's own Celery app with the user's own OpenTelemetry set-up; tracehook only traces Celery.

The user builds the provider and its exporters: one writing each span, as it ends, to the file
``USER_SPANS_FILE`` (one JSON object a line), and a batch exporter to the OTLP endpoint of the environment.
Worker processes are started on it by ``tests/integration/test_user_provider.py``
(``celery -A tests.integration.user_apps.provider_scrub_app worker --pool=prefork``).
"""

from __future__ import annotations

import os

from celery import Celery
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tracing import instrument_celery

REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CARD = "4111 1111 1111 1111"

app = Celery("user_shop", broker=REDIS_URL, backend=REDIS_URL)
app.conf.task_default_queue = os.environ.get("CELERY_DEFAULT_QUEUE", "celery")


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


provider = TracerProvider(resource=Resource.create({"service.name": "user-shop"}))
if spans_file := os.environ.get("USER_SPANS_FILE"):
    out = open(spans_file, "a")  # noqa: SIM115  # the exporter writes to it for the process's lifetime
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_one_line)))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
instrument_celery(app, tracer_provider=provider)
tracer = provider.get_tracer("user_shop")


@app.task
def charge(order: str) -> str:
    """Charge an order; its spans carry a card number and an API key, and nothing is logged."""
    trace.get_current_span().set_attribute("payment.note", f"paid with {CARD}")
    attributes = {"shop.order": order, "vendor.api_key": "sk_live_0123"}
    with tracer.start_as_current_span("charge.card", attributes=attributes) as span:
        span.add_event("card.checked", {"card": CARD})
        span.record_exception(ValueError(f"first attempt declined for {CARD}"))
        span.set_status(Status(StatusCode.ERROR, f"declined {CARD}"))
    return order

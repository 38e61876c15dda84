"""A web process that only publishes: it imports the user's app and calls ``.delay()``, nothing else.

``python -m tests.integration.user_apps.web_producer MODE`` prints one JSON line: the ids it published.

* ``alone``: ``instrument_celery(app)`` (in the app module) is the only tracing call;
* ``user-first``: the user sets up their own SDK provider (service ``user-web-own``) before publishing;
* ``user-between``: one publish, then the user's provider is set up, then a second publish.

Each publish waits for its result, so the worker has run it before the process exits.
"""

from __future__ import annotations

import json
import os
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.integration.user_apps.plain_app import add


def _users_provider() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "user-web-own"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ["USER_OTLP_ENDPOINT"]))
    )
    trace.set_tracer_provider(provider)


def main(mode: str) -> None:
    ids = []
    if mode == "user-first":
        _users_provider()
    result = add.delay(2, 3)
    ids.append(result.id)
    assert 5 == result.get(timeout=30)
    if mode == "user-between":
        _users_provider()
        result = add.delay(3, 4)
        ids.append(result.id)
        assert 7 == result.get(timeout=30)
    print(json.dumps(ids), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

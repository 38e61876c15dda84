"""This process as a traced producer whose spans go to a receiver, for the length of a test."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from opentelemetry.sdk.trace import TracerProvider

from tracing.settings import TracingSettings
from tracing.setup import configure_tracing, reset_tracing
from tracing.testing._receiver import OtlpReceiver

__all__ = ["export_to"]


@contextlib.contextmanager
def export_to(
    receiver: OtlpReceiver, *, service_name: str = "test-producer", settings: TracingSettings | None = None
) -> Iterator[TracerProvider]:
    """Trace this process to ``receiver`` inside the block: tracehook's provider, global, exporting each
    span as it ends (synchronously, so a span is at the receiver when its ``with`` block is left).

    Whatever tracing was set up in this process is reset before and after (:func:`tracing.reset_tracing`).

    Args:
        receiver: where the spans go.
        service_name: the ``service.name`` of this process's spans.
        settings: settings to start from (sampling, limits, ...); the endpoint and service name are
            replaced. Defaults: sample everything.

    Yields:
        The tracer provider (for ``instrument_celery(app, tracer_provider=...)`` and the like).
    """
    chosen = dataclasses.replace(
        settings or TracingSettings(),
        service_name=service_name,
        exporter="otlp",
        exporter_path=None,
        otlp_endpoint=receiver.traces_url,
    )
    reset_tracing()
    try:
        yield configure_tracing(chosen, batch=False)
    finally:
        reset_tracing()

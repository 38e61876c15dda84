"""Shared fixtures: an in-memory span exporter, captured log lines, and clean OpenTelemetry globals."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracing import TracingSettings, configure_logging, configure_tracing, reset_tracing
from tracing.logs import reset_logging
from tracing.metrics import reset_metrics

pytest_plugins = ["celery.contrib.pytest"]


@pytest.fixture(autouse=True)
def _clean_globals() -> Iterator[None]:
    """Every test starts with no tracer or meter provider, no structlog context and default logging."""
    reset_tracing()
    reset_metrics()
    structlog.contextvars.clear_contextvars()
    yield
    reset_tracing()
    reset_metrics()
    structlog.contextvars.clear_contextvars()
    reset_logging()


@pytest.fixture
def settings() -> TracingSettings:
    """Settings for unit tests: sample everything, nothing exported but to the test's exporter."""
    return TracingSettings(service_name="test-service", exporter="none")


@pytest.fixture
def span_exporter(settings: TracingSettings) -> InMemorySpanExporter:
    """Tracing configured with a synchronous in-memory exporter; finished spans are in ``.get_finished_spans()``."""
    exporter = InMemorySpanExporter()
    configure_tracing(settings, exporter=exporter, batch=False)
    return exporter


@dataclass
class CapturedLogs:
    """Log lines written through ``configure_logging`` into memory."""

    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far, parsed from JSON."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    @property
    def text(self) -> str:
        """Everything written, as text."""
        return self.stream.getvalue()


@pytest.fixture
def captured_logs(settings: TracingSettings) -> CapturedLogs:
    """JSON logging configured into memory, at DEBUG."""
    captured = CapturedLogs()
    configure_logging(settings, level="DEBUG", fmt="json", stream=captured.stream)
    return captured


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> ReadableSpan:
    """The one span with this name."""
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in spans]}"
    return found[0]

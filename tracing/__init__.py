"""tracehook's tracing library: domain-free OpenTelemetry + structlog helpers.

Set up once per process with :func:`configure_tracing` and :func:`configure_logging` (and
:func:`configure_metrics` for metrics, served with :func:`metrics_registry`); then use
:class:`trace_span`, :func:`traced`, :func:`trace_batch`, :func:`record_error`, and the propagation helpers.
The guide's names (``get_tracer``, ``trace_async_operation``, ...) are here too (docs/guide.md).
"""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import Decision, SamplingResult
from opentelemetry.trace import SpanKind

from tracing.batch import BatchItemError, BatchResult, trace_batch
from tracing.celery_tracing import CeleryInstrumentation, instrument_celery
from tracing.exporters import OtlpJsonFileExporter, iter_otlp_json_spans
from tracing.guide import (
    BusinessMetrics,
    EntityOperationTracing,
    GuideTracer,
    OperationBasedSampler,
    PerformanceProfiler,
    RentVineTracing,
    WebhookTracingMiddleware,
    correlate_with_logs,
    get_tracer,
    setup_tracing_middleware,
    trace_async_operation,
)
from tracing.instrumentation import instrument_libraries
from tracing.logs import add_trace_context, configure_logging, get_logger
from tracing.metrics import MetricSpec, configure_metrics
from tracing.processors import TracehookSpanProcessor
from tracing.prometheus import metrics_registry
from tracing.propagation import extract_context, inject_headers
from tracing.protection import protect_provider
from tracing.sampling import RuleBasedSampler, Sampler, build_sampler
from tracing.scrubbing import REDACTED, scrub_mapping, scrub_text, scrub_value
from tracing.settings import SettingsError, TracingSettings, load_settings
from tracing.setup import configure_tracing, flush_tracing, reset_tracing, shutdown_tracing
from tracing.spans import flatten_attributes, record_error, span_ids, trace_span, traced

__all__ = [
    "REDACTED",
    "BatchItemError",
    "BatchResult",
    "BusinessMetrics",
    "CeleryInstrumentation",
    "Decision",
    "EntityOperationTracing",
    "GuideTracer",
    "MetricSpec",
    "OperationBasedSampler",
    "OtlpJsonFileExporter",
    "PerformanceProfiler",
    "RentVineTracing",
    "RuleBasedSampler",
    "Sampler",
    "SamplingResult",
    "SettingsError",
    "SpanKind",
    "TracehookSpanProcessor",
    "TracingSettings",
    "WebhookTracingMiddleware",
    "add_trace_context",
    "build_sampler",
    "configure_logging",
    "configure_metrics",
    "configure_tracing",
    "correlate_with_logs",
    "extract_context",
    "flatten_attributes",
    "flush_tracing",
    "get_logger",
    "get_tracer",
    "inject_headers",
    "instrument_celery",
    "instrument_libraries",
    "iter_otlp_json_spans",
    "load_settings",
    "metrics_registry",
    "protect_provider",
    "record_error",
    "reset_tracing",
    "scrub_mapping",
    "scrub_text",
    "scrub_value",
    "setup_tracing_middleware",
    "shutdown_tracing",
    "span_ids",
    "trace_async_operation",
    "trace_batch",
    "trace_span",
    "traced",
]

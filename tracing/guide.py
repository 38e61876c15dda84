"""The guide's API (docs/guide.md), kept working as thin adapters over the library.

The guide our users start from imports ``distributed_tracing`` and ``trace_middleware``; here the same
names live in :mod:`tracing`. Nothing in this module is a second implementation: each name forwards to
the helpers in ``spans``, ``batch``, ``sampling``, ``setup`` and ``logs``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Final, TypeVar, cast

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from tracing.batch import BatchResult, trace_batch
from tracing.propagation import extract_context
from tracing.sampling import RuleBasedSampler
from tracing.settings import load_settings, sampling_rates
from tracing.setup import configure_tracing
from tracing.spans import INSTRUMENTATION_NAME, _profiling, record_error, span_ids, trace_span, traced

__all__ = [
    "BusinessMetrics",
    "EntityOperationTracing",
    "GuideTracer",
    "OperationBasedSampler",
    "PerformanceProfiler",
    "RentVineTracing",
    "WebhookTracingMiddleware",
    "correlate_with_logs",
    "get_tracer",
    "setup_tracing_middleware",
    "trace_async_operation",
]

R = TypeVar("R")
HEALTH_PATHS: Final = "healthz,health,readyz,livez,metrics"
# The guide's custom sampler: "Always sample payment operations".
GUIDE_EMERGENCY_NAMES: Final = ("payment",)


def correlate_with_logs(span: Span | None = None) -> dict[str, str]:
    """``{"trace_id", "span_id"}`` in hex for a span (the current one when omitted); ``{}`` when invalid."""
    return span_ids((span if span is not None else trace.get_current_span()).get_span_context())


class GuideTracer:
    """The tracer object of the guide: ``trace_span``, ``record_error``, ``trace_batch_operation``, ...

    It also forwards ``start_span`` and ``start_as_current_span`` to the OpenTelemetry tracer, so the
    guide's multi-service example works on it unchanged.
    """

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer if tracer is not None else trace.get_tracer(INSTRUMENTATION_NAME)

    def trace_span(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        **options: Any,
    ) -> trace_span:
        """A span around a ``with`` block (see :class:`tracing.trace_span`)."""
        return trace_span(name, kind=kind, attributes=attributes, tracer=self.tracer, **options)

    @staticmethod
    def record_error(span: Span, exc: BaseException, attributes: Mapping[str, Any] | None = None) -> None:
        """Record an exception with its context on a span (see :func:`tracing.record_error`)."""
        record_error(span, exc, attributes)

    async def trace_batch_operation(
        self,
        operation_name: str,
        items: Sequence[Any],
        process_func: Callable[[Any], Any],
        batch_size: int = 10,
        attributes: Mapping[str, Any] | None = None,
    ) -> BatchResult[Any]:
        """Run a batch in traced chunks; returns ``(results, errors)`` (see :func:`tracing.trace_batch`)."""
        outcome: Any = trace_batch(
            operation_name, items, process_func, batch_size, attributes, tracer=self.tracer
        )
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return cast(BatchResult[Any], outcome)

    @staticmethod
    def correlate_with_logs(span: Span | None = None) -> dict[str, str]:
        """The ids a log line needs to point at this span."""
        return correlate_with_logs(span)

    def start_span(self, name: str, **kwargs: Any) -> Span:
        """OpenTelemetry's ``Tracer.start_span``."""
        return self.tracer.start_span(name, **kwargs)

    def start_as_current_span(self, name: str, **kwargs: Any) -> AbstractContextManager[Span]:
        """OpenTelemetry's ``Tracer.start_as_current_span``."""
        return self.tracer.start_as_current_span(name, **kwargs)


def get_tracer(name: str = INSTRUMENTATION_NAME) -> GuideTracer:
    """The guide's tracer, over the global provider (set it up with ``configure_tracing``)."""
    return GuideTracer(trace.get_tracer(name))


def trace_async_operation(
    name: str | None = None, attributes: Mapping[str, AttributeValue] | None = None
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """The guide's decorator: a span per call of a sync or async function (see :func:`tracing.traced`)."""
    return traced(name, attributes=attributes)


class EntityOperationTracing:
    """Decorators for operations on a system's entities: ``trace_<entity>_operation(action)``.

    ``RentVineTracing.trace_work_order_operation("create")`` names its spans
    ``rentvine.work_order.create``; any ``trace_<entity>_operation`` works the same way, so this module
    needs to know no entity.
    """

    def __init__(self, system: str) -> None:
        self.system = system

    def trace_operation(
        self, entity: str, action: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> Callable[[Callable[..., R]], Callable[..., R]]:
        """A decorator giving each call a span ``<system>.<entity>.<action>``."""
        attrs: dict[str, AttributeValue] = {
            f"{self.system}.entity": entity,
            f"{self.system}.operation": action,
            **(attributes or {}),
        }
        return traced(f"{self.system}.{entity}.{action}", attributes=attrs)

    def __getattr__(self, attribute: str) -> Callable[..., Callable[[Callable[..., R]], Callable[..., R]]]:
        if attribute.startswith("trace_") and attribute.endswith("_operation"):
            entity = attribute.removeprefix("trace_").removesuffix("_operation")
            if entity:
                return lambda action, attributes=None: self.trace_operation(entity, action, attributes)
        raise AttributeError(attribute)


RentVineTracing: Final = EntityOperationTracing("rentvine")


class OperationBasedSampler(RuleBasedSampler):
    """The guide's sampler: payments and emergencies kept, health checks at 1%, the rest at a ratio.

    The ratios default to TRACE_SAMPLING_RATE and TRACE_EMERGENCY_SAMPLING_RATE; ``emergency_names``
    to the guide's rule, "always sample payment operations".
    """

    def __init__(
        self,
        rate: float | None = None,
        emergency_rate: float | None = None,
        health_rate: float = 0.01,
        *,
        emergency_names: Iterable[str] = GUIDE_EMERGENCY_NAMES,
    ) -> None:
        env_rate, env_emergency_rate = sampling_rates()
        super().__init__(
            rate if rate is not None else env_rate,
            emergency_rate if emergency_rate is not None else env_emergency_rate,
            health_rate,
            emergency_names=emergency_names,
        )


def setup_tracing_middleware(
    app: Any,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    *,
    excluded_urls: str = HEALTH_PATHS,
) -> GuideTracer:
    """Set up tracing for a FastAPI app: provider from the environment, a SERVER span per request.

    Health-check paths are never traced. The arguments override SERVICE_NAME, SERVICE_VERSION and
    ENVIRONMENT.

    Returns:
        The guide's tracer.
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415

    settings = load_settings()
    settings = replace(
        settings,
        service_name=service_name or settings.service_name,
        service_version=service_version or settings.service_version,
        environment=environment or settings.environment,
    )
    provider = configure_tracing(settings)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=excluded_urls)
    return get_tracer()


SourceResolver = Callable[[str, Mapping[str, Any]], Mapping[str, str] | None]


class WebhookTracingMiddleware:
    """Ties a webhook to the operation that caused it (the guide's "webhook context extraction").

    Args:
        tracer: the guide's tracer.
        resolve_source: optional lookup ``(webhook_type, data) -> {"trace_id", "span_id"}`` of the operation
            that caused the webhook (the workflows record those in Redis).
    """

    def __init__(
        self, tracer: GuideTracer | None = None, resolve_source: SourceResolver | None = None
    ) -> None:
        self.tracer = tracer or get_tracer()
        self.resolve_source = resolve_source

    async def trace_webhook(
        self, webhook_type: str, webhook_data: Mapping[str, Any], source: str = "unknown"
    ) -> dict[str, AttributeValue]:
        """Attributes for the webhook's spans: type, source, and the causing operation's trace when known."""
        attributes: dict[str, AttributeValue] = {"webhook.type": webhook_type, "webhook.source": source}
        origin: Mapping[str, str] | None = None
        if self.resolve_source is not None:
            origin = self.resolve_source(webhook_type, webhook_data)
        if origin is None:
            carrier = webhook_data.get("trace_context") if isinstance(webhook_data, Mapping) else None
            if isinstance(carrier, Mapping):
                origin = span_ids(trace.get_current_span(extract_context(carrier)).get_span_context()) or None
        if origin:
            attributes["webhook.source_trace_id"] = origin["trace_id"]
            attributes["webhook.source_span_id"] = origin.get("span_id", "")
        return attributes


class PerformanceProfiler:
    """The guide's profiler: run a function under cProfile inside a ``profile.<name>`` span."""

    @staticmethod
    async def profile_operation(
        operation_name: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Call ``func`` (sync or async) under cProfile; its top 10 functions become a ``profile`` event."""
        with trace_span(f"profile.{operation_name}") as span, _profiling(span, enabled=True):
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result


class BusinessMetrics:
    """The guide's business metrics: revenue counted, occupancy observed, both also on the current span.

    Metric labels are kept low-cardinality: ids (such as a property id) go on the span, never on a metric.
    """

    def __init__(self, tracer: GuideTracer | None = None) -> None:
        from opentelemetry import metrics  # noqa: PLC0415

        self.tracer = tracer or get_tracer()
        self.meter = metrics.get_meter("business_metrics")
        self._occupancy = 0.0
        self.revenue_counter = self.meter.create_counter(
            "revenue_total", unit="USD", description="Total revenue processed"
        )
        self.occupancy_gauge = self.meter.create_observable_gauge(
            "occupancy_rate", [self.get_occupancy_rate], unit="percent", description="Current occupancy rate"
        )

    def set_occupancy_rate(self, percent: float) -> None:
        """Set the occupancy the gauge reports."""
        self._occupancy = percent

    def get_occupancy_rate(self, _options: Any = None) -> Iterator[Any]:
        """Gauge callback."""
        from opentelemetry.metrics import Observation  # noqa: PLC0415

        yield Observation(self._occupancy)

    async def record_payment(self, amount: float, property_id: str, currency: str = "USD") -> None:
        """Count a payment and note it on the current span."""
        span = trace.get_current_span()
        span.set_attribute("payment.amount", amount)
        span.set_attribute("rentvine.property_id", property_id)
        self.revenue_counter.add(amount, {"currency": currency})

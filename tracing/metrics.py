"""Metrics: OpenTelemetry instruments, one meter provider per process, recording that never fails.

Instruments are declared once as :class:`MetricSpec` (their Prometheus name, kind, unit, labels, buckets)
and created lazily from this process's ``MeterProvider``. The provider has a pull reader, read when
``/metrics`` is scraped (:mod:`tracing.prometheus`, for a single-process server such as the intake) or
written to a snapshot file that the Celery worker's main process sums with its other pool children's
(:mod:`tracing.snapshots`, prefork). A forked child never reports its parent's counts: the first record
after a fork builds a fresh provider.

Recording (:func:`count`, :func:`observe`) catches and logs its own failures: a metric never fails the
request or task that records it. Labels are the spec's, values stringified; keep them low-cardinality
(never ids).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from opentelemetry.context import Context
from opentelemetry.sdk.metrics import Counter, ExemplarReservoir, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import Attributes

from tracing.settings import TracingSettings, load_settings

__all__ = [
    "BATCH_ITEMS",
    "DURATION_BUCKETS_S",
    "QUEUE_WAIT",
    "TASKS",
    "TASK_DURATION",
    "MetricSpec",
    "collect_metrics",
    "configure_metrics",
    "count",
    "define",
    "metric_specs",
    "metrics_enabled",
    "observe",
    "reset_metrics",
    "start_at_zero",
]

_log = logging.getLogger("tracing.metrics")
_lock = threading.RLock()
# Cached, and renewed after a fork: os.getpid() is a system call, and recording checks it every time.
_pid = os.getpid()

Kind = Literal["counter", "histogram"]

DURATION_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS_S: Final = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One instrument: ``name`` is its Prometheus family name (a counter is exported as ``name_total``)."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    buckets: tuple[float, ...] = ()

    @property
    def exported_names(self) -> tuple[str, ...]:
        """The sample names Prometheus sees for this instrument."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")


_SPECS: dict[str, MetricSpec] = {}


def define(spec: MetricSpec) -> MetricSpec:
    """Declare an instrument (once per name; the same spec again is a no-op) and return it.

    Raises:
        ValueError: another spec already has this name.
    """
    existing = _SPECS.setdefault(spec.name, spec)
    if existing != spec:
        msg = f"metric {spec.name} is already defined differently: {existing}"
        raise ValueError(msg)
    return spec


def metric_specs() -> tuple[MetricSpec, ...]:
    """Every instrument declared so far (import ``workflows.metrics`` for the RentVine ones)."""
    return tuple(_SPECS.values())


TASKS: Final = define(
    MetricSpec(
        "tracehook_tasks",
        "counter",
        "Celery task runs by outcome: succeeded, failed, retried, dead_lettered, ...",
        ("task", "status"),
    )
)
TASK_DURATION: Final = define(
    MetricSpec(
        "tracehook_task_duration_seconds",
        "histogram",
        "Run time of a Celery task attempt",
        ("task",),
        "s",
        DURATION_BUCKETS_S,
    )
)
QUEUE_WAIT: Final = define(
    MetricSpec(
        "tracehook_queue_wait_seconds",
        "histogram",
        "Time from publish (or ETA) to the start of a task run",
        ("queue",),
        "s",
        _WAIT_BUCKETS_S,
    )
)
BATCH_ITEMS: Final = define(
    MetricSpec(
        "tracehook_batch_items",
        "counter",
        "Items processed by trace_batch, by outcome: succeeded or failed",
        ("operation", "outcome"),
    )
)


@dataclass(slots=True)
class _State:
    pid: int
    settings: TracingSettings
    provider: MeterProvider
    reader: InMemoryMetricReader
    instruments: dict[str, Any] = field(default_factory=dict)
    # The SDK hands each exemplar out once per collection; tracing.snapshots keeps the last one per bucket.
    exemplars: dict[Any, Any] = field(default_factory=dict)


_state: _State | None = None
_disabled = False


class _NoExemplars(ExemplarReservoir):
    """Counters' exemplars are never exported; the SDK's default reservoir would cost ~4 µs per add."""

    def offer(self, value: float, time_unix_nano: int, attributes: Attributes, context: Context) -> None:
        """Keep nothing."""

    def collect(self, point_attributes: Attributes) -> list[Any]:
        """Nothing kept."""
        return []


_VIEWS: Final = (
    View(instrument_type=Counter, exemplar_reservoir_factory=lambda _: lambda **__: _NoExemplars()),
    View(instrument_type=Histogram),
)


def configure_metrics(settings: TracingSettings | None = None) -> bool:
    """Set up this process's meter provider; idempotent in a process, fresh in a forked child.

    Args:
        settings: read from the environment when omitted; ``METRICS_ENABLED=false`` turns recording off.

    Returns:
        Whether metrics are recorded in this process.
    """
    global _state, _disabled  # one provider per process is the point of this module
    with _lock:
        if _state is not None and _state.pid == _pid:
            return True
        previous = _state.settings if _state is not None else None
        chosen = settings or previous or load_settings()
        if not chosen.metrics_enabled:
            _state, _disabled = None, True
            return False
        reader = InMemoryMetricReader()
        resource = Resource.create(
            {"service.name": chosen.service_name, "service.version": chosen.service_version}
        )
        provider = MeterProvider(
            metric_readers=[reader], resource=resource, views=_VIEWS, shutdown_on_exit=False
        )
        _state, _disabled = _State(_pid, chosen, provider, reader), False
        return True


def metrics_enabled() -> bool:
    """Whether this process records metrics (configured and not turned off)."""
    return _state is not None and not _disabled


def reset_metrics() -> None:
    """Forget this process's provider and everything it recorded (tests use this between cases)."""
    global _state, _disabled
    with _lock:
        _state, _disabled = None, False


def _instrument(spec: MetricSpec) -> Any:
    state = _state
    if state is None or state.pid != _pid:
        # Not configured (a library user who did not ask for metrics), or forked since: in a child,
        # start from zero so the parent's counts are not reported twice.
        if state is None or _disabled or not configure_metrics():
            return None
        state = _state
        assert state is not None  # noqa: S101  # configure_metrics() returned True
    found = state.instruments.get(spec.name)
    if found is None:
        with _lock:
            meter = state.provider.get_meter("tracehook")
            if spec.kind == "counter":
                found = meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
            else:
                found = meter.create_histogram(
                    spec.name,
                    unit=spec.unit,
                    description=spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.buckets or DURATION_BUCKETS_S),
                )
            state.instruments[spec.name] = found
    return found


def _labels(spec: MetricSpec, attributes: Mapping[str, Any] | None) -> dict[str, str]:
    given = attributes or {}
    return {key: str(given.get(key, "")) for key in spec.labels}


def count(
    spec: MetricSpec,
    value: float = 1,
    attributes: Mapping[str, Any] | None = None,
    *,
    context: Context | None = None,
) -> None:
    """Add ``value`` to a counter; never raises."""
    try:
        instrument = _instrument(spec)
        if instrument is not None:
            instrument.add(value, _labels(spec, attributes), context=context)
    except Exception:
        _log.warning("tracehook: could not record metric %s", spec.name, exc_info=True)


def start_at_zero(spec: MetricSpec, label_sets: Iterable[Mapping[str, Any]]) -> None:
    """Export a counter's series for ``label_sets`` now, at 0, before anything is counted; never raises.

    Prometheus's ``increase()`` sees no increase in the sample that creates a series: a series born at N
    (a worker's first dead letter, say) hides those N events. Call this where the process starts, for the
    label values that are known then; it does nothing where metrics are not configured.
    """
    for labels in label_sets:
        count(spec, 0, labels)


def observe(
    spec: MetricSpec,
    value: float,
    attributes: Mapping[str, Any] | None = None,
    *,
    context: Context | None = None,
) -> None:
    """Record ``value`` in a histogram; never raises.

    The span of ``context`` (or the current span) becomes the value's exemplar when it is sampled.
    """
    try:
        instrument = _instrument(spec)
        if instrument is not None:
            instrument.record(value, _labels(spec, attributes), context=context)
    except Exception:
        _log.warning("tracehook: could not record metric %s", spec.name, exc_info=True)


def _reinit_after_fork() -> None:
    # A fork while another thread (the worker's scrape thread) held the lock would leave the child's
    # copy locked forever.
    global _lock, _pid  # noqa: PLW0603
    _lock = threading.RLock()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reinit_after_fork)


def collect_metrics() -> tuple[MetricsData | None, dict[Any, Any]]:
    """What this process has recorded so far (cumulative; None when metrics are not set up here), and a
    dict that lives as long as this process's provider, for the caller's memory of exemplars."""
    state = _state
    if state is None or state.pid != _pid:
        return None, {}
    with _lock:
        return state.reader.get_metrics_data(), state.exemplars

"""Metrics: instruments declared once, aggregated in plain Python per process, recording that never fails.

Instruments are declared once as :class:`MetricSpec` (their Prometheus name, kind, unit, labels, buckets).
Each process aggregates what it records in memory: a counter is a number per label set, a histogram its
bucket counts, sum, count and, per bucket, the latest exemplar (the trace and span ids of a value recorded
inside a sampled span). :func:`snapshot` reads it when ``/metrics`` is scraped (:mod:`tracing.prometheus`,
for a single-process server such as the intake) or writes it to a file that the Celery worker's main
process sums with its other pool children's (:mod:`tracing._snapshots`, prefork). A forked child never
reports its parent's counts: the first record after a fork starts from zero.

Why not OpenTelemetry's metrics SDK, which this module used before: it cost 4-10 µs per recorded value
(three per task, two per webhook) for aggregation this module does in about 1 µs, and the only reader it
had here was this process's own snapshot; the exposition format and its exemplars are unchanged.

Recording (:func:`count`, :func:`observe`) catches and logs its own failures: a metric never fails the
request or task that records it. Labels are the spec's, values stringified; keep them low-cardinality
(never ids).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import format_span_id, format_trace_id

from tracing._guard import capture_internal_errors
from tracing.settings import TracingSettings, load_settings

__all__ = [
    "BATCH_ITEMS",
    "DURATION_BUCKETS_S",
    "QUEUE_WAIT",
    "TASKS",
    "TASK_DURATION",
    "MetricSpec",
    "configure_metrics",
    "count",
    "define",
    "metric_specs",
    "metrics_enabled",
    "observe",
    "reset_metrics",
    "snapshot",
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
class _Histogram:
    counts: list[int]
    total: float = 0.0
    number: int = 0
    # Bucket index -> (trace_id, span_id, value, unix time) of the latest value recorded in a sampled span.
    exemplars: dict[int, tuple[int, int, float, float]] = field(default_factory=dict)


@dataclass(slots=True)
class _State:
    pid: int
    settings: TracingSettings
    # Metric name -> label values (in the spec's order) -> a counter's value or a histogram's state.
    series: dict[str, dict[tuple[str, ...], Any]] = field(default_factory=dict)


_state: _State | None = None
_disabled = False


def configure_metrics(settings: TracingSettings | None = None) -> bool:
    """Set up this process's metrics; idempotent in a process, fresh in a forked child.

    Args:
        settings: read from the environment when omitted; ``METRICS_ENABLED=false`` turns recording off.

    Returns:
        Whether metrics are recorded in this process.
    """
    global _state, _disabled  # one aggregation per process is the point of this module
    with _lock:
        if _state is not None and _state.pid == _pid:
            return True
        previous = _state.settings if _state is not None else None
        chosen = settings or previous or load_settings()
        if not chosen.metrics_enabled:
            _state, _disabled = None, True
            return False
        _state, _disabled = _State(_pid, chosen), False
        return True


def metrics_enabled() -> bool:
    """Whether this process records metrics (configured and not turned off)."""
    return _state is not None and not _disabled


def reset_metrics() -> None:
    """Forget this process's metrics and everything it recorded (tests use this between cases)."""
    global _state, _disabled
    with _lock:
        _state, _disabled = None, False


def _current() -> _State | None:
    state = _state
    if state is None or state.pid != _pid:
        # Not configured (a library user who did not ask for metrics), or forked since: in a child,
        # start from zero so the parent's counts are not reported twice.
        if state is None or _disabled or not configure_metrics():
            return None
        state = _state
    return state


def _key(spec: MetricSpec, attributes: Mapping[str, Any] | None) -> tuple[str, ...]:
    given = attributes or {}
    return tuple([str(given.get(label, "")) for label in spec.labels])


def count(
    spec: MetricSpec,
    value: float = 1,
    attributes: Mapping[str, Any] | None = None,
    *,
    context: Context | None = None,  # the same signature as observe: counters keep no exemplars
) -> None:
    """Add ``value`` to a counter; never raises."""
    # Not capture_internal_errors: it would add a quarter to the cost of recording a value.
    try:
        state = _current()
        if state is None:
            return
        key = _key(spec, attributes)
        with _lock:
            series = state.series.get(spec.name)
            if series is None:
                series = state.series[spec.name] = {}
            series[key] = series.get(key, 0) + value
    except Exception:
        _log.warning("tracehook: could not record metric %s", spec.name, exc_info=True)


def start_at_zero(spec: MetricSpec, label_sets: Iterable[Mapping[str, Any]]) -> None:
    """Export a counter's (or a histogram's) series for ``label_sets`` now, at 0, before anything is
    recorded; never raises.

    Prometheus's ``increase()`` and ``rate()`` see no increase in the sample that creates a series: a
    series born at N (a worker's first dead letter, say) hides those N events. Call this where the process
    starts, for the label values that are known then; it does nothing where metrics are not configured.
    """
    if spec.kind == "counter":
        for labels in label_sets:
            count(spec, 0, labels)
        return
    with capture_internal_errors(_log, "tracehook: could not start metric %s at zero", spec.name):
        state = _current()
        if state is None:
            return
        size = len(spec.buckets or DURATION_BUCKETS_S) + 1
        with _lock:
            series = state.series.setdefault(spec.name, {})
            for labels in label_sets:
                series.setdefault(_key(spec, labels), _Histogram([0] * size))


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
    # Not capture_internal_errors: it would add a quarter to the cost of recording a value.
    try:
        state = _current()
        if state is None:
            return
        key = _key(spec, attributes)
        bounds = spec.buckets or DURATION_BUCKETS_S
        index = bisect.bisect_left(bounds, value)
        span_context = trace.get_current_span(context).get_span_context()
        exemplar = (
            (span_context.trace_id, span_context.span_id, float(value), time.time())
            if span_context.trace_flags.sampled
            else None
        )
        with _lock:
            series = state.series.get(spec.name)
            if series is None:
                series = state.series[spec.name] = {}
            point = series.get(key)
            if point is None:
                point = series[key] = _Histogram([0] * (len(bounds) + 1))
            point.counts[index] += 1
            point.total += value
            point.number += 1
            if exemplar is not None:
                point.exemplars[index] = exemplar
    except Exception:
        _log.warning("tracehook: could not record metric %s", spec.name, exc_info=True)


def _reinit_after_fork() -> None:
    # A fork while another thread (the worker's scrape thread) held the lock would leave the child's
    # copy locked forever.
    global _lock, _pid  # noqa: PLW0603
    _lock = threading.RLock()
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reinit_after_fork)


def snapshot() -> dict[str, dict[str, Any]]:
    """This process's metrics so far (cumulative), JSON-able: ``{name: {kind, description, series}}``.

    ``series`` maps a key (the labels as sorted JSON) to a point: ``{"labels", "value"}`` for a counter;
    ``{"labels", "bounds", "counts", "sum", "count", "exemplars"}`` for a histogram, its exemplars keyed by
    bucket index as ``[trace_id, span_id, value, unix time]`` (ids in hex). Empty where metrics are not
    set up.
    """
    state = _state
    if state is None or state.pid != _pid:
        return {}
    specs = _SPECS
    result: dict[str, dict[str, Any]] = {}
    with _lock:
        copied = {name: dict(series) for name, series in state.series.items()}
        histograms = {
            name: {key: (list(p.counts), p.total, p.number, dict(p.exemplars)) for key, p in series.items()}
            for name, series in copied.items()
            if name in specs and specs[name].kind == "histogram"
        }
    for name, series in copied.items():
        spec = specs.get(name)
        if spec is None:
            continue
        entry: dict[str, Any] = {"kind": spec.kind, "description": spec.description, "series": {}}
        for key, value in series.items():
            labels = dict(zip(spec.labels, key, strict=True))
            point: dict[str, Any] = {"labels": labels}
            if spec.kind == "counter":
                point["value"] = float(value)
            else:
                counts, total, number, exemplars = histograms[name][key]
                point.update(
                    bounds=[float(bound) for bound in (spec.buckets or DURATION_BUCKETS_S)],
                    counts=counts,
                    sum=float(total),
                    count=number,
                    exemplars={
                        str(index): [format_trace_id(trace_id), format_span_id(span_id), value_, when]
                        for index, (trace_id, span_id, value_, when) in sorted(exemplars.items())
                    },
                )
            entry["series"][json.dumps(labels, sort_keys=True)] = point
        result[name] = entry
    return result

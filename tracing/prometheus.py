"""The Prometheus exposition of tracehook's metrics: this process's, plus a prefork worker's children.

``/metrics`` is rendered by prometheus_client from a collector that merges this process's snapshot with
the snapshot directory's (:mod:`tracing._snapshots`). Histogram buckets carry exemplars (``trace_id``,
``span_id``) in the OpenMetrics format, which Prometheus asks for when exemplar storage is on; the text
format 0.0.4 has no exemplars.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from tracing._guard import capture_internal_errors
from tracing._snapshots import Snapshot, SnapshotDirectory, merge_snapshots, process_snapshot
from tracing.metrics import metric_specs

__all__ = ["SnapshotCollector", "metrics_registry", "render"]

_log = logging.getLogger("tracing.metrics")


def _families(snapshot: Snapshot) -> Iterator[Metric]:
    specs = {spec.name: spec for spec in metric_specs()}
    for name in sorted(snapshot):
        entry = snapshot[name]
        series = list(entry["series"].values())
        spec = specs.get(name)
        labelnames = list(spec.labels) if spec is not None else sorted(series[0]["labels"]) if series else []
        family: CounterMetricFamily | HistogramMetricFamily
        if entry["kind"] == "counter":
            family = CounterMetricFamily(name, entry["description"], labels=labelnames)
            for point in series:
                family.add_metric([point["labels"].get(label, "") for label in labelnames], point["value"])
        else:
            family = HistogramMetricFamily(name, entry["description"], labels=labelnames)
            for point in series:
                family.add_metric(
                    [point["labels"].get(label, "") for label in labelnames],
                    _buckets(point),
                    point["sum"],
                )
        yield family


def _le(bound: float) -> str:
    # As prometheus_client.utils.floatToGoString writes our bounds (that one is untyped for mypy).
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _buckets(point: dict[str, Any]) -> list[Any]:
    buckets: list[Any] = []
    cumulative = 0
    for index, bound in enumerate([*point["bounds"], math.inf]):
        cumulative += point["counts"][index]
        exemplar = point["exemplars"].get(str(index))
        if exemplar is None:
            buckets.append((_le(bound), cumulative))
        else:
            trace_id, span_id, value, timestamp = exemplar
            buckets.append(
                (
                    _le(bound),
                    cumulative,
                    Exemplar({"trace_id": trace_id, "span_id": span_id}, value, timestamp),
                )
            )
    return buckets


class SnapshotCollector(Collector):
    """A prometheus_client collector of this process's metrics plus the snapshots in ``directory``."""

    def __init__(self, directory: Path | None = None, *, include_process: bool = True) -> None:
        self.directory = SnapshotDirectory(directory) if directory is not None else None
        self.include_process = include_process

    def collect(self) -> Iterator[Metric]:
        """Merge the sources and yield one family per metric; a failure yields what it can and is logged."""
        with capture_internal_errors(_log, "tracehook: could not collect metrics"):
            sources: list[Snapshot] = [process_snapshot()] if self.include_process else []
            if self.directory is not None and self.directory.path.is_dir():
                self.directory.compact()
                sources.extend(self.directory.snapshots())
            yield from _families(merge_snapshots(sources))


def metrics_registry(directory: Path | None = None) -> CollectorRegistry:
    """A registry holding only tracehook's metrics (this process's, plus ``directory``'s snapshots)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(directory))
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition: OpenMetrics (with exemplars) when ``accept`` asks for it, else text 0.0.4."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type

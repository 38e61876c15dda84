"""The Prometheus side of tracehook's metrics: snapshots, merging across processes, exposition.

A prefork worker's tasks run in pool children, each with its own meter provider, while Prometheus scrapes
one port per worker. So each child writes a cumulative snapshot of its metrics, as JSON, to
``<directory>/<pid>.json`` about once a second and when it exits, and the worker's main process serves
``/metrics`` from the sum of every file plus its own provider. A child that exited keeps its file, so
counters never go backwards while the worker lives; the directory is the worker's own, made at start and
removed at exit. Histogram exemplars (trace id and span id of a recorded value) survive the merge, so a
slow bucket leads to a trace (exposed in the OpenMetrics format, which Prometheus asks for when exemplar
storage is on).
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from opentelemetry.sdk.metrics.export import Histogram
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from tracing.metrics import collect_metrics, metric_specs

__all__ = [
    "SnapshotCollector",
    "SnapshotWriter",
    "merge_snapshots",
    "metrics_registry",
    "process_snapshot",
    "read_snapshots",
    "render",
]

Snapshot = dict[str, dict[str, Any]]
SNAPSHOT_SUFFIX: Final = ".json"

_log = logging.getLogger("tracing.metrics")
_lock = threading.Lock()


def _reinit_after_fork() -> None:
    # As in tracing.metrics: a lock held by the parent's scrape thread at fork time would never be released.
    global _lock  # noqa: PLW0603
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reinit_after_fork)


def _series_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


def _point(metric_name: str, point: Any, memory: dict[tuple[str, str, int], list[Any]]) -> dict[str, Any]:
    labels = {str(key): str(value) for key, value in (point.attributes or {}).items()}
    if not hasattr(point, "bucket_counts"):
        return {"labels": labels, "value": float(point.value)}
    bounds = [float(bound) for bound in point.explicit_bounds]
    key = _series_key(labels)
    for exemplar in point.exemplars or ():
        if not exemplar.trace_id:
            continue
        index = bisect.bisect_left(bounds, exemplar.value)
        memory[(metric_name, key, index)] = [
            format(exemplar.trace_id, "032x"),
            format(exemplar.span_id or 0, "016x"),
            float(exemplar.value),
            exemplar.time_unix_nano / 1e9,
        ]
    exemplars = {
        str(i): memory[(metric_name, key, i)]
        for i in range(len(bounds) + 1)
        if (metric_name, key, i) in memory
    }
    return {
        "labels": labels,
        "bounds": bounds,
        "counts": [int(count) for count in point.bucket_counts],
        "sum": float(point.sum),
        "count": int(point.count),
        "exemplars": exemplars,
    }


def process_snapshot() -> Snapshot:
    """This process's metrics, JSON-able: ``{name: {kind, description, series: {key: point}}}``."""
    result: Snapshot = {}
    with _lock:
        data, memory = collect_metrics()
        if data is None:
            return result
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = "histogram" if isinstance(metric.data, Histogram) else "counter"
                    entry = result.setdefault(
                        metric.name, {"kind": kind, "description": metric.description or "", "series": {}}
                    )
                    for point in metric.data.data_points:
                        parsed = _point(metric.name, point, memory)
                        entry["series"][_series_key(parsed["labels"])] = parsed
    return result


def _add_point(into: dict[str, Any], point: dict[str, Any]) -> None:
    if "value" in point:
        into["value"] += point["value"]
        return
    if into["bounds"] != point["bounds"]:
        _log.warning("tracehook: histogram buckets differ between processes; one process's series skipped")
        return
    into["counts"] = [a + b for a, b in zip(into["counts"], point["counts"], strict=True)]
    into["sum"] += point["sum"]
    into["count"] += point["count"]
    for index, exemplar in point["exemplars"].items():
        mine = into["exemplars"].get(index)
        if mine is None or exemplar[3] > mine[3]:
            into["exemplars"][index] = exemplar


def merge_snapshots(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Several processes' snapshots summed: counters and buckets added, the latest exemplars kept."""
    merged: Snapshot = {}
    for snapshot in snapshots:
        for name, entry in snapshot.items():
            target = merged.setdefault(
                name, {"kind": entry["kind"], "description": entry["description"], "series": {}}
            )
            for key, point in entry["series"].items():
                existing = target["series"].get(key)
                if existing is None:
                    target["series"][key] = copy.deepcopy(point)
                else:
                    _add_point(existing, point)
    return merged


def read_snapshots(directory: Path) -> Iterator[Snapshot]:
    """The snapshots the pool children wrote to ``directory``; unreadable files are skipped."""
    for path in sorted(directory.glob("*" + SNAPSHOT_SUFFIX)):
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _log.debug("tracehook: skipped metrics snapshot %s", path, exc_info=True)


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
        self.directory = directory
        self.include_process = include_process

    def collect(self) -> Iterator[Metric]:
        """Merge the sources and yield one family per metric; a failure yields what it can and is logged."""
        try:
            sources: list[Snapshot] = [process_snapshot()] if self.include_process else []
            if self.directory is not None and self.directory.is_dir():
                sources.extend(read_snapshots(self.directory))
            yield from _families(merge_snapshots(sources))
        except Exception:
            _log.warning("tracehook: could not collect metrics", exc_info=True)


def metrics_registry(directory: Path | None = None) -> CollectorRegistry:
    """A registry holding only tracehook's metrics (this process's, plus ``directory``'s snapshots)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(directory))
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition: OpenMetrics (with exemplars) when ``accept`` asks for it, else text 0.0.4."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class SnapshotWriter:
    """Writes this process's snapshot to ``<directory>/<pid>.json`` every ``interval_s``, and at stop."""

    def __init__(self, directory: Path, interval_s: float = 1.0) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._last = ""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> SnapshotWriter:
        """Start the background thread (a daemon: it never holds the process)."""
        self._thread = threading.Thread(target=self._run, name="tracehook-metrics", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()

    def write(self) -> None:
        """Write the snapshot now if it changed; failures are logged, never raised."""
        try:
            with self._lock:
                text = json.dumps(process_snapshot(), separators=(",", ":"))
                if text == self._last:
                    return
                pid = os.getpid()
                temporary = self.directory / f".{pid}.tmp"
                temporary.write_text(text, encoding="utf-8")
                # Atomic: the main process never reads half a file.
                temporary.replace(self.directory / f"{pid}{SNAPSHOT_SUFFIX}")
                self._last = text
        except Exception:
            _log.warning("tracehook: could not write the metrics snapshot", exc_info=True)

    def stop(self) -> None:
        """Stop the thread and write a last snapshot (what the child recorded just before it exits)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self.write()

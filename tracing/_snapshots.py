"""Snapshots of a process's metrics, summed across processes: how prefork children reach one scrape.

A prefork worker's tasks run in pool children, each aggregating its own metrics, while Prometheus scrapes
one port per worker. So each child writes a cumulative snapshot of its metrics, as JSON, to
``<directory>/<pid>-<nonce>.json`` about once a second and when it exits (:class:`SnapshotWriter`), and the
worker's main process reads the sum of every file (:class:`SnapshotDirectory`). A child that exited keeps
counting: its last snapshot is folded into ``retired.state`` (so the directory does not grow with every
child a long-lived worker replaces), and counters never go backwards while the worker lives. Histogram
exemplars (trace id and span id of a recorded value) survive the merge: the latest one per bucket wins.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from tracing import metrics
from tracing._guard import capture_internal_errors

__all__ = ["Snapshot", "SnapshotDirectory", "SnapshotWriter", "merge_snapshots", "process_snapshot"]

Snapshot = dict[str, dict[str, Any]]
SNAPSHOT_SUFFIX: Final = ".json"
RETIRED: Final = "retired.state"

_log = logging.getLogger("tracing.metrics")
_lock = threading.Lock()


def _reinit_after_fork() -> None:
    # As in tracing.metrics: a lock the parent's scrape thread held at fork time would stay held.
    global _lock  # noqa: PLW0603
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reinit_after_fork)


def process_snapshot() -> Snapshot:
    """This process's metrics, JSON-able: ``{name: {kind, description, series: {key: point}}}``."""
    return metrics.snapshot()


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True


class SnapshotDirectory:
    """The snapshots pool children wrote to one directory, read as one sum; exited children folded in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _log.debug("tracehook: skipped metrics snapshot %s", path, exc_info=True)
            return None

    def _retired(self) -> tuple[set[str], Snapshot]:
        state = self._read(self.path / RETIRED) if (self.path / RETIRED).exists() else None
        if not isinstance(state, dict):
            return set(), {}
        return set(state.get("folded", ())), state.get("snapshot", {})

    def compact(self) -> None:
        """Fold the snapshots of children that exited into ``retired.state`` and remove their files.

        Crash-safe: ``retired.state`` names the files it holds and is replaced atomically before they are
        removed, so a file is never counted twice nor lost.
        """
        with self._lock:
            folded, retired = self._retired()
            finished = [path for path in self._live_files() if not _alive(_pid_of(path))]
            if not finished:
                return
            names = {path.name for path in finished}
            fresh = [
                snapshot for path in finished if path.name not in folded and (snapshot := self._read(path))
            ]
            state = {"folded": sorted(names), "snapshot": merge_snapshots([retired, *fresh])}
            temporary = self.path / f".{RETIRED}.tmp"
            temporary.write_text(json.dumps(state, separators=(",", ":")), encoding="utf-8")
            temporary.replace(self.path / RETIRED)
            for path in finished:
                path.unlink(missing_ok=True)

    def _live_files(self) -> list[Path]:
        return sorted(self.path.glob("*" + SNAPSHOT_SUFFIX))

    def snapshots(self) -> Iterator[Snapshot]:
        """Every child's snapshot: the retired sum, then each file of a child not yet folded in."""
        folded, retired = self._retired()
        yield retired
        for path in self._live_files():
            if path.name not in folded and isinstance(snapshot := self._read(path), dict):
                yield snapshot


def _pid_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[0])
    except ValueError:
        return 0


class SnapshotWriter:
    """Writes this process's snapshot to ``<directory>/<pid>-<nonce>.json`` every ``interval_s``, and at stop.

    The nonce keeps a later process that gets the same pid from overwriting an exited child's counts.
    """

    def __init__(self, directory: Path, interval_s: float = 1.0) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._last = ""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

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
        with capture_internal_errors(_log, "tracehook: could not write the metrics snapshot"), self._lock:
            text = json.dumps(process_snapshot(), separators=(",", ":"))
            if text == self._last:
                return
            temporary = self.directory / f".{self.name}.tmp"
            temporary.write_text(text, encoding="utf-8")
            # Atomic: the main process never reads half a file.
            temporary.replace(self.directory / f"{self.name}{SNAPSHOT_SUFFIX}")
            self._last = text

    def stop(self) -> None:
        """Stop the thread and write a last snapshot (what the child recorded just before it exits)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self.write()

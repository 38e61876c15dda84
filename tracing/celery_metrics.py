"""Celery task metrics, and the worker's ``/metrics`` endpoint; ``instrument_celery`` wires both.

Per task attempt: ``tracehook_tasks_total{task, status}``, ``tracehook_task_duration_seconds{task}`` and
``tracehook_queue_wait_seconds{queue}``, recorded in the process that ran the task, with the run span as
the histograms' exemplar. The worker's main process makes a directory of its own at ``worker_init``
(before the pool forks) and serves ``/metrics`` on ``WORKER_METRICS_PORT`` from it; each pool child
writes its snapshot there (:mod:`tracing._snapshots`), so every child's tasks reach the scrape.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from opentelemetry import trace
from opentelemetry.trace import Span

from tracing._guard import capture_internal_errors
from tracing._snapshots import SnapshotWriter
from tracing.metrics import (
    QUEUE_WAIT,
    TASK_DURATION,
    TASKS,
    configure_metrics,
    count,
    observe,
    start_at_zero,
)
from tracing.prometheus import metrics_registry
from tracing.settings import TracingSettings, load_settings
from tracing.setup import current_settings

__all__ = ["TASK_STATUSES", "CeleryMetrics", "set_task_status"]

_log = logging.getLogger("tracing.metrics")
_STATUSES: Final = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "RETRY": "retried",
    "IGNORED": "ignored",
    "REJECTED": "rejected",
}
# Every value the ``status`` label takes: Celery's states as above, ``interrupted`` (hard time limit,
# terminate: postrun without a state), ``dead_lettered`` (set_task_status), ``other`` for anything else.
TASK_STATUSES: Final = (*_STATUSES.values(), "interrupted", "dead_lettered", "other")
_OVERRIDE_LIMIT: Final = 1024
_overrides: OrderedDict[str, str] = OrderedDict()


def set_task_status(task_id: str, status: str) -> None:
    """Report this attempt of a running task under ``status`` instead of the one its Celery state maps to.

    For outcomes Celery does not know: a task that dead-letters its work fails as far as Celery is
    concerned, yet is counted as ``dead_lettered`` (not also ``failed``), so error-rate sums stay honest.
    Use one of :data:`TASK_STATUSES`: the alert rules are checked against them.
    """
    _overrides[task_id] = status
    while len(_overrides) > _OVERRIDE_LIMIT:
        _overrides.popitem(last=False)


@dataclass
class CeleryMetrics:
    """Task metrics handlers and the worker endpoint of one instrumented Celery app."""

    ours: Callable[[Any], bool]
    settings: TracingSettings | None = None
    # The main process's snapshot directory, made at worker_init; the pool children inherit it.
    directory: Path | None = field(default=None, init=False)
    _server: WSGIServer | None = field(default=None, init=False, repr=False)
    _writer: SnapshotWriter | None = field(default=None, init=False, repr=False)

    def _settings(self) -> TracingSettings:
        return self.settings or current_settings() or load_settings(service_name="tracehook-worker")

    # -- tasks (called by CeleryInstrumentation's task_prerun and task_postrun handlers) ----------------

    def waited(self, queue: str, wait_s: float, span: Span) -> None:
        """An attempt started after ``wait_s`` in ``queue`` (publish, or ETA, to start); never raises."""
        with capture_internal_errors(_log, "tracehook: could not record the queue wait of a task"):
            observe(QUEUE_WAIT, max(0.0, wait_s), {"queue": queue}, context=trace.set_span_in_context(span))

    def ran(self, task_id: str, name: str, state: str | None, duration_s: float, span: Span) -> None:
        """An attempt ended with Celery's ``state`` (None: interrupted) after ``duration_s``; never raises."""
        with capture_internal_errors(_log, "tracehook: could not record the metrics of task %s", task_id):
            status = _overrides.pop(task_id, None) or (
                "interrupted" if state is None else _STATUSES.get(str(state), "other")
            )
            observe(TASK_DURATION, duration_s, {"task": name}, context=trace.set_span_in_context(span))
            count(TASKS, 1, {"task": name, "status": status})

    # -- processes ----------------------------------------------------------------------------------

    def on_worker_init(self, sender: Any = None, **_: Any) -> None:
        """worker_init (main process, before the pool forks): every task's counters at 0, the snapshot
        directory and the endpoint."""
        with capture_internal_errors(_log, "tracehook: could not set up the worker's metrics"):
            settings = self._settings()
            if not configure_metrics(settings):
                return
            self._start_at_zero(getattr(sender, "app", None))
            if not settings.worker_metrics_port:
                return  # no endpoint, so no snapshots for it to read
            self.directory = Path(tempfile.mkdtemp(prefix="tracehook-metrics-"))
            self._serve(settings.worker_metrics_port)

    def _start_at_zero(self, app: Any) -> None:
        # In the main process, whose series every scrape includes: a restarted worker's first dead letter
        # is then an increase from 0, which the alert rules see. Celery's own tasks (celery.*) are left out:
        # eight series each, for tasks no alert is about.
        tasks = getattr(app, "tasks", None) or {}
        names = sorted(
            name for name, task in tasks.items() if self.ours(task) and not name.startswith("celery.")
        )
        start_at_zero(TASKS, ({"task": name, "status": status} for name in names for status in TASK_STATUSES))

    def _serve(self, port: int) -> None:
        from prometheus_client import start_http_server  # noqa: PLC0415

        try:
            # All interfaces: Prometheus scrapes the worker from another container.
            self._server, _ = start_http_server(
                port,
                addr="0.0.0.0",  # noqa: S104
                registry=metrics_registry(self.directory),
            )
        except OSError as exc:
            _log.warning(
                "tracehook: metrics not served: port %s is taken (%s); "
                "set WORKER_METRICS_PORT to a free port, or 0 for none",
                port,
                exc,
            )
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None  # the children then write no snapshots nobody would read
            return
        _log.info(
            "tracehook: metrics on http://0.0.0.0:%s/metrics (pool children's snapshots in %s)",
            port,
            self.directory,
        )

    def on_process_init(self, **_: Any) -> None:
        """worker_process_init (pool child): metrics from zero, their snapshot written to the directory."""
        with capture_internal_errors(_log, "tracehook: could not set up metrics in the pool child"):
            if self.directory is not None and configure_metrics(self._settings()):
                self._writer = SnapshotWriter(self.directory).start()

    def on_process_shutdown(self, **_: Any) -> None:
        """worker_process_shutdown (pool child): write the last snapshot before the child exits."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    def on_worker_shutdown(self, **_: Any) -> None:
        """worker_shutdown (main process): stop serving and remove the directory."""
        with capture_internal_errors(_log, "tracehook: could not stop the worker's metrics"):
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

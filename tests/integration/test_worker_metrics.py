"""The worker's /metrics, scraped from a real prefork worker: every pool child's tasks reach the scrape.

Workers run ``tests.integration.celery_app`` (a user's app with ``instrument_celery``) as subprocesses with
``--pool=prefork`` on the real Redis, and serve their metrics on a port of the test's own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Worker, start_worker, wait_ready
from tests.metrics_scrape import Scrape, scrape, wait_for_scrape, wait_for_values
from tests.otlp_receiver import OtlpReceiver
from tracing._snapshots import RETIRED
from tracing.celery_metrics import TASK_STATUSES
from workflows.cli._processes import free_port

pytestmark = pytest.mark.integration
TIMEOUT = 60
APP = "tests.integration.celery_app"


@pytest.fixture(scope="module")
def celery_producer() -> Any:
    """The test app, used only to publish to the workers' queues."""
    from tests.integration.celery_app import app  # noqa: PLC0415

    return app


def metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


def succeeded(scraped: Scrape, task: str) -> float:
    return scraped.value("tracehook_tasks_total", task=f"{APP}.{task}", status="succeeded")


@pytest.fixture
def worker_with_metrics(
    receiver: OtlpReceiver, tmp_path: Path, celery_producer: Any
) -> Iterator[tuple[Worker, int]]:
    """A ``--concurrency 2`` prefork worker serving /metrics on a free port, ready to run tasks."""
    port = free_port()
    worker = start_worker(receiver, tmp_path, concurrency=2, WORKER_METRICS_PORT=str(port))
    try:
        wait_ready(worker, celery_producer)
        yield worker, port
    finally:
        worker.stop()


class TestPrefork:
    """A --concurrency 2 worker's scrape holds the tasks both pool children ran, and their outcomes."""

    def test_both_children_reach_the_scrape(
        self, worker_with_metrics: tuple[Worker, int], celery_producer: Any
    ) -> None:
        """Two rendezvous tasks can only finish in two different children; the scrape counts both."""
        worker, port = worker_with_metrics
        key = f"rendezvous-{uuid.uuid4().hex}"
        results = [
            celery_producer.send_task(f"{APP}.rendezvous", args=(key, 2), queue=worker.queue)
            for _ in range(2)
        ]
        pids = {result.get(timeout=TIMEOUT) for result in results}
        assert 2 == len(pids), "the two tasks ran in the same child"
        # Each child ran one rendezvous: with only one child's metrics in the scrape this would stay at 1.
        wait_for_values(
            metrics_url(port),
            (2, "tracehook_tasks_total", {"task": f"{APP}.rendezvous", "status": "succeeded"}),
            (2, "tracehook_task_duration_seconds_count", {"task": f"{APP}.rendezvous"}),
            (1, "tracehook_tasks_total", {"task": f"{APP}.noop", "status": "succeeded"}),
            (3, "tracehook_queue_wait_seconds_count", {"queue": worker.queue}),
            timeout=TIMEOUT,
            description="2 rendezvous tasks, one per child, and the readiness task",
        )

    def test_outcomes(self, worker_with_metrics: tuple[Worker, int], celery_producer: Any) -> None:
        """A failure, a task retried twice then succeeding, an ignored task: each attempt by its status."""
        worker, port = worker_with_metrics
        failing = celery_producer.send_task(f"{APP}.fail", args=("boom",), queue=worker.queue)
        flaky = celery_producer.send_task(f"{APP}.flaky", args=(3,), queue=worker.queue)
        celery_producer.send_task(f"{APP}.ignored", queue=worker.queue)
        with pytest.raises(ValueError, match="boom"):
            failing.get(timeout=TIMEOUT)
        assert 3 == flaky.get(timeout=TIMEOUT)
        tasks = "tracehook_tasks_total"
        scraped = wait_for_values(
            metrics_url(port),
            (1, tasks, {"task": f"{APP}.fail", "status": "failed"}),
            (2, tasks, {"task": f"{APP}.flaky", "status": "retried"}),
            (1, tasks, {"task": f"{APP}.flaky", "status": "succeeded"}),
            (1, tasks, {"task": f"{APP}.ignored", "status": "ignored"}),
            timeout=TIMEOUT,
            description="fail, flaky and ignored counted",
        )
        assert {"succeeded", "failed", "retried", "ignored"} >= scraped.label_values(
            tasks, "status", counted=True
        )

    def test_counters_start_at_zero(self, receiver: OtlpReceiver, tmp_path: Path) -> None:
        """Before any task ran, each of the app's tasks has every status at 0 (Celery's own tasks none):
        a restarted worker's first dead letter is an increase from 0, which increase() sees."""
        port = free_port()
        worker = start_worker(receiver, tmp_path, concurrency=1, WORKER_METRICS_PORT=str(port))
        try:
            scraped = wait_for_scrape(
                metrics_url(port),
                lambda s: bool(s.label_values("tracehook_tasks_total", "task")),
                timeout=TIMEOUT,
                description="the task counters",
            )
        finally:
            worker.stop()
        from tests.integration.celery_app import app  # noqa: PLC0415

        names = {name for name in app.tasks if name.startswith(f"{APP}.")}
        assert {(name, status) for name in names for status in TASK_STATUSES} == {
            (s.labels["task"], s.labels["status"])
            for s in scraped.samples
            if s.name == "tracehook_tasks_total"
        }
        assert 0 == scraped.value("tracehook_tasks_total")

    def test_exemplar_leads_to_the_task_trace(
        self, worker_with_metrics: tuple[Worker, int], celery_producer: Any, producer: OtlpReceiver
    ) -> None:
        """The task duration's exemplar (OpenMetrics scrape) is the trace the task ran in."""
        worker, port = worker_with_metrics
        result = celery_producer.send_task(f"{APP}.sleep", args=(0.3,), queue=worker.queue)
        assert 0.3 == result.get(timeout=TIMEOUT)
        spans = producer.wait_for(lambda got: any(s.name == f"run {APP}.sleep" for s in got), timeout=TIMEOUT)
        (run,) = [s for s in spans if s.name == f"run {APP}.sleep"]
        scraped = wait_for_scrape(
            metrics_url(port),
            lambda s: bool(
                s.exemplar_trace_ids("tracehook_task_duration_seconds_bucket", task=f"{APP}.sleep")
            ),
            timeout=TIMEOUT,
            openmetrics=True,
            description="an exemplar on the sleep task's duration",
        )
        assert {run.trace_id} == scraped.exemplar_trace_ids(
            "tracehook_task_duration_seconds_bucket", task=f"{APP}.sleep"
        )


class TestChildrenThatExit:
    """A pool child replaced after each task (--max-tasks-per-child 1) leaves its counts in the scrape."""

    def test_counts_survive_the_child(
        self, receiver: OtlpReceiver, tmp_path: Path, celery_producer: Any
    ) -> None:
        """Five tasks, five children: the scrape says 5, not what the living ones ran; the files of the
        exited ones are folded into one, and the directory goes with the worker."""
        port = free_port()
        worker = start_worker(
            receiver,
            tmp_path,
            concurrency=2,
            extra_args=("--max-tasks-per-child", "1"),
            WORKER_METRICS_PORT=str(port),
        )
        try:
            wait_ready(worker, celery_producer)
            results = [celery_producer.send_task(f"{APP}.pid", queue=worker.queue) for _ in range(5)]
            pids = {result.get(timeout=TIMEOUT) for result in results}
            assert len(pids) >= 3, "children were replaced"
            scraped = wait_for_scrape(
                metrics_url(port),
                lambda s: succeeded(s, "pid") >= 5,
                timeout=TIMEOUT,
                description="5 pid tasks",
            )
            assert 5 == succeeded(scraped, "pid")
            found = re.search(r"snapshots in (\S+)\)", worker.log)
            assert found is not None, "the worker logs its snapshot directory"
            directory = Path(found.group(1))
            names = [path.name for path in directory.iterdir()]
            assert RETIRED in names, "exited children were folded into the retired sum"
            assert len([name for name in names if name.endswith(".json")]) <= 3, names
            assert 5 == succeeded(scrape(metrics_url(port)), "pid"), "folding counts nothing twice"
        finally:
            worker.stop()
        assert not directory.exists(), "the worker removes its directory when it stops"


class TestEndpointSettings:
    """The endpoint follows the settings, and a taken port never stops the worker."""

    def test_disabled(self, receiver: OtlpReceiver, tmp_path: Path, celery_producer: Any) -> None:
        """METRICS_ENABLED=false: no endpoint, tasks run."""
        port = free_port()
        worker = start_worker(
            receiver, tmp_path, concurrency=1, WORKER_METRICS_PORT=str(port), METRICS_ENABLED="false"
        )
        try:
            wait_ready(worker, celery_producer)
            with pytest.raises(httpx.ConnectError):
                scrape(metrics_url(port))
        finally:
            worker.stop()

    def test_port_taken(
        self,
        worker_with_metrics: tuple[Worker, int],
        receiver: OtlpReceiver,
        tmp_path: Path,
        celery_producer: Any,
    ) -> None:
        """A second worker on the same port logs why it serves no metrics, and runs its tasks."""
        _, port = worker_with_metrics
        second = start_worker(receiver, tmp_path, concurrency=1, WORKER_METRICS_PORT=str(port))
        try:
            wait_ready(second, celery_producer)
            assert "WORKER_METRICS_PORT" in second.log
            # The first worker's child writes its snapshot within a second: wait for its one task.
            scraped = wait_for_scrape(metrics_url(port), lambda s: succeeded(s, "noop") >= 1, timeout=TIMEOUT)
            assert 1 == succeeded(scraped, "noop"), "the port is the first worker's: its readiness task only"
        finally:
            second.stop()

"""Metrics end to end: what an intake and a --concurrency 2 prefork worker report matches what was sent.

A second intake and worker (their own queue, the worker's /metrics on a port of its own) share the first
stack's sandbox and OTLP receiver, so every count below is this module's alone and can be exact.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, free_port, fresh, start, wait_http, worker_command
from tests.metrics_scrape import Expected, Scrape, scrape, wait_for_values
from tracing import instrument_celery
from tracing.celery_metrics import TASK_STATUSES
from workflows.dlq import DeadLetters
from workflows.events import EVENT_TYPES
from workflows.metrics import COMPLETION_OUTCOMES, WEBHOOK_OUTCOMES
from workflows.objective import COMPLETION_MS, OBJECTIVE_MET, OUTCOME
from workflows.queue import TASK_NAME, producer_app
from workflows.signing import signed_headers

pytestmark = pytest.mark.e2e
TIMEOUT = 60
TASK = "process_webhook_event"


@dataclass
class Metered:
    """The metered intake and worker, and where each serves its metrics."""

    stack: Stack
    intake_metrics: str
    worker_metrics: str
    queue: str

    def post(
        self, event: dict[str, Any], *, msg_id: str | None = None, secret: str | None = None
    ) -> httpx.Response:
        body = json.dumps(event).encode()
        headers = signed_headers(secret or self.stack.secret, body, msg_id=msg_id)
        return httpx.post(self.stack.intake_url, content=body, headers=headers, timeout=30)

    def worker_until(self, description: str, *expected: Expected) -> Scrape:
        """Scrape the worker until each expected number is reached, then check them exactly."""
        return wait_for_values(self.worker_metrics, *expected, timeout=TIMEOUT, description=description)


@pytest.fixture(scope="module")
def metered(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    """An intake and a two-child prefork worker of this module's own, on the first stack's sandbox."""
    tmp = tmp_path_factory.mktemp("metered")
    intake_port, metrics_port = free_port(), free_port()
    queue = f"e2e-metrics-{uuid.uuid4().hex[:8]}"
    env = {**stack.env, "CELERY_DEFAULT_QUEUE": queue, "WORKER_METRICS_PORT": str(metrics_port)}
    other = Stack(
        stack.receiver,
        stack.secret,
        f"http://127.0.0.1:{intake_port}/webhooks/rentvine",
        stack.sandbox_url,
        {},
        stack.redis,
        env,
    )
    other.processes["intake"] = start(
        "intake",
        [sys.executable, "-m", "workflows.cli", "intake", "--port", str(intake_port)],
        env,
        other.logs,
        tmp,
    )
    other.processes["worker"] = start(
        "worker",
        worker_command(queue, concurrency=2),
        {**env, "SERVICE_NAME": "tracehook-worker"},
        other.logs,
        tmp,
    )
    try:
        wait_http(f"http://127.0.0.1:{intake_port}/healthz", other.processes["intake"], other.logs["intake"])
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", other.processes["worker"], other.logs["worker"])
        yield Metered(
            other,
            f"http://127.0.0.1:{intake_port}/metrics",
            f"http://127.0.0.1:{metrics_port}/metrics",
            queue,
        )
    finally:
        for process in other.processes.values():
            process.terminate()
        for process in other.processes.values():
            process.wait(30)


WORKFLOW = "tracehook_workflow_duration_seconds"


def workflows(number: float, workflow: str, status: str = "completed") -> Expected:
    return number, f"{WORKFLOW}_count", {"workflow": workflow, "status": status}


def tasks(number: float, status: str) -> Expected:
    return number, "tracehook_tasks_total", {"task": TASK, "status": status}


class TestCountersStartAtZero:
    """Before any webhook or task, the counters the alerts take increase() of are exported at 0, so the
    first dead letter or 503 after a start is an increase Prometheus sees (a series born at 1 is not)."""

    def test_before_anything_happened(self, metered: Metered) -> None:
        """Every status of the worker's task, every priority of work orders, every (event type, outcome)
        of webhook completions, and every (event type, outcome) at the intake: present, and 0. (First in
        this module: nothing was sent yet.)"""
        worker, intake = scrape(metered.worker_metrics), scrape(metered.intake_metrics)
        expected_tasks = {(TASK, status) for status in TASK_STATUSES}
        assert expected_tasks == {
            (s.labels["task"], s.labels["status"])
            for s in worker.samples
            if s.name == "tracehook_tasks_total"
        }
        assert {"low", "normal", "high", "emergency"} == worker.label_values(
            "tracehook_work_orders_total", "priority"
        )
        received = "tracehook_webhooks_received_total"
        assert {(kind, outcome) for kind in (*EVENT_TYPES, "unknown") for outcome in WEBHOOK_OUTCOMES} == {
            (s.labels["event_type"], s.labels["outcome"]) for s in intake.samples if s.name == received
        }
        assert {(kind, outcome) for kind in (*EVENT_TYPES, "unknown") for outcome in COMPLETION_OUTCOMES} == {
            (s.labels["event_type"], s.labels["outcome"])
            for s in worker.samples
            if s.name == "tracehook_webhook_completion_seconds_count"
        }
        assert 0 == worker.value("tracehook_tasks_total") + worker.value("tracehook_work_orders_total")
        assert 0 == worker.value("tracehook_webhook_completion_seconds_bucket")
        assert 0 == intake.value(received)


class TestCountsMatchWhatWasSent:
    """3 queued, 1 duplicate, 2 rejected at the intake; the worker ran the 3 and says so."""

    def test_intake_and_worker(self, metered: Metered) -> None:
        """Exact counts by event type and outcome, durations by status, and exemplars naming sent traces."""
        events = [fresh("lease_expiring") for _ in range(3)]
        answers = [metered.post(event, msg_id=f"msg_{event['id']}") for event in events]
        assert [202, 202, 202] == [answer.status_code for answer in answers]
        trace_ids = {answer.json()["trace_id"] for answer in answers}
        again = metered.post(events[0], msg_id=f"msg_{events[0]['id']}")
        assert "duplicate" == again.json()["status"]
        impostor = "whsec_" + base64.b64encode(b"not the secret, 32 bytes long!!!").decode()
        rejected = [metered.post(fresh("lease_expiring"), secret=impostor) for _ in range(2)]
        assert [401, 401] == [answer.status_code for answer in rejected]

        intake = scrape(metered.intake_metrics)
        received = "tracehook_webhooks_received_total"
        assert 3 == intake.value(received, event_type="lease.expiring", outcome="queued")
        assert 1 == intake.value(received, event_type="lease.expiring", outcome="duplicate")
        assert 2 == intake.value(received, event_type="unknown", outcome="rejected_signature")
        assert 6 == intake.value(received)
        duration = "tracehook_intake_duration_seconds_count"
        assert (3, 1, 2) == tuple(intake.value(duration, status=code) for code in ("202", "200", "401"))
        exemplars = scrape(metered.intake_metrics, openmetrics=True).exemplar_trace_ids(
            "tracehook_intake_duration_seconds_bucket", status="202"
        )
        assert exemplars, "the accepted webhooks' durations carry their traces"
        assert exemplars <= trace_ids

        steps = "tracehook_workflow_step_duration_seconds_count"
        worker = metered.worker_until(
            "3 lease.expiring workflows",
            workflows(3, "lease.expiring"),
            tasks(3, "succeeded"),
            (3, "tracehook_task_duration_seconds_count", {"task": TASK}),
            (3, "tracehook_queue_wait_seconds_count", {"queue": metered.queue}),
            *[
                (3, steps, {"workflow": "lease.expiring", "step": step})
                for step in ("fetch_lease", "decide_renewal_offer", "notify")
            ],
        )
        assert 3 == worker.value("tracehook_tasks_total"), "no attempt under another status"
        slow = scrape(metered.worker_metrics, openmetrics=True).exemplar_trace_ids(
            "tracehook_workflow_duration_seconds_bucket", workflow="lease.expiring"
        )
        assert slow, "workflow durations carry exemplars"
        assert slow <= trace_ids, "each exemplar is the trace of one of the webhooks sent"


class TestBusinessMetrics:
    """Payments by currency and outcome, work orders by priority, batch items by outcome."""

    def test_payments_work_orders_batches(self, metered: Metered) -> None:
        """Two EUR payments (one failed), a normal and an emergency work order, the 25-item bulk update."""
        received, failed = fresh("payment_received"), fresh("payment_failed")
        for event, amount in ((received, "1850.25"), (failed, "99.50")):
            event["data"]["currency"] = "EUR"
            event["data"]["amount"] = amount
        sent = [received, failed, fresh("work_order_created"), fresh("work_order_emergency")]
        sent.append(fresh("work_order_bulk_updated"))
        for event in sent:
            assert 202 == metered.post(event).status_code
        amount, items = "tracehook_payments_amount_total", "tracehook_batch_items_total"
        metered.worker_until(
            "the business events' workflows",
            workflows(1, "payment.received"),
            workflows(1, "payment.failed"),
            workflows(2, "work_order.created"),
            workflows(1, "work_order.bulk_updated"),
            (1850.25, amount, {"currency": "EUR", "outcome": "received"}),
            (99.50, amount, {"currency": "EUR", "outcome": "failed"}),
            (1, "tracehook_work_orders_total", {"priority": "emergency"}),
            (1, "tracehook_work_orders_total", {"priority": "normal"}),
            (23, items, {"operation": "update_work_orders", "outcome": "succeeded"}),
            (2, items, {"operation": "update_work_orders", "outcome": "failed"}),
        )


class TestRetriesAndDeadLetters:
    """An API that keeps failing: two attempts counted as retried, the last as dead_lettered, none as failed."""

    def test_dead_lettered(self, metered: Metered) -> None:
        """TASK_MAX_RETRIES=2 and a lease the sandbox fails 3 times: retried 2, dead_lettered 1."""
        event = fresh("lease_renewed")
        lease = f"lease_{uuid.uuid4().hex[:10]}"
        event["data"]["lease_id"] = lease
        fault = {"status": 503, "count": 3, "path_prefix": f"/leases/{lease}"}
        assert httpx.post(f"{metered.stack.sandbox_url}/_sandbox/faults", json=fault, timeout=10).is_success
        assert 202 == metered.post(event).status_code
        worker = metered.worker_until(
            "2 retried attempts and a dead-lettered one",
            tasks(2, "retried"),
            tasks(1, "dead_lettered"),
            workflows(3, "lease.renewed", "failed"),
        )
        assert 0 == worker.value("tracehook_tasks_total", task=TASK, status="failed")
        dead = DeadLetters(metered.stack.redis)
        for entry in dead.list():
            if entry.event_id == event["id"]:
                dead.remove(entry.id)


COMPLETION = "tracehook_webhook_completion_seconds"
RUN = f"run {TASK}"


def completions(number: float, event_type: str, outcome: str) -> Expected:
    return number, f"{COMPLETION}_count", {"event_type": event_type, "outcome": outcome}


def final_run(metered: Metered, trace_id: str) -> Any:
    """The run span of a trace that recorded receipt → done, once the receiver has it."""
    receiver = metered.stack.receiver

    def recorded() -> list[Any]:
        return [s for s in receiver.trace(trace_id) if s.name == RUN and COMPLETION_MS in s.attributes]

    receiver.wait_for(lambda _: bool(recorded()), timeout=TIMEOUT, description=f"the last run of {trace_id}")
    (run,) = recorded()
    return run


def fault(metered: Metered, path: str, count: int) -> None:
    """The sandbox answers the next ``count`` requests under ``path`` with a 503."""
    spec = {"status": 503, "count": count, "path_prefix": path}
    assert httpx.post(f"{metered.stack.sandbox_url}/_sandbox/faults", json=spec, timeout=10).is_success


class TestWebhookCompletion:
    """``tracehook_webhook_completion_seconds``: receipt → done, once per webhook on its last attempt,
    retries included, with its trace as exemplar; a replay is a webhook of its own. (Event types no other
    test of this module sends, so that the counts are exact.)"""

    def test_retried_then_completed(self, metered: Metered) -> None:
        """An attempt failed and retried, the next completed: one value, from the root span's start (the
        receipt) to the last workflow span's end, the retry included; the trace is the exemplar."""
        event = fresh("work_order_completed")
        event["type"] = "work_order.updated"
        work_order = f"wo_{uuid.uuid4().hex[:10]}"
        event["data"]["work_order_id"] = work_order
        fault(metered, f"/work-orders/{work_order}", 1)
        before = scrape(metered.worker_metrics)
        answer = metered.post(event)
        assert 202 == answer.status_code, answer.text
        trace_id = answer.json()["trace_id"]
        retried = before.value("tracehook_tasks_total", task=TASK, status="retried") + 1
        after = metered.worker_until(
            "one completion after a retry",
            completions(1, "work_order.updated", "completed"),
            tasks(retried, "retried"),
        )
        assert 0 == after.value(
            f"{COMPLETION}_count", event_type="work_order.updated", outcome="dead_lettered"
        )
        value = after.value(f"{COMPLETION}_sum", event_type="work_order.updated")
        run = final_run(metered, trace_id)
        assert value * 1000 == pytest.approx(run.attributes[COMPLETION_MS], abs=0.001)
        assert "completed" == run.attributes[OUTCOME]
        spans = metered.stack.receiver.trace(trace_id)
        (root,) = [s for s in spans if not s.parent_span_id]
        workflows_ = sorted(
            (s for s in spans if s.name == "workflow.work_order.updated"), key=lambda s: s.end_ns
        )
        assert 2 == len(workflows_)
        from_trace = (workflows_[-1].end_ns - root.start_ns) / 1e9
        assert from_trace == pytest.approx(value, abs=0.005)
        assert value > (workflows_[0].end_ns - root.start_ns) / 1e9
        exemplars = scrape(metered.worker_metrics, openmetrics=True).exemplar_trace_ids(
            f"{COMPLETION}_bucket", event_type="work_order.updated"
        )
        assert {trace_id} == exemplars

    def test_dead_lettered_then_replayed(self, metered: Metered) -> None:
        """Every attempt failed: one ``dead_lettered`` value in the webhook's trace. Its replay from the
        dead-letter list completes and is one ``completed`` value in the replay's trace, timed from the
        replay."""
        event = fresh("lease_expiring")
        event["type"] = "lease.expired"
        lease = f"lease_{uuid.uuid4().hex[:10]}"
        event["data"]["lease_id"] = lease
        fault(metered, f"/leases/{lease}", 3)
        answer = metered.post(event)
        assert 202 == answer.status_code, answer.text
        trace_id = answer.json()["trace_id"]
        metered.worker_until("a dead-lettered webhook", completions(1, "lease.expired", "dead_lettered"))
        dead = final_run(metered, trace_id)
        assert ("dead_lettered", False) == (dead.attributes[OUTCOME], dead.attributes[OBJECTIVE_MET])
        (entry,) = [e for e in DeadLetters(metered.stack.redis).list() if e.event_id == event["id"]]

        replayed_at = time.time()
        replay = subprocess.run(
            [sys.executable, "-m", "workflows.cli", "dlq", "replay", entry.id],
            env=metered.stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == replay.returncode, replay.stderr
        new_trace = re.search(r"new trace ([0-9a-f]{32})", replay.stdout)
        assert new_trace is not None, replay.stdout
        after = metered.worker_until(
            "the replay's completion",
            completions(1, "lease.expired", "dead_lettered"),
            completions(1, "lease.expired", "completed"),
        )
        done_at = time.time()
        completed = after.value(f"{COMPLETION}_sum", event_type="lease.expired", outcome="completed")
        assert 0 < completed <= done_at - replayed_at
        run = final_run(metered, new_trace.group(1))
        assert completed * 1000 == pytest.approx(run.attributes[COMPLETION_MS], abs=0.001)
        exemplars = scrape(metered.worker_metrics, openmetrics=True)
        assert {trace_id} == exemplars.exemplar_trace_ids(
            f"{COMPLETION}_bucket", event_type="lease.expired", outcome="dead_lettered"
        )
        assert {new_trace.group(1)} == exemplars.exemplar_trace_ids(
            f"{COMPLETION}_bucket", event_type="lease.expired", outcome="completed"
        )

    def test_task_without_a_receipt_runs_unmeasured(self, metered: Metered) -> None:
        """A task an older intake published (no ``received_at``) runs as before, and is not measured."""
        event = fresh("work_order_completed")
        before = scrape(metered.worker_metrics)
        producer = producer_app({**metered.stack.env, "CELERY_DEFAULT_QUEUE": metered.queue})
        try:
            producer.send_task(TASK_NAME, kwargs={"event": event, "priority": "normal"})
        finally:
            instrument_celery(producer).uninstrument()
            producer.close()
        after = metered.worker_until(
            "the task without a receipt",
            workflows(
                before.value(f"{WORKFLOW}_count", workflow="work_order.completed") + 1, "work_order.completed"
            ),
            tasks(before.value("tracehook_tasks_total", task=TASK, status="succeeded") + 1, "succeeded"),
        )
        assert before.value(f"{COMPLETION}_count") == after.value(f"{COMPLETION}_count")

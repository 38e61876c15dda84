"""One trace from HTTP request to API call, for every sample event, through the real processes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import API_KEY, Stack, children, fresh
from tests.otlp_receiver import ReceivedSpan
from workflows.events import FIXTURES

pytestmark = pytest.mark.e2e
TIMEOUT = 60


def complete(spans: list[ReceivedSpan], event_type: str) -> bool:
    """The workflow has ended and every API call has its sandbox side."""
    workflow = [s for s in spans if s.name == f"workflow.{event_type}"]
    clients = [s for s in spans if s.kind == "CLIENT" and s.name.startswith("rentvine.")]
    served = {s.parent_span_id for s in spans if s.service_name == "rentvine-sandbox" and s.kind == "SERVER"}
    roots = [s for s in spans if not s.parent_span_id and s.name.startswith(("webhook.", "dlq.replay."))]
    runs = [s for s in spans if s.kind == "CONSUMER" and "celery.state" in s.attributes]
    if not runs:
        return False
    return bool(roots) and bool(workflow) and bool(clients) and all(c.span_id in served for c in clients)


def accepted(stack: Stack, event: dict[str, Any]) -> str:
    response = stack.send(event)
    assert 202 == response.status_code, response.text
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])
    return str(body["trace_id"])


@pytest.mark.parametrize("fixture", FIXTURES)
class TestOneTracePerWebhook:
    """Intake SERVER → PRODUCER → CONSUMER → workflow → steps → CLIENT → sandbox SERVER → SQL, one trace."""

    def test_trace_shape(self, stack: Stack, fixture: str) -> None:
        """A single root, the intake's SERVER span, and the whole chain under it."""
        event = fresh(fixture)
        trace_id = accepted(stack, event)
        stack.receiver.wait_for(
            lambda _: complete(stack.receiver.trace(trace_id), event["type"]),
            timeout=TIMEOUT,
            description=f"{fixture} trace {trace_id}",
        )
        spans = stack.receiver.trace(trace_id)
        roots = [s for s in spans if not s.parent_span_id]
        assert [f"webhook.{event['type']}"] == [r.name for r in roots]
        (root,) = roots
        assert ("SERVER", "tracehook-intake") == (root.kind, root.service_name)
        (publish,) = [s for s in children(spans, root) if s.kind == "PRODUCER"]
        (run,) = [s for s in children(spans, publish) if s.kind == "CONSUMER"]
        assert "tracehook-worker" == run.service_name
        (workflow,) = [s for s in children(spans, run) if s.name == f"workflow.{event['type']}"]
        assert "completed" == workflow.attributes["workflow.status"]
        assert event["id"] == workflow.attributes["workflow.event_id"]
        steps = children(spans, workflow)
        assert steps
        assert all(s.name.startswith("workflow.step.") for s in steps)
        clients = [s for s in spans if s.kind == "CLIENT" and s.name.startswith("rentvine.")]
        for client in clients:
            (server,) = [s for s in children(spans, client) if s.service_name == "rentvine-sandbox"]
            assert server.kind == "SERVER"
            assert client.attributes["correlation_id"]
        sql = [s for s in spans if s.service_name == "rentvine-sandbox" and s.attributes.get("db.system")]
        assert sql, "the sandbox's SQL queries are spans of the same trace"

    def test_logs_carry_the_trace(self, stack: Stack, fixture: str) -> None:
        """Intake and worker log lines of this event carry its trace id and a span id of its trace."""
        event = fresh(fixture)
        trace_id = accepted(stack, event)
        stack.receiver.wait_for(
            lambda _: complete(stack.receiver.trace(trace_id), event["type"]), timeout=TIMEOUT
        )
        span_ids = {s.span_id for s in stack.receiver.trace(trace_id)}
        intake = [line for line in stack.log_lines("intake") if line.get("event_id") == event["id"]]
        assert any(line["event"] == "webhook.accepted" and line["trace_id"] == trace_id for line in intake)

        def worker_lines() -> list[dict[str, Any]]:
            return [line for line in stack.log_lines("worker") if line.get("event_id") == event["id"]]

        stack.receiver.wait_for(
            lambda _: any(line["event"] == "workflow.completed" for line in worker_lines()),
            timeout=TIMEOUT,
            description="workflow.completed in the worker log",
        )
        lines = worker_lines()
        assert {"workflow.started", "workflow.completed"} <= {line["event"] for line in lines}
        for line in lines:
            assert trace_id == line["trace_id"]
            assert line["span_id"] in span_ids
        (done,) = [line for line in lines if line["event"] == "workflow.completed"]
        assert (event["type"], "tracehook-worker") == (done["event_type"], done["service"])
        assert done["duration_ms"] > 0


class TestBatch:
    """The bulk event: 25 items in chunks of 10, the 2 bad ones reported, the 23 others applied."""

    def test_bulk_batch_span(self, stack: Stack) -> None:
        """batch span: 25 items, 2 failed, 3 chunks; the failures are events with their index."""
        event = fresh("work_order_bulk_updated")
        trace_id = accepted(stack, event)
        stack.receiver.wait_for(
            lambda _: complete(stack.receiver.trace(trace_id), event["type"]), timeout=TIMEOUT
        )
        spans = stack.receiver.trace(trace_id)
        (batch,) = [s for s in spans if s.name == "batch.update_work_orders"]
        assert (25, 2, 10) == (
            batch.attributes["batch.items_total"],
            batch.attributes["batch.items_failed"],
            batch.attributes["batch.size"],
        )
        chunks = children(spans, batch)
        assert 3 == len(chunks)
        failed = sorted(
            attrs["batch.item_index"] for c in chunks for name, attrs in c.events if name == "exception"
        )
        assert [7, 19] == failed
        updates = [s for s in spans if s.name == "rentvine.work_order.update"]
        assert 23 == len(updates)


class TestSecrets:
    """The card number, the SSN and the API key appear nowhere: no span, no event, no log line."""

    def test_nothing_leaks(self, stack: Stack) -> None:
        """After the payment with a card and an SSN ran, search every span and every log file."""
        event = fresh("payment_received")
        trace_id = accepted(stack, event)
        stack.receiver.wait_for(
            lambda _: complete(stack.receiver.trace(trace_id), event["type"]), timeout=TIMEOUT
        )
        dump = repr(
            [(s.name, s.attributes, s.events, s.status_message, s.resource) for s in stack.receiver.spans]
        )
        logs = "".join(path.read_text(errors="replace") for path in stack.logs.values())
        for secret in (
            "4111111111111111",
            "4111 1111 1111 1111",
            "078-05-1120",
            "078051120",
            API_KEY,
            stack.secret,
        ):
            assert secret not in dump
            assert secret not in logs


class TestDeadLetterAndReplay:
    """The API failing: retries in one trace, then the dead-letter list, then a replay that completes."""

    def test_retries_dead_letter_replay(self, stack: Stack) -> None:
        """3 attempts (TASK_MAX_RETRIES=2) in one trace → DLQ entry with that trace → replay → completed."""
        answer = stack.sandbox(
            "POST",
            "/_sandbox/faults",
            json={"status": 503, "count": 1000, "delay_s": 0.0, "path_prefix": "/leases"},
        )
        assert answer.status_code < 300, answer.text
        try:
            event = fresh("lease_renewed")
            trace_id = accepted(stack, event)
            run_name = "run process_webhook_event"

            def runs() -> list[ReceivedSpan]:
                return [s for s in stack.receiver.trace(trace_id) if s.name == run_name]

            stack.receiver.wait_for(lambda _: len(runs()) == 3, timeout=TIMEOUT, description="3 attempts")
            states = sorted(str(s.attributes.get("celery.state")) for s in runs())
            assert ["FAILURE", "RETRY", "RETRY"] == states
            stack.receiver.wait_for(
                lambda _: any(e.event_id == event["id"] for e in _dlq(stack)),
                timeout=TIMEOUT,
                description=f"dead-letter entry for {event['id']}; entries: {[e.event_id for e in _dlq(stack)]}",
            )
            (entry,) = [e for e in _dlq(stack) if e.event_id == event["id"]]
            assert trace_id == entry.trace_id
            assert "503" in entry.error
        finally:
            stack.sandbox("DELETE", "/_sandbox/faults")
        import subprocess  # noqa: PLC0415
        import sys  # noqa: PLC0415

        replay = subprocess.run(
            [sys.executable, "-m", "workflows.cli", "dlq", "replay", entry.id],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == replay.returncode, replay.stderr
        new_trace = re.search(r"new trace ([0-9a-f]{32})", replay.stdout)
        assert new_trace is not None, replay.stdout
        new_id = new_trace.group(1)
        stack.receiver.wait_for(
            lambda _: complete(stack.receiver.trace(new_id), "lease.renewed"), timeout=TIMEOUT
        )
        spans = stack.receiver.trace(new_id)
        (root,) = [s for s in spans if not s.parent_span_id]
        assert any(link[0] == trace_id for link in root.links)
        (workflow,) = [s for s in spans if s.name == "workflow.lease.renewed"]
        assert "completed" == workflow.attributes["workflow.status"]
        assert all(e.id != entry.id for e in _dlq(stack))


def _dlq(stack: Stack) -> list[Any]:
    from workflows.dlq import DeadLetters  # noqa: PLC0415

    return DeadLetters(stack.redis).list()


class TestSourceCorrelation:
    """A webhook about an entity our worker just changed links to the API call that changed it."""

    def test_follow_up_webhook_links_to_its_cause(self, stack: Stack) -> None:
        """work_order.created → assign-vendor call → the sandbox announces work_order.updated → linked."""
        event = fresh("work_order_created")
        event["data"]["work_order_id"] = f"wo_{event['id'][-8:]}"
        trace_id = accepted(stack, event)
        stack.receiver.wait_for(
            lambda _: complete(stack.receiver.trace(trace_id), event["type"]), timeout=TIMEOUT
        )
        (assign,) = [
            s for s in stack.receiver.trace(trace_id) if s.name == "rentvine.work_order.assign_vendor"
        ]

        def follow_ups() -> list[ReceivedSpan]:
            return [
                s
                for s in stack.receiver.spans
                if s.name == "webhook.work_order.updated"
                and s.attributes.get("webhook.source_trace_id") == trace_id
            ]

        stack.receiver.wait_for(
            lambda _: bool(follow_ups()), timeout=TIMEOUT, description="follow-up webhook"
        )
        follow = follow_ups()[0]
        assert follow.trace_id != trace_id
        assert (trace_id, assign.span_id) in [(link[0], link[1]) for link in follow.links]


class TestIdempotency:
    """A task run twice (a redelivery) does not send its notice twice."""

    def test_same_event_twice_one_notice(self, stack: Stack) -> None:
        """The event's task published twice runs twice; the sandbox holds one notification for it."""
        from workflows.queue import TASK_NAME, producer_app  # noqa: PLC0415

        event = fresh("payment_failed")
        event["data"]["payment_id"] = f"pay_{event['id'][-8:]}"
        publisher = producer_app({**stack.env})
        results = [
            publisher.send_task(TASK_NAME, kwargs={"event": event, "priority": "critical"}) for _ in range(2)
        ]
        for result in results:
            assert "completed" == result.get(timeout=TIMEOUT)["status"]
        listed = stack.sandbox("GET", "/notifications", params={"event_id": event["id"]}).json()
        assert 1 == listed["count"]
        ledger = stack.sandbox(
            "GET", "/ledger/entries", params={"payment_id": event["data"]["payment_id"]}
        ).json()
        assert 1 == sum(entry.get("kind") == "reversal" for entry in ledger["entries"])

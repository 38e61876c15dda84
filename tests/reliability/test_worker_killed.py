"""A worker killed with SIGKILL in the middle of a workflow: the task runs again, completes, notices once."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import fresh
from tests.reliability.conftest import TIMEOUT, Cluster, RedisServer, wait_until

pytestmark = pytest.mark.integration


def payment_event() -> dict[str, Any]:
    """A payment event about a payment of its own (ledger entries are per payment)."""
    event = fresh("payment_received")
    event["data"]["payment_id"] = f"pay_{event['id'][-8:]}"
    return event


def hold_notify_answer(cluster: Cluster, delay_s: float) -> None:
    """The next notification is sent, but its answer held ``delay_s`` in the sandbox."""
    answer = cluster.sandbox(
        "POST",
        "/_sandbox/faults",
        json={"status": None, "delay_after_s": delay_s, "path_prefix": "/notifications", "method": "POST"},
    )
    assert answer.status_code == 201, answer.text


def wait_notice_sent(cluster: Cluster, event_id: str) -> None:
    """Poll until the notice is sent and its answer is being held: the workflow's last effect is done."""
    wait_until(
        lambda: (
            len(sent_notices(cluster, event_id)) == 1
            and not cluster.sandbox("GET", "/_sandbox/faults").json()["faults"]
        ),
        TIMEOUT,
        "the notice to be sent",
    )


def sent_notices(cluster: Cluster, event_id: str) -> list[dict[str, Any]]:
    """The sandbox's ``sandbox.notification.sent`` log lines of one event (one per call)."""
    return [
        line
        for line in cluster.log_lines("sandbox")
        if line.get("event") == "sandbox.notification.sent" and line.get("event_id") == event_id
    ]


def assert_ran_once_in_effect(cluster: Cluster, event: dict[str, Any], trace_id: str) -> None:
    """Completed once, in the trace the intake answered; one notice and one ledger entry, two calls."""
    event_id = event["id"]
    wait_until(lambda: cluster.completions()[event_id] >= 1, TIMEOUT, f"{event_id} to complete")
    # The killed attempt sent the notice; the second attempt sent it again and was told it is a duplicate.
    wait_until(lambda: len(sent_notices(cluster, event_id)) == 2, TIMEOUT, "both notify calls answered")
    assert 1 == cluster.completions()[event_id]
    assert [False, True] == sorted(line["duplicate"] for line in sent_notices(cluster, event_id))
    assert 1 == cluster.notifications(event_id)
    ledger = cluster.sandbox("GET", "/ledger/entries", params={"payment_id": event["data"]["payment_id"]})
    assert 1 == ledger.json()["count"]
    cluster.receiver.wait_for(
        lambda spans: any(
            s.name == "workflow.payment.received" and s.attributes.get("workflow.event_id") == event_id
            for s in spans
        ),
        timeout=TIMEOUT,
    )
    (workflow,) = [
        s
        for s in cluster.receiver.by_name("workflow.payment.received")
        if s.attributes.get("workflow.event_id") == event_id
    ]
    assert trace_id == workflow.trace_id
    assert "completed" == workflow.attributes["workflow.status"]


class TestWorkerKilled:
    """A task whose worker is SIGKILLed mid-workflow is delivered again and completes; its effects happen once."""

    def test_pool_child_killed(
        self, redis_server: RedisServer, cluster_factory: Callable[..., Cluster]
    ) -> None:
        """The pool child dies after sending its notice, before the ack: the parent requeues the task, a new child completes it."""
        cluster = cluster_factory(redis_server.url(), RENTVINE_TIMEOUT_S="10")
        cluster.start_sandbox()
        cluster.start_intake()
        cluster.start_worker(concurrency=1)
        hold_notify_answer(cluster, 5.0)
        event = payment_event()
        answer = cluster.send(event)
        assert 202 == answer.status_code, answer.text
        wait_notice_sent(cluster, event["id"])
        (child,) = cluster.pool_children()
        os.kill(child, signal.SIGKILL)
        assert_ran_once_in_effect(cluster, event, answer.json()["trace_id"])

    def test_whole_worker_killed(
        self, redis_server: RedisServer, cluster_factory: Callable[..., Cluster]
    ) -> None:
        """Parent and pool die after the notice (a lost container): a new worker gets the task after the visibility timeout."""
        cluster = cluster_factory(
            redis_server.url(), RENTVINE_TIMEOUT_S="10", CELERY_VISIBILITY_TIMEOUT_S="2"
        )
        cluster.start_sandbox()
        cluster.start_intake()
        cluster.start_worker("worker", concurrency=1)
        hold_notify_answer(cluster, 5.0)
        event = payment_event()
        answer = cluster.send(event)
        assert 202 == answer.status_code, answer.text
        wait_notice_sent(cluster, event["id"])
        cluster.kill("worker")
        cluster.start_worker("worker-2", concurrency=1)
        assert_ran_once_in_effect(cluster, event, answer.json()["trace_id"])

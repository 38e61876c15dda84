"""The RentVine API down, slow past the client's timeout, or answering 500: retries, dead letter, replay."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.e2e.conftest import fresh
from tests.reliability.conftest import TIMEOUT, Cluster, RedisServer, wait_until
from workflows.dlq import DeadLetters

pytestmark = pytest.mark.integration
RUN = "run process_webhook_event"


def break_api(cluster: Cluster, how: str) -> None:
    """Make every payment call fail the way ``how`` says."""
    if how == "down":
        cluster.stop("sandbox")
        return
    fault = {"status": 500} if how == "500" else {"status": None, "delay_s": 3.0}  # client timeout: 1 s
    answer = cluster.sandbox(
        "POST", "/_sandbox/faults", json={**fault, "count": 1000, "path_prefix": "/payments"}
    )
    assert 201 == answer.status_code, answer.text


def mend_api(cluster: Cluster, how: str) -> None:
    """Undo :func:`break_api`."""
    if how == "down":
        cluster.start_sandbox()
    else:
        cluster.sandbox("DELETE", "/_sandbox/faults")


@pytest.mark.parametrize("how", ["down", "slow", "500"])
class TestRentVineFaults:
    """Each attempt fails and is retried with backoff in the webhook's trace; the last goes to the
    dead-letter list with that trace; a replay, once the API is back, completes in a linked trace."""

    def test_retry_dead_letter_replay(
        self, how: str, redis_server: RedisServer, cluster_factory: Callable[..., Cluster]
    ) -> None:
        """3 attempts (TASK_MAX_RETRIES=2) → one DLQ entry → ``tracehook dlq replay`` → completed once."""
        cluster = cluster_factory(redis_server.url(), RENTVINE_TIMEOUT_S="1")
        cluster.start_sandbox()
        cluster.start_intake()
        cluster.start_worker(concurrency=1)
        break_api(cluster, how)
        event = fresh("payment_received")
        event["data"]["payment_id"] = f"pay_{event['id'][-8:]}"
        answer = cluster.send(event)
        assert 202 == answer.status_code, answer.text
        trace_id = answer.json()["trace_id"]

        wait_until(lambda: event["id"] in cluster.dead_lettered(), TIMEOUT, "the dead-letter entry")
        cluster.receiver.wait_for(
            lambda _: sum(s.name == RUN for s in cluster.receiver.trace(trace_id)) == 3,
            timeout=TIMEOUT,
            description="three attempts in the webhook's trace",
        )
        runs = sorted(
            (s for s in cluster.receiver.trace(trace_id) if s.name == RUN), key=lambda s: s.start_ns
        )
        assert ["RETRY", "RETRY", "FAILURE"] == [s.attributes["celery.state"] for s in runs]
        assert [0, 1, 2] == [s.attributes["celery.retries"] for s in runs]
        retries = [
            line
            for line in cluster.log_lines("worker")
            if line.get("event") == "workflow.retry" and line.get("event_id") == event["id"]
        ]
        assert [1, 2] == [line["attempt"] for line in retries]
        assert all(line["trace_id"] == trace_id and line["countdown_s"] >= 0 for line in retries)
        (entry,) = [e for e in DeadLetters(cluster.redis).list() if e.event_id == event["id"]]
        assert (trace_id, 3) == (entry.trace_id, entry.attempts)
        assert 0 == cluster.completions()[event["id"]]

        mend_api(cluster, how)
        replay = subprocess.run(
            [sys.executable, "-m", "workflows.cli", "dlq", "replay", entry.id],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert 0 == replay.returncode, replay.stderr
        found = re.search(r"new trace ([0-9a-f]{32})", replay.stdout)
        assert found is not None, replay.stdout
        wait_until(lambda: cluster.completions()[event["id"]] >= 1, TIMEOUT, "the replay to complete")
        assert 1 == cluster.completions()[event["id"]]
        assert 1 == cluster.notifications(event["id"])
        assert event["id"] not in cluster.dead_lettered()
        spans = cluster.receiver.wait_for_spans(name="dlq.replay.payment.received", trace_id=found.group(1))
        assert any(link[0] == trace_id for link in spans[0].links)

"""Redis killed and restarted while webhooks arrive: nothing answered 202 is lost, every refusal can be retried."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import fresh
from tests.reliability.conftest import TIMEOUT, Cluster, RedisServer, wait_until
from workflows.intake import PENDING_TTL_S

pytestmark = pytest.mark.integration

EVENTS = 90
SENDERS = 3
SENDER_RETRY_S = 0.1


class Sender:
    """Senders as RentVine would be: each webhook retried, same webhook-id, until it gets a 2xx answer."""

    def __init__(self, cluster: Cluster, events: list[dict[str, Any]]) -> None:
        self.cluster = cluster
        self.pending = list(events)
        self.answers: dict[str, list[int]] = collections.defaultdict(list)
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + 120

    def count(self, predicate: Callable[[int], bool]) -> int:
        """Answers so far that satisfy ``predicate`` (0 stands for no answer: connection refused or timeout)."""
        with self.lock:
            return sum(predicate(code) for codes in self.answers.values() for code in codes)

    def run(self) -> None:
        """Deliver webhooks until none is left (or the deadline)."""
        while time.monotonic() < self.deadline:
            with self.lock:
                if not self.pending:
                    return
                event = self.pending.pop(0)
            code = self._deliver(event)
            with self.lock:
                self.answers[event["id"]].append(code)
                if not 200 <= code < 300:
                    self.pending.append(event)
            if not 200 <= code < 300:
                time.sleep(SENDER_RETRY_S)  # the sender's own retry pacing, not a wait for a state

    def _deliver(self, event: dict[str, Any]) -> int:
        try:
            return self.cluster.send(event, timeout=10).status_code
        except httpx.HTTPError:
            return 0


class TestRedisRestarted:
    """Every webhook answered 202 completes (or is dead-lettered); every refused one succeeds when retried."""

    def test_kill_and_restart_twice_under_load(
        self, redis_server: RedisServer, cluster_factory: Callable[..., Cluster]
    ) -> None:
        """90 webhooks from 3 senders; Redis SIGKILLed and restarted (append-only file) twice mid-stream."""
        cluster = cluster_factory(redis_server.url(), CELERY_VISIBILITY_TIMEOUT_S="4")
        cluster.start_sandbox()
        cluster.start_intake()
        cluster.start_worker(concurrency=2)
        events = []
        for _ in range(EVENTS):
            event = fresh("payment_received")
            event["data"]["payment_id"] = f"pay_{event['id'][-8:]}"
            events.append(event)
        sender = Sender(cluster, events)
        threads = [threading.Thread(target=sender.run, daemon=True) for _ in range(SENDERS)]
        for thread in threads:
            thread.start()

        def accepted() -> int:
            return sender.count(lambda code: code == 202)

        def refused() -> int:
            return sender.count(lambda code: not 200 <= code < 300)

        for threshold in (EVENTS // 4, EVENTS // 2):
            wait_until(lambda t=threshold: accepted() >= t, TIMEOUT, f"{threshold} webhooks accepted")
            before = refused()
            redis_server.kill()
            wait_until(lambda b=before: refused() >= b + 5, TIMEOUT, "webhooks refused while Redis is down")
            redis_server.start()
        for thread in threads:
            thread.join(150)

        ids = {event["id"] for event in events}
        assert ids == {i for i, codes in sender.answers.items() if codes[-1] in {200, 202}}, (
            "a sender gave up"
        )
        assert refused() >= 10, "Redis was never seen down: the test did not test anything"
        assert all(code in {0, 200, 202, 503} for codes in sender.answers.values() for code in codes)

        def settled() -> set[str]:
            return {i for i, n in cluster.completions().items() if n} | cluster.dead_lettered()

        wait_until(lambda: ids <= settled(), TIMEOUT * 2, "every accepted webhook to complete or dead-letter")
        lost = ids - settled()
        assert not lost
        doubled = {
            i: n for i in ids if (n := cluster.notifications(i)) != 1 and i not in cluster.dead_lettered()
        }
        assert not doubled, f"notices sent other than once: {doubled}"
        ok = {i for i, codes in sender.answers.items() if 202 in codes}
        assert len(ok) == EVENTS, "each webhook is queued exactly once, whatever retries it took"


class TestPendingClaim:
    """A dedupe key left pending (the intake died between claiming the id and queueing) never answers
    'duplicate': the sender's retry is refused with 503 until the claim expires, then queued."""

    def test_retry_after_an_intake_died_mid_publish(
        self, redis_server: RedisServer, cluster_factory: Callable[..., Cluster]
    ) -> None:
        """The claim an intake killed mid-request would leave: 503 + Retry-After, then 202 and completed."""
        cluster = cluster_factory(redis_server.url())
        cluster.start_sandbox()
        cluster.start_intake()
        cluster.start_worker(concurrency=1)
        event = fresh("lease_renewed")
        key = f"tracehook:dedupe:{event['id']}"
        assert PENDING_TTL_S <= 60
        cluster.redis.set(key, "tracehook:pending", px=1500)

        answer = cluster.send(event)
        assert (503, "in_flight") == (answer.status_code, answer.json()["error"])
        assert answer.headers["retry-after"]
        answers: list[int] = []

        def retried() -> bool:
            answers.append(cluster.send(event).status_code)
            return answers[-1] == 202

        wait_until(retried, 10, "the retry to be queued once the claim expired", interval=0.2)
        assert {503} == set(answers[:-1])
        wait_until(lambda: cluster.completions()[event["id"]] == 1, TIMEOUT, "the event to complete")
        assert 200 == cluster.send(event).status_code

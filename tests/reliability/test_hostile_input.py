"""Malformed and hostile input at the real intake (uvicorn): refused cleanly, and never at a good webhook's cost."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import fresh
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import TIMEOUT, Cluster, RedisServer, make_cluster, wait_until
from workflows.signing import decode_secret, sign

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Sandbox, intake and one worker on a Redis of the module's own."""
    tmp = tmp_path_factory.mktemp("hostile")
    server = RedisServer(tmp / "redis").start()
    receiver = OtlpReceiver().start()
    made = make_cluster(tmp, server.url(), receiver)
    try:
        made.start_sandbox()
        made.start_intake()
        made.start_worker(concurrency=1)
        yield made
    finally:
        made.close()
        receiver.stop()
        server.stop()


@pytest.fixture
def cluster(running: Cluster) -> Iterator[Cluster]:
    """The module's cluster; after each test, a good webhook is still accepted and completed."""
    yield running
    good = fresh("lease_renewed")
    answer = running.send(good)
    assert 202 == answer.status_code, "a good webhook after the hostile ones is accepted"
    wait_until(lambda: running.completions()[good["id"]] == 1, TIMEOUT, "the good webhook to complete")
    assert running.processes["intake"].poll() is None


def post(cluster: Cluster, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST raw bytes to the intake."""
    return httpx.post(cluster.intake_url, content=body, headers=headers, timeout=30)


class TestHostileInput:
    """Each hostile request gets a 4xx (or the contract's answer), no 5xx, and queues nothing it should not."""

    def test_huge_headers(self, cluster: Cluster) -> None:
        """Heads past the HTTP server's bound (1 MiB in one header; 6,000 headers) are refused by it, 400
        or the connection closed, never a 5xx; a 60 KiB junk header within the bound does not change the
        answer: the webhook is judged on its signature and body, and queued once."""
        event = fresh("lease_renewed")
        body = json.dumps(event).encode()
        signed = cluster.headers(body, event["id"])
        for junk in ({"x-junk": "a" * (1 << 20)}, {f"x-junk-{i}": "b" * 10 for i in range(6_000)}):
            try:
                code = post(cluster, body, {**signed, **junk}).status_code
            except httpx.TransportError:
                code = 0  # the server closed the connection on the oversized head
            assert code in {0, 400, 413, 431}
        assert 0 == cluster.completions()[event["id"]]
        assert 202 == post(cluster, body, {**signed, "x-junk": "a" * 60_000}).status_code
        wait_until(lambda: cluster.completions()[event["id"]] == 1, TIMEOUT, "the event to complete")

    def test_deep_nesting_and_invalid_utf8(self, cluster: Cluster) -> None:
        """Signed bodies 100,000 levels deep, and with invalid UTF-8: 400 invalid_json."""
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"id": "evt_\xff\xfe", "type": "lease.renewed"}'):
            answer = post(cluster, body, cluster.headers(body))
            assert (400, "invalid_json") == (answer.status_code, answer.json()["error"])

    def test_forged_traceparent_and_oversized_baggage(self, cluster: Cluster) -> None:
        """A sender's traceparent is a link, never the parent; 8 KiB of sender baggage goes nowhere."""
        forged_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        event = fresh("lease_renewed")
        event["data"]["lease_id"] = f"lease_{event['id'][-8:]}"
        body = json.dumps(event).encode()
        baggage = ",".join(f"k{i}={'v' * 60}" for i in range(130))
        headers = {
            **cluster.headers(body, event["id"]),
            "traceparent": f"00-{forged_trace}-00f067aa0ba902b7-01",
            "baggage": baggage,
        }
        answer = post(cluster, body, headers)
        assert 202 == answer.status_code, answer.text
        trace_id = answer.json()["trace_id"]
        assert forged_trace != trace_id
        wait_until(lambda: cluster.completions()[event["id"]] == 1, TIMEOUT, "the event to complete")
        (root,) = cluster.receiver.wait_for_spans(name="webhook.lease.renewed", trace_id=trace_id)
        assert root.is_root
        senders = [link[0] for link in root.links if link[2].get("link.kind") == "sender"]
        assert [forged_trace] == senders
        assert not cluster.receiver.trace(forged_trace)
        spans = cluster.receiver.wait_for_spans(name="run process_webhook_event", trace_id=trace_id)
        assert not any(key.startswith("k1") for span in spans for key in span.attributes)

    def test_replayed_signatures(self, cluster: Cluster) -> None:
        """The same signed delivery again: 200 duplicate, queued once. The signature on another id or
        body, or an old timestamp: 401."""
        event = fresh("lease_renewed")
        body = json.dumps(event).encode()
        headers = cluster.headers(body, event["id"])
        assert 202 == post(cluster, body, headers).status_code
        assert 200 == post(cluster, body, headers).status_code
        other = fresh("lease_renewed")
        other_body = json.dumps(other).encode()
        assert 401 == post(cluster, other_body, headers).status_code
        assert 401 == post(cluster, body, {**headers, "webhook-id": other["id"]}).status_code
        stale = int(time.time()) - 3600
        old = {
            **headers,
            "webhook-timestamp": str(stale),
            "webhook-signature": sign(decode_secret(cluster.secret), event["id"], stale, body),
        }
        assert 401 == post(cluster, body, old).status_code
        wait_until(lambda: cluster.completions()[event["id"]] == 1, TIMEOUT, "the event to complete")
        assert 0 == cluster.completions()[other["id"]]

    def test_concurrent_duplicate_deliveries(self, cluster: Cluster) -> None:
        """16 simultaneous deliveries of one webhook: exactly one 202; the others 200 duplicate or 503
        in_flight (retry later); the event runs once."""
        event = fresh("lease_renewed")
        body = json.dumps(event).encode()
        headers = cluster.headers(body, event["id"])
        gate = threading.Barrier(16)
        codes: list[int] = []

        def deliver() -> None:
            gate.wait()
            codes.append(post(cluster, body, headers).status_code)

        threads = [threading.Thread(target=deliver) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert 16 == len(codes)
        assert 1 == codes.count(202), codes
        assert set(codes) <= {200, 202, 503}, codes
        wait_until(lambda: cluster.completions()[event["id"]] == 1, TIMEOUT, "the event to complete")
        queue = cluster.env["CELERY_DEFAULT_QUEUE"]
        wait_until(lambda: cluster.redis.llen(queue) == 0, TIMEOUT, "the queue to drain")
        assert 1 == cluster.completions()[event["id"]]
        assert 200 == post(cluster, body, headers).status_code

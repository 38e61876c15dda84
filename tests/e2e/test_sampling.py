"""Head sampling end to end: with TRACE_SAMPLING_RATE=0, emergencies and payments are still kept whole."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Stack, free_port, fresh, start, wait_http, worker_command
from tests.e2e.test_stack import accepted, complete

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def unsampled(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second intake and a one-child worker with TRACE_SAMPLING_RATE=0, on the first stack's sandbox."""
    tmp = tmp_path_factory.mktemp("unsampled")
    port = free_port()
    env = {
        **stack.env,
        "TRACE_SAMPLING_RATE": "0",
        "TRACE_EMERGENCY_SAMPLING_RATE": "1",
        "CELERY_DEFAULT_QUEUE": f"e2e-unsampled-{uuid.uuid4().hex[:8]}",
        "SANDBOX_WEBHOOK_URL": "",
    }
    other = Stack(
        stack.receiver,
        stack.secret,
        f"http://127.0.0.1:{port}/webhooks/rentvine",
        stack.sandbox_url,
        {},
        stack.redis,
        env,
    )
    py = sys.executable
    other.processes["intake"] = start(
        "intake", [py, "-m", "workflows.cli", "intake", "--port", str(port)], env, other.logs, tmp
    )
    other.processes["worker"] = start(
        "worker", worker_command(env["CELERY_DEFAULT_QUEUE"], concurrency=1), env, other.logs, tmp
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", other.processes["intake"], other.logs["intake"])
        yield other
    finally:
        for process in other.processes.values():
            process.terminate()
            process.wait(30)


class TestSamplingRateZero:
    """The ordinary event's trace is dropped; the emergency work order and the payment are kept."""

    def test_priorities_kept(self, unsampled: Stack) -> None:
        """Sent in order to a one-child worker: once the later kept traces are complete, the first is absent."""
        ordinary = fresh("work_order_completed")
        emergency = fresh("work_order_emergency")
        payment = fresh("payment_received")
        dropped = accepted(unsampled, ordinary)
        kept = {
            accepted(unsampled, emergency): emergency["type"],
            accepted(unsampled, payment): payment["type"],
        }
        for trace_id, event_type in kept.items():
            unsampled.receiver.wait_for(
                lambda _, t=trace_id, e=event_type: complete(unsampled.receiver.trace(t), e),
                timeout=60,
                description=f"kept trace {trace_id}",
            )
        listed = httpx.get(
            f"{unsampled.sandbox_url}/notifications", params={"event_id": ordinary["id"]}, timeout=10
        )
        assert 1 == listed.json()["count"], "the ordinary event's workflow ran"
        assert [] == [
            s.name for s in unsampled.receiver.trace(dropped) if s.service_name != "rentvine-sandbox"
        ]
        assert [] == unsampled.receiver.trace(dropped)

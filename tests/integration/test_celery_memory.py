"""No per-task state survives a task: a worker's children stay flat over 10,000 traced tasks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.integration import celery_app as tasks
from tests.integration.conftest import REDIS_URL, start_worker, wait_ready
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration
RUN_INCR = "run tests.integration.celery_app.incr"


def children_rss_kb(pid: int) -> int:
    """Resident memory of a process's direct children, from /proc."""
    total = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def run_tasks(queue: str, key: str, count: int, client: redis.Redis, timeout: float = 120.0) -> None:
    """Publish ``count`` counting tasks and poll, with a deadline, until all have run."""
    start = int(client.get(key) or 0)
    for _ in range(count):
        tasks.incr.apply_async((key,), queue=queue)
    deadline = time.monotonic() + timeout
    while int(client.get(key) or 0) < start + count:
        assert time.monotonic() < deadline, f"only {int(client.get(key) or 0) - start} of {count} ran"
        time.sleep(0.05)


class TestBoundedMemory:
    """Traced tasks leave nothing behind in the pool children."""

    def test_rss_flat_over_ten_thousand_tasks(self, receiver: OtlpReceiver, tmp_path: Path) -> None:
        """After a warm-up, 10,000 more tasks grow the children's memory by less than 20 MB."""
        client = redis.Redis.from_url(REDIS_URL)
        key = f"tracehook-test-count-{uuid.uuid4().hex}"
        worker = start_worker(receiver, tmp_path)
        try:
            wait_ready(worker, tasks.app)
            run_tasks(worker.queue, key, 1_000, client)
            before = children_rss_kb(worker.process.pid)
            run_tasks(worker.queue, key, 10_000, client)
            receiver.wait_for(lambda spans: sum(s.name == RUN_INCR for s in spans) >= 11_000, timeout=60)
            after = children_rss_kb(worker.process.pid)
        finally:
            worker.stop()
            client.delete(key)
        print(f"pool children RSS: {before} kB after 1,000 tasks, {after} kB after 11,000")
        assert after - before < 20 * 1024, f"children grew from {before} kB to {after} kB"

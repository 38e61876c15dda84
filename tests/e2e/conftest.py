"""The whole stack as processes: sandbox, intake (uvicorn), prefork worker, on the real Redis; spans at the
suite's OTLP receiver; logs in files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from workflows.cli import _processes as processes
from workflows.cli._processes import Process, free_port, wait_answering
from workflows.events import load_fixture
from workflows.signing import new_secret, signed_headers

ROOT = Path(__file__).resolve().parents[2]
E2E_REDIS = os.environ.get("TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/5")
API_KEY = "rv_live_e2e_SECRET_key_0042"


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Poll ``url`` with a deadline until it answers 200 (as the demo waits for its processes)."""
    wait_answering(url, Process(log.stem, process, log), timeout)


def stack_environment(
    *, redis_url: str, queue: str, secret: str, sandbox_port: int, otlp_endpoint: str, sandbox_db: Path
) -> dict[str, str]:
    """What the stack's processes share: compose's environment, pointed at the test's Redis, queue,
    sandbox and OTLP receiver, with short retries and a fast span export."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "CELERY_DEFAULT_QUEUE": queue,
        "WEBHOOK_SECRET": secret,
        "RENTVINE_API_URL": f"http://127.0.0.1:{sandbox_port}",
        "RENTVINE_API_KEY": API_KEY,
        "RENTVINE_TIMEOUT_S": "2",
        "TASK_MAX_RETRIES": "2",
        "TASK_RETRY_BACKOFF_S": "0.2",
        "TRACE_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SANDBOX_DB": str(sandbox_db),
        "LOG_LEVEL": "INFO",
    }


@dataclass
class Stack:
    """The running processes and how to talk to them."""

    receiver: OtlpReceiver
    secret: str
    intake_url: str
    sandbox_url: str
    logs: dict[str, Path]
    redis: redis.Redis
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def send(self, event: dict[str, Any], *, extra_headers: dict[str, str] | None = None) -> httpx.Response:
        body = json.dumps(event).encode()
        headers = {**signed_headers(self.secret, body), **(extra_headers or {})}
        return httpx.post(self.intake_url, content=body, headers=headers, timeout=30)

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        lines = []
        for raw in self.logs[name].read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue
        return lines

    def sandbox(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.sandbox_url + path, timeout=10, **kwargs)


def fresh(fixture: str) -> dict[str, Any]:
    """A sample event with an id of its own (dedupe keys are per id)."""
    event = load_fixture(fixture)
    event["id"] = f"{event['id']}_{uuid.uuid4().hex[:8]}"
    return event


def worker_command(queue: str, *, concurrency: int) -> list[str]:
    """The worker as docker-compose runs it, on the test's own queue."""
    return processes.worker_command(concurrency=concurrency, queue=queue)


def start(
    name: str, cmd: list[str], env: dict[str, str], logs: dict[str, Path], tmp: Path
) -> subprocess.Popen[bytes]:
    logs[name] = tmp / f"{name}.log"
    with logs[name].open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """sandbox + intake + worker, the very commands of docker-compose, on their own Redis database."""
    tmp = tmp_path_factory.mktemp("stack")
    client = redis.Redis.from_url(E2E_REDIS)
    client.flushdb()
    secret = new_secret()
    intake_port, sandbox_port = free_port(), free_port()
    receiver = OtlpReceiver().start()
    env = {
        **stack_environment(
            redis_url=E2E_REDIS,
            queue=f"e2e-{uuid.uuid4().hex[:8]}",
            secret=secret,
            sandbox_port=sandbox_port,
            otlp_endpoint=receiver.endpoint,
            sandbox_db=tmp / "sandbox.sqlite3",
        ),
        "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{intake_port}/webhooks/rentvine",
        # No worker metrics endpoint here (tests/e2e/test_metrics.py starts a worker with one).
        "WORKER_METRICS_PORT": "0",
    }
    logs: dict[str, Path] = {}
    result = Stack(
        receiver,
        secret,
        f"http://127.0.0.1:{intake_port}/webhooks/rentvine",
        f"http://127.0.0.1:{sandbox_port}",
        logs,
        client,
        env,
    )
    py = sys.executable
    try:
        result.processes["sandbox"] = start(
            "sandbox", [py, "-m", "workflows.cli", "sandbox", "--port", str(sandbox_port)], env, logs, tmp
        )
        result.processes["intake"] = start(
            "intake", [py, "-m", "workflows.cli", "intake", "--port", str(intake_port)], env, logs, tmp
        )
        result.processes["worker"] = start(
            "worker",
            worker_command(env["CELERY_DEFAULT_QUEUE"], concurrency=2),
            {**env, "SERVICE_NAME": "tracehook-worker"},
            logs,
            tmp,
        )
        wait_http(result.sandbox_url + "/healthz", result.processes["sandbox"], logs["sandbox"])
        wait_http(f"http://127.0.0.1:{intake_port}/healthz", result.processes["intake"], logs["intake"])
        yield result
    finally:
        for process in result.processes.values():
            process.terminate()
        for process in result.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        receiver.stop()
        client.flushdb()


def spans_of(stack: Stack, trace_id: str) -> list[ReceivedSpan]:
    return stack.receiver.trace(trace_id)


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [span for span in spans if span.parent_span_id == parent.span_id]

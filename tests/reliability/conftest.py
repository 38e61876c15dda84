"""Faults on real processes: a Redis server of the test's own, and a stack whose processes a test can kill.

Every test here runs its own ``redis-server`` (on a free port, append-only file on, as docker-compose runs
it), so killing and restarting it never touches the Redis other test runs share, and its own intake,
prefork worker and sandbox as subprocesses in sessions of their own (so a SIGKILL can take a whole worker,
parent and children, as a lost container would).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.conftest import ROOT, free_port, stack_environment, wait_http, worker_command
from tests.otlp_receiver import OtlpReceiver
from workflows.dlq import DeadLetters
from workflows.signing import new_secret, signed_headers

TIMEOUT = 60.0


def wait_until(check: Callable[[], bool], timeout: float, description: str, interval: float = 0.05) -> None:
    """Poll ``check`` with a deadline; fail with ``description`` when it never holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {description}")
        time.sleep(interval)


class RedisServer:
    """A ``redis-server`` process of the test's own, with an append-only file, that can be killed and restarted.

    Args:
        directory: where its append-only file lives (it survives a restart, as in docker-compose).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / f"redis-{self.port}.log"

    def url(self, db: int = 0) -> str:
        """The server's URL for database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Start (or start again, on the same port and file) and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--dir",
                    str(self.directory),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url(), socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, 20, f"redis-server on port {self.port}")
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL the server and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the server for good."""
        self.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Cluster:
    """Sandbox, intake and prefork workers as processes on one Redis, each startable, killable, stoppable."""

    tmp: Path
    redis_url: str
    receiver: OtlpReceiver
    env: dict[str, str]
    secret: str
    intake_port: int
    sandbox_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def intake_url(self) -> str:
        """The intake's webhook route."""
        return f"http://127.0.0.1:{self.intake_port}/webhooks/rentvine"

    @property
    def sandbox_url(self) -> str:
        """The sandbox's base URL."""
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def redis(self) -> redis.Redis:
        """A client of the cluster's Redis."""
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)

    def _start(self, name: str, cmd: list[str], **env: str) -> subprocess.Popen[bytes]:
        self.logs[name] = self.tmp / f"{name}.log"
        with self.logs[name].open("ab") as out:
            process = subprocess.Popen(
                cmd,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def start_sandbox(self, **env: str) -> None:
        """Start the sandbox and wait for its health check."""
        cmd = [sys.executable, "-m", "workflows.cli", "sandbox", "--port", str(self.sandbox_port)]
        process = self._start("sandbox", cmd, **env)
        wait_http(self.sandbox_url + "/healthz", process, self.logs["sandbox"])

    def start_intake(self, name: str = "intake", **env: str) -> None:
        """Start the intake (uvicorn) and wait for its health check."""
        cmd = [sys.executable, "-m", "workflows.cli", "intake", "--port", str(self.intake_port)]
        process = self._start(name, cmd, **env)
        wait_http(f"http://127.0.0.1:{self.intake_port}/healthz", process, self.logs[name])

    def start_worker(self, name: str = "worker", *, concurrency: int = 1, **env: str) -> None:
        """Start a prefork worker (``celery -A workers worker``) and wait until it says it is ready."""
        cmd = [*worker_command(self.env["CELERY_DEFAULT_QUEUE"], concurrency=concurrency), "-n", f"{name}@%h"]
        process = self._start(name, cmd, SERVICE_NAME="tracehook-worker", **env)
        log = self.logs[name]

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            return any(line.get("event", "").endswith(" ready.") for line in self.log_lines(name))

        wait_until(ready, TIMEOUT, f"{name} to be ready")

    def pool_children(self, name: str = "worker") -> list[int]:
        """The pids of a worker's pool processes."""
        pid = self.processes[name].pid
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process's whole session (a worker's parent and its pool), and reap it."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(30)

    def stop(self, name: str, timeout: float = 60.0) -> float:
        """SIGTERM the process and wait for it to exit; returns the seconds it took."""
        process = self.processes[name]
        started = time.monotonic()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(name)
                raise AssertionError(f"{name} did not stop within {timeout}s") from None
        return time.monotonic() - started

    def close(self) -> None:
        """Stop everything still running (kill whatever does not stop)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill(name)

    def headers(self, body: bytes, msg_id: str | None = None) -> dict[str, str]:
        """Signed headers for ``body``."""
        return signed_headers(self.secret, body, msg_id=msg_id)

    def send(
        self, event: dict[str, Any], *, msg_id: str | None = None, timeout: float = 30
    ) -> httpx.Response:
        """Sign and POST one event; the ``webhook-id`` is the event id unless given (senders keep it)."""
        body = json.dumps(event).encode()
        return httpx.post(
            self.intake_url, content=body, headers=self.headers(body, msg_id or event["id"]), timeout=timeout
        )

    def log_lines(self, prefix: str) -> list[dict[str, Any]]:
        """The JSON log lines of every process whose name starts with ``prefix``."""
        lines = []
        for name, path in self.logs.items():
            if not name.startswith(prefix) or not path.exists():
                continue
            for raw in path.read_text(errors="replace").splitlines():
                if raw.startswith("{"):
                    try:
                        lines.append(json.loads(raw))
                    except json.JSONDecodeError:
                        continue
        return lines

    def completions(self) -> collections.Counter[str]:
        """How many times each event's workflow completed, from every worker's log."""
        return collections.Counter(
            str(line.get("event_id"))
            for line in self.log_lines("worker")
            if line.get("event") == "workflow.completed"
        )

    def dead_lettered(self) -> set[str]:
        """The event ids in the dead-letter list."""
        return {entry.event_id for entry in DeadLetters(self.redis).list()}

    def sandbox(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the sandbox."""
        return httpx.request(method, self.sandbox_url + path, timeout=10, **kwargs)

    def notifications(self, event_id: str) -> int:
        """How many notifications the sandbox holds for one event."""
        return int(self.sandbox("GET", "/notifications", params={"event_id": event_id}).json()["count"])


def make_cluster(tmp: Path, redis_url: str, receiver: OtlpReceiver, **env: str) -> Cluster:
    """A cluster's settings (nothing started): own queue, short retries, spans to ``receiver``."""
    secret = new_secret()
    intake_port, sandbox_port = free_port(), free_port()
    base = {
        **stack_environment(
            redis_url=redis_url,
            queue=f"rel-{uuid.uuid4().hex[:8]}",
            secret=secret,
            sandbox_port=sandbox_port,
            otlp_endpoint=receiver.endpoint,
            sandbox_db=tmp / "sandbox.sqlite3",
        ),
        "PYTHONUNBUFFERED": "1",
    }
    base.update(env)
    return Cluster(tmp, redis_url, receiver, base, secret, intake_port, sandbox_port)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP endpoint for this test's processes."""
    with OtlpReceiver() as rcv:
        yield rcv


@pytest.fixture
def cluster_factory(tmp_path: Path, receiver: OtlpReceiver) -> Iterator[Callable[..., Cluster]]:
    """Build clusters (on the given Redis URL) that are closed at the end of the test."""
    made: list[Cluster] = []

    def build(redis_url: str, **env: str) -> Cluster:
        cluster = make_cluster(tmp_path, redis_url, receiver, **env)
        made.append(cluster)
        return cluster

    try:
        yield build
    finally:
        for cluster in made:
            cluster.close()

"""``tracehook demo`` on a machine without Redis: the whole job on its own Redis-protocol server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import ROOT
from workflows.cli._trace_view import completion_of, load_otlp_lines, spans_of_trace


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def _processes_using(folder: Path) -> list[int]:
    """Processes whose environment names ``folder`` (every process the demo starts has it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if str(folder).encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class TestDemoWithoutRedis:
    """With REDIS_URL at a closed port the demo runs on its embedded Redis-protocol server, which is the
    broker and holds the dedupe keys, the source map and the dead letters."""

    def test_demo_prints_one_whole_trace(self, tmp_path: Path) -> None:
        """Exit 0; the printed tree has the intake, worker and sandbox spans of one trace and the
        webhook's receipt → done as its run span recorded it, its log lines follow, the spans file holds
        them, and no process the demo started is left running."""
        folder = tmp_path / "demo"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0",
        }
        env.pop("CELERY_BROKER_URL", None)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "workflows.cli",
                "demo",
                "--events",
                "work_order_created",
                "--dir",
                str(folder),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        assert "an embedded Redis-protocol server at redis://127.0.0.1:" in done.stderr
        assert "an embedded Redis-protocol server" in out
        match = re.search(r"^trace ([0-9a-f]{32})\s+(\d+) spans, 3 services", out, re.MULTILINE)
        assert match, out[-3000:]
        trace_id = match.group(1)
        for expected in (
            "tracehook-intake  webhook.work_order.created",
            "tracehook-worker  run process_webhook_event",
            "tracehook-worker  workflow.work_order.created",
            "rentvine-sandbox  POST /work-orders",
        ):
            assert expected in out
        assert f"log lines of trace {trace_id}" in out
        assert "workflow.completed" in out
        assert "1 webhooks sent, 1 traces complete" in out

        spans = load_otlp_lines((folder / "spans.jsonl").read_text().splitlines())
        services = {row.service for row in spans if row.trace_id == trace_id}
        assert services == {"tracehook-intake", "tracehook-worker", "rentvine-sandbox"}
        done = completion_of(spans_of_trace(spans, trace_id))
        assert done is not None
        assert f"receipt → done {done.ms:.1f} ms: completed, objective met" in out
        assert _processes_using(folder) == []


class TestDemoInterrupted:
    """SIGTERM to the demo while it runs stops every process it started."""

    def test_sigterm_leaves_nothing_running(self, tmp_path: Path) -> None:
        """Once its processes are up, SIGTERM: exit code 130, and none of them is left."""
        folder = tmp_path / "demo"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"}
        demo = subprocess.Popen(
            [sys.executable, "-m", "workflows.cli", "demo", "--dir", str(folder)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while len(_processes_using(folder)) < 3 and time.monotonic() < deadline:
                assert demo.poll() is None, demo.stderr.read() if demo.stderr else ""
                time.sleep(0.05)
            assert len(_processes_using(folder)) >= 3  # sandbox, intake, worker
            demo.send_signal(signal.SIGTERM)
            _, err = demo.communicate(timeout=60)
        finally:
            if demo.poll() is None:
                demo.kill()
        assert 130 == demo.returncode, err
        assert "interrupted" in err
        deadline = time.monotonic() + 10
        while _processes_using(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [] == _processes_using(folder)

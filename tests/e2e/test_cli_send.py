"""``tracehook send`` against the running stack, then ``tracehook logs --trace`` on the worker's log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Stack, fresh

pytestmark = pytest.mark.e2e
TIMEOUT = 60


def tracehook(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_send_then_trace_and_logs(stack: Stack) -> None:
    sent = tracehook(stack, "send", "work_order_created", "--url", stack.intake_url, "--secret", stack.secret)
    assert 0 == sent.returncode, sent.stderr
    match = re.search(r"^trace\s+([0-9a-f]{32})$", sent.stdout, re.MULTILINE)
    assert match, sent.stdout
    trace_id = match.group(1)
    assert "202 queued" in sent.stdout
    assert f"/trace/{trace_id}" in sent.stdout

    spans = stack.receiver.wait_for(
        lambda _: any(s.name == "workflow.work_order.created" for s in stack.receiver.trace(trace_id)),
        timeout=TIMEOUT,
        description=f"the workflow span of trace {trace_id}",
    )
    assert spans
    (root,) = [s for s in stack.receiver.trace(trace_id) if not s.parent_span_id]
    assert ("webhook.work_order.created", "tracehook-intake") == (root.name, root.service_name)

    deadline = time.monotonic() + TIMEOUT
    while True:
        logs = tracehook(stack, "logs", "--trace", trace_id, str(stack.logs["worker"]))
        if logs.returncode == 0 and " workflow.completed " in logs.stdout:
            break
        assert time.monotonic() < deadline, f"no workflow.completed line:\n{logs.stdout}\n{logs.stderr}"
        time.sleep(0.2)
    lines = logs.stdout.splitlines()
    assert all(" tracehook-worker " in line for line in lines), lines
    assert any("workflow.started" in line for line in lines)


def test_fresh_ids_unless_keep_id(stack: Stack, tmp_path: Path) -> None:
    """Two sends of a fixture are two events; two sends of a file with --keep-id are one and a duplicate."""
    args = ("--url", stack.intake_url, "--secret", stack.secret, "--json")
    for _ in range(2):
        sent = tracehook(stack, "send", "payment_received", *args)
        assert 0 == sent.returncode, sent.stderr
        assert "queued" == json.loads(sent.stdout)["status"]
    event = fresh("payment_received")
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    answers = []
    for _ in range(2):
        sent = tracehook(stack, "send", str(path), "--keep-id", *args)
        assert 0 == sent.returncode, sent.stderr
        answers.append(json.loads(sent.stdout))
    assert ["queued", "duplicate"] == [answer["status"] for answer in answers]
    assert {event["id"]} == {answer["event_id"] for answer in answers}

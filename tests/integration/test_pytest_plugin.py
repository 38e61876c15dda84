"""The pytest plugin as a user has it: a separate test project (pytester) on a fresh Celery app of its own,
real prefork workers on the real Redis, and nothing left running after a failing or interrupted test."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REDIS_URL, ROOT

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration
# The user's project has none of the plugins this environment has for tracehook's own tests.
NOT_OURS = ("-p", "no:celery", "-p", "no:asyncio")
# docs/testing.md's example: each fenced block whose first line is a comment naming a file is that file.
EXAMPLE_FILE = re.compile(r"```(?:python|toml)\n# ([\w/.]+)\n(.*?)```", re.DOTALL)

SHOP = """
import os

from celery import Celery

from tracing import instrument_celery, trace_span

app = Celery("shop", broker=os.environ["SHOP_REDIS_URL"], backend=os.environ["SHOP_REDIS_URL"])
instrument_celery(app)


@app.task
def charge(order: str, card: str) -> str:
    with trace_span("charge.card", attributes={"shop.order": order, "card": card}):
        return order
"""

TESTS = """
import json
from pathlib import Path

from tracing import trace_span
from tracing.testing import assert_no_card_numbers, assert_trace, span

import shop

EXPECTED = span("checkout")(
    span("publish shop.charge", kind="PRODUCER")(
        span("run shop.charge", kind="CONSUMER", attributes={"celery.state": "SUCCESS"})("charge.card"),
    ),
)


def record(worker, receiver):
    with Path("records.jsonl").open("a") as out:
        out.write(json.dumps({"queue": worker.queue, "pid": worker.pid, "port": receiver.endpoint}) + "\\n")


def test_checkout_trace(tracehook_receiver, tracehook_producer, tracehook_worker):
    worker = tracehook_worker("shop", concurrency=1)
    record(worker, tracehook_receiver)
    with trace_span("checkout") as root:
        result = shop.charge.apply_async(("o-1", "4111 1111 1111 1111"), queue=worker.queue)
        assert "o-1" == result.get(timeout=30)
    assert_no_card_numbers(assert_trace(tracehook_receiver, root, EXPECTED))


def test_expects_a_server_span(tracehook_receiver, tracehook_producer, tracehook_worker):
    worker = tracehook_worker("shop", concurrency=1)
    record(worker, tracehook_receiver)
    with trace_span("checkout") as root:
        shop.charge.apply_async(("o-2", "none"), queue=worker.queue).get(timeout=30)
    assert_trace(tracehook_receiver, root, span("checkout")(span("publish shop.charge")(
        span("run shop.charge", kind="SERVER")("charge.card"))))
"""

INTERRUPTED = """
import json
from pathlib import Path


def test_interrupted(tracehook_receiver, tracehook_worker):
    worker = tracehook_worker("shop", concurrency=1)
    with Path("records.jsonl").open("a") as out:
        out.write(json.dumps({"queue": worker.queue, "pid": worker.pid, "port": tracehook_receiver.endpoint}) + "\\n")
    raise KeyboardInterrupt
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project: a Celery app of its own (``shop``) on the test Redis, opted in to the plugin."""
    monkeypatch.setenv("SHOP_REDIS_URL", REDIS_URL)
    pytester.makepyfile(shop=SHOP)
    pytester.makeini("[pytest]\ntracehook = true\n")
    return pytester


def leftovers(project: pytest.Pytester) -> tuple[list[str], list[int]]:
    """Poll with a deadline until no worker of the records runs and no receiver port answers; return what
    is still there at the deadline: (the queues of live workers, the open receiver ports)."""
    lines = (project.path / "records.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines if line]
    assert parsed, "the project's tests recorded no worker"
    deadline = time.monotonic() + 15
    while True:
        queues = [item["queue"] for item in parsed if processes_mentioning(item["queue"])]
        ports = sorted({int(item["port"].rsplit(":", 1)[1]) for item in parsed if listening(item["port"])})
        if (not queues and not ports) or time.monotonic() > deadline:
            return queues, ports
        time.sleep(0.05)


def processes_mentioning(text: str) -> list[int]:
    """The live processes whose command line holds ``text`` (a worker's queue is in its ``-Q`` and ``-n``)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append(int(entry.name))
    return found


def listening(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


class TestPlugin:
    """A passing and a failing trace assertion in the user's project; then no worker and no receiver."""

    def test_pass_and_fail(self, project: pytest.Pytester) -> None:
        """The right tree passes; the wrong one fails with the actual tree as tracehook trace prints it,
        and the worker's log; every worker and the receiver are gone after the session."""
        project.makepyfile(test_shop=TESTS)
        result = project.runpytest(*NOT_OURS)
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*AssertionError: trace * is not the expected tree: 'checkout' > 'publish shop.charge' > "
                "'run shop.charge': kind CONSUMER, not SERVER",
                "*expected (exactly):",
                "*actual, as `tracehook trace` prints it:",
                "*trace *  4 spans, 2 services, * ms",
                "*test-producer  checkout *",
                "*shop-worker  run shop.charge * consumer  attempt 1",
                "*tracehook worker tracehook-* log*",
                "*ready.*",
            ]
        )
        assert ([], []) == leftovers(project)

    def test_interrupted(self, project: pytest.Pytester) -> None:
        """Ctrl-C in a test (KeyboardInterrupt) still stops its worker and the receiver."""
        project.makepyfile(test_interrupted=INTERRUPTED)
        recorder = project.inline_run(*NOT_OURS, no_reraise_ctrlc=True)
        assert pytest.ExitCode.INTERRUPTED == recorder.ret
        assert ([], []) == leftovers(project)


class TestOptIn:
    """Installed, the plugin changes nothing until the session opts in."""

    def test_off_until_opted_in(self, pytester: pytest.Pytester) -> None:
        """Without the ini key or --tracehook, the fixtures refuse and say how to opt in; nothing of the
        plugin is autouse."""
        pytester.makepyfile(
            """
            def test_nothing_autouse(request):
                assert request.config.pluginmanager.has_plugin("tracehook")
                assert not [name for name in request.fixturenames if name.startswith("tracehook")]

            def test_receiver(tracehook_receiver):
                pass
            """
        )
        result = pytester.runpytest(*NOT_OURS)
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*tracehook's fixtures are off in this test session: opt in with*"])
        result = pytester.runpytest(*NOT_OURS, "--tracehook")
        result.assert_outcomes(passed=2)


class TestDocumentedExample:
    """docs/testing.md's complete example passes as written."""

    def test_example(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        """Its app, its test and its configuration, in a project of their own: one test, passed."""
        files = dict(EXAMPLE_FILE.findall((ROOT / "docs" / "testing.md").read_text()))
        assert {"pyproject.toml", "shop/tasks.py", "tests/test_traces.py"} == set(files)
        for name, text in files.items():
            path = pytester.path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (pytester.path / "shop" / "__init__.py").write_text("")
        monkeypatch.setenv("SHOP_BROKER_URL", REDIS_URL)
        result = pytester.runpytest(*NOT_OURS)
        result.assert_outcomes(passed=1)

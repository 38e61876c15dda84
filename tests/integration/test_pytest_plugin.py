"""The pytest plugin as a user has it: a separate test project (pytester), run by its own pytest process, on
a fresh Celery app of its own, real prefork workers on the real Redis; nothing left running after a
failing or interrupted test.

The projects' own conftest checks what is left at the end of their session, after every fixture's
teardown and before their process exits: a worker outliving its test would be stopped at that exit (by the
kernel, on Linux), which would hide the fault from a check made afterwards.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.conftest import REDIS_URL, ROOT

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration
# The user's project has none of the plugins this environment has for tracehook's own tests.
NOT_OURS = ("-p", "no:celery", "-p", "no:asyncio")
RUN_TIMEOUT_S = 240
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

CONFTEST = """
import json
import socket
import time
from pathlib import Path

import pytest

RECORDS = Path("records.jsonl")


@pytest.fixture
def record(tracehook_receiver):
    def record(worker):
        with RECORDS.open("a") as out:
            out.write(json.dumps({"queue": worker.queue, "endpoint": tracehook_receiver.endpoint}) + "\\n")
    return record


def recorded():
    return [json.loads(line) for line in RECORDS.read_text().splitlines()] if RECORDS.exists() else []


def running(text):
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in command and state != "Z":
            return True
    return False


def listening(endpoint):
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def left(receivers):
    deadline = time.monotonic() + 15
    while True:
        workers = sorted({item["queue"] for item in recorded() if running(item["queue"])})
        ports = sorted({item["endpoint"] for item in recorded() if receivers and listening(item["endpoint"])})
        if not (workers or ports) or time.monotonic() > deadline:
            return {"records": len(recorded()), "workers": workers, "receivers": ports}
        time.sleep(0.05)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    Path("left.json").write_text(json.dumps(left(receivers=True)))
"""

TESTS = """
from conftest import left
from tracing import trace_span
from tracing.testing import assert_no_card_numbers, assert_trace, span

import shop

EXPECTED = span("checkout")(
    span("publish shop.charge", kind="PRODUCER")(
        span("run shop.charge", kind="CONSUMER", attributes={"celery.state": "SUCCESS"})("charge.card"),
    ),
)


def test_checkout_trace(tracehook_receiver, tracehook_producer, tracehook_worker, record):
    worker = tracehook_worker("shop", concurrency=1)
    record(worker)
    with trace_span("checkout") as root:
        result = shop.charge.apply_async(("o-1", "4111 1111 1111 1111"), queue=worker.queue)
        assert "o-1" == result.get(timeout=30)
    assert_no_card_numbers(assert_trace(tracehook_receiver, root, EXPECTED))


def test_expects_a_server_span(tracehook_receiver, tracehook_producer, tracehook_worker, record):
    worker = tracehook_worker("shop", concurrency=1)
    record(worker)
    with trace_span("checkout") as root:
        shop.charge.apply_async(("o-2", "none"), queue=worker.queue).get(timeout=30)
    assert_trace(tracehook_receiver, root, span("checkout")(span("publish shop.charge")(
        span("run shop.charge", kind="SERVER")("charge.card"))))


def test_workers_of_the_tests_before_are_gone():
    assert {"records": 2, "workers": [], "receivers": []} == left(receivers=False)
"""

INTERRUPTED = """
def test_interrupted(tracehook_worker, record):
    record(tracehook_worker("shop", concurrency=1))
    raise KeyboardInterrupt
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project: a Celery app of its own (``shop``) on the test Redis, opted in to the plugin."""
    monkeypatch.setenv("SHOP_REDIS_URL", REDIS_URL)
    pytester.makepyfile(shop=SHOP, conftest=CONFTEST)
    pytester.makeini("[pytest]\ntracehook = true\n")
    return pytester


def left_at_the_end(project: pytest.Pytester) -> dict[str, object]:
    """What the project's session found running after its teardown: workers, receivers."""
    found: dict[str, object] = json.loads((project.path / "left.json").read_text())
    return found


class TestPlugin:
    """A passing and a failing trace assertion in the user's project; then no worker and no receiver."""

    def test_pass_and_fail(self, project: pytest.Pytester) -> None:
        """The right tree passes; the wrong one fails with the actual tree as tracehook trace prints it,
        and the worker's log; its worker is gone before the next test, the receiver after the session."""
        project.makepyfile(test_shop=TESTS)
        result = project.runpytest_subprocess(*NOT_OURS, timeout=RUN_TIMEOUT_S)
        result.assert_outcomes(passed=2, failed=1)
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
        assert {"records": 2, "workers": [], "receivers": []} == left_at_the_end(project)

    def test_interrupted(self, project: pytest.Pytester) -> None:
        """Ctrl-C in a test (KeyboardInterrupt) still stops its worker and the receiver."""
        project.makepyfile(test_interrupted=INTERRUPTED)
        result = project.runpytest_subprocess(*NOT_OURS, timeout=RUN_TIMEOUT_S)
        assert pytest.ExitCode.INTERRUPTED == result.ret
        assert {"records": 1, "workers": [], "receivers": []} == left_at_the_end(project)


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
        result = pytester.runpytest_subprocess(*NOT_OURS, timeout=RUN_TIMEOUT_S)
        result.assert_outcomes(passed=1)

"""A user's own root handler in a prefork worker child gets every line: once, correlated, scrubbed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import user_logging_app as user
from tests.integration.conftest import Worker, start_worker
from tests.otlp_receiver import OtlpReceiver
from tracing import trace_span

pytestmark = pytest.mark.integration
TIMEOUT = 60
RUN_CHARGE = "run tests.integration.user_logging_app.charge"


@pytest.fixture(scope="module")
def user_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file the user's FileHandler writes in the worker child."""
    return tmp_path_factory.mktemp("user-log") / "user.log"


@pytest.fixture(scope="module")
def worker(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory, user_log: Path
) -> Iterator[Worker]:
    """One prefork worker (1 child) on the user's app."""
    started = start_worker(
        receiver,
        tmp_path_factory.mktemp("worker"),
        app="tests.integration.user_logging_app",
        concurrency=1,
        USER_LOG_FILE=str(user_log),
    )
    try:
        yield started
    finally:
        started.stop()


def lines_with(path: Path, needle: str, count: int, timeout: float = TIMEOUT) -> list[str]:
    """Poll with a deadline until ``path`` has ``count`` lines containing ``needle``; return them all."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = [line for line in text.splitlines() if needle in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


class TestUserRootHandler:
    """A FileHandler the user adds to the root logger in the worker child, after tracehook's set-up."""

    def test_structlog_and_stdlib_lines(self, worker: Worker, producer: OtlpReceiver, user_log: Path) -> None:
        """The task's structlog line arrives once, in the run span's trace and scrubbed; so does its stdlib line."""
        with trace_span("caller"):
            result = user.charge.apply_async(("ord_1",), queue=worker.queue)
        assert "ord_1" == result.get(timeout=TIMEOUT)
        (run,) = producer.wait_for_spans(name=RUN_CHARGE, timeout=TIMEOUT)

        structlog_lines = lines_with(user_log, '"event": "charge.started"', 1)
        stdlib_lines = lines_with(user_log, "card on file", 1)

        (line,) = structlog_lines
        level, name, trace_id, span_id, message = line.split("|", 4)
        fields = json.loads(message)
        assert ("INFO", "user.tasks") == (level, name)
        assert (run.trace_id, run.span_id) == (trace_id, span_id)
        assert (run.trace_id, run.span_id, "ord_1") == (
            fields["trace_id"],
            fields["span_id"],
            fields["order_id"],
        )
        assert "**** **** **** 1111" == fields["card"]
        assert [
            f"WARNING|user.payments|{run.trace_id}|{run.span_id}|card on file ************1111"
        ] == stdlib_lines
        everything = user_log.read_text() + worker.log
        assert user.CARD not in everything
        assert user.CARD.replace(" ", "") not in everything
        assert 1 == worker.log.count('"event": "charge.started"')

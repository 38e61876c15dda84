"""A user's own provider and exporters behind instrument_celery: every exporter gets scrubbed spans."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.integration.conftest import REDIS_URL, Worker, start_worker
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration
APP = "tests.integration.user_apps.provider_scrub_app"
CARD_DIGITS = "4111111111111111"
MASKED = "**** **** **** 1111"
TIMEOUT = 60


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file the user's own exporter writes its spans to, one JSON object a line."""
    return tmp_path_factory.mktemp("user-spans") / "spans.jsonl"


@pytest.fixture(scope="module")
def worker(
    receiver: OtlpReceiver, spans_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A prefork worker (2 children) on the user's app."""
    started = start_worker(
        receiver, tmp_path_factory.mktemp("worker"), app=APP, USER_SPANS_FILE=str(spans_file)
    )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def client() -> Celery:
    """The user's web process: publishes by name, no tracing of its own."""
    return Celery("user_shop_client", broker=REDIS_URL, backend=REDIS_URL)


def spans_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_order(path: Path, order: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Poll the file with a deadline until the order's charge.card span and its task's run span are in it;
    returns those two spans."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = spans_in(path)
        card = [s for s in spans if s["name"] == "charge.card" and s["attributes"]["shop.order"] == order]
        if card:
            trace_id = card[0]["context"]["trace_id"]
            run = [
                s for s in spans if s["context"]["trace_id"] == trace_id and s["kind"] == "SpanKind.CONSUMER"
            ]
            if run:
                return [run[0], card[0]]
        time.sleep(0.05)
    raise AssertionError(f"no spans of {order} in {path}: {[span['name'] for span in spans_in(path)]}")


def run_and_card(spans: list[ReceivedSpan], order: str) -> tuple[ReceivedSpan, ReceivedSpan] | None:
    """The order's charge.card span and the run span it is a child of, once both were received."""
    for card in spans:
        if card.attributes.get("shop.order") == order:
            for run in spans:
                if run.span_id == card.parent_span_id:
                    return run, card
    return None


class TestUserExportersScrubbed:
    """A task's card number and API key reach the user's own exporters masked, never as written."""

    def test_file_exporter(self, worker: Worker, client: Celery, spans_file: Path) -> None:
        """The user's SimpleSpanProcessor(ConsoleSpanExporter) file holds the masked card only."""
        result = client.send_task(f"{APP}.charge", ("order-1",), queue=worker.queue)
        assert "order-1" == result.get(timeout=TIMEOUT)
        run, card = wait_for_order(spans_file, "order-1")
        text = spans_file.read_text()
        assert CARD_DIGITS not in text.replace(" ", "")
        assert "sk_live_0123" not in text
        assert f"paid with {MASKED}" == run["attributes"]["payment.note"]
        assert "[REDACTED]" == card["attributes"]["vendor.api_key"]
        assert f"declined {MASKED}" == card["status"]["description"]
        events = {event["name"]: event["attributes"] for event in card["events"]}
        assert {"card": MASKED} == events["card.checked"]
        assert f"first attempt declined for {MASKED}" == events["exception"]["exception.message"]

    def test_otlp_exporter(self, worker: Worker, client: Celery, receiver: OtlpReceiver) -> None:
        """The user's batch exporter, added after protect_provider, sends the masked card only."""
        result = client.send_task(f"{APP}.charge", ("order-2",), queue=worker.queue)
        assert "order-2" == result.get(timeout=TIMEOUT)
        spans = receiver.wait_for(
            lambda spans: bool(run_and_card(spans, "order-2")),
            timeout=TIMEOUT,
            description="the user's run and charge.card spans of order-2",
        )
        run, card = run_and_card(spans, "order-2")
        assert f"paid with {MASKED}" == run.attributes["payment.note"]
        assert "[REDACTED]" == card.attributes["vendor.api_key"]
        assert f"declined {MASKED}" == card.status_message
        assert CARD_DIGITS not in repr(receiver.spans).replace(" ", "")

"""``tracehook doctor`` against real endpoints: the suite's OTLP receiver, a Jaeger query API over what that
receiver got (Jaeger cannot run here), the real Redis, and closed ports."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REDIS_URL
from tests.jaeger_api import JaegerQueryApi
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[2]


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def _v3_answer(spans: list[ReceivedSpan]) -> dict[str, Any]:
    """Jaeger v2's ``/api/v3/traces`` answer: OTLP/JSON with base64 ids, wrapped in ``result``."""
    return {
        "result": {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": span.service_name}}]
                    },
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": _b64(span.trace_id),
                                    "spanId": _b64(span.span_id),
                                    "name": span.name,
                                    "startTimeUnixNano": str(span.start_ns),
                                    "endTimeUnixNano": str(span.end_ns),
                                }
                            ]
                        }
                    ],
                }
                for span in spans
            ]
        }
    }


def query_api(receiver: OtlpReceiver) -> JaegerQueryApi:
    """Jaeger's query API over the spans ``receiver`` got (Jaeger stores what its OTLP port receives)."""

    def lookup(trace_id: str) -> dict[str, Any] | None:
        spans = receiver.trace(trace_id)
        return _v3_answer(spans) if spans else None

    return JaegerQueryApi(lookup, lambda: sorted({span.service_name for span in receiver.spans})).start()


@pytest.fixture
def jaeger() -> Iterator[tuple[OtlpReceiver, JaegerQueryApi]]:
    receiver = OtlpReceiver().start()
    query = query_api(receiver)
    yield receiver, query
    query.stop()
    receiver.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tracehook doctor`` as a user would, in a clean environment plus ``env``."""
    base = {
        key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "JAEGER_", "TRACE_"))
    }
    base.pop("WEBHOOK_SECRET", None)
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", "doctor", "--timeout", "2", *args],
        env={**base, "PYTHONPATH": str(ROOT), "REDIS_URL": REDIS_URL, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestDoctorHealthy:
    """With everything up and set, every check passes and the probe span is read back."""

    def test_all_ok(self, jaeger: tuple[OtlpReceiver, JaegerQueryApi]) -> None:
        """Exit 0; the probe span reached the receiver and was read back through the query API."""
        receiver, query = jaeger
        done = doctor(
            {
                "WEBHOOK_SECRET": "a-shared-secret",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "JAEGER_QUERY_URL": query.url,
            }
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "FAIL" not in done.stdout
        probes = [span for span in receiver.spans if span.service_name == "tracehook-doctor"]
        assert len(probes) == 1
        assert f"probe span (trace {probes[0].trace_id}) readable" in done.stdout


class TestDoctorFindsProblems:
    """Each problem is named with its fix, and the exit code is 1."""

    def test_bad_settings(self, jaeger: tuple[OtlpReceiver, JaegerQueryApi]) -> None:
        """Sampling rate 0 and no webhook secret are both reported, with what to set."""
        receiver, query = jaeger
        done = doctor(
            {
                "TRACE_SAMPLING_RATE": "0",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "JAEGER_QUERY_URL": query.url,
            }
        )
        assert done.returncode == 1
        assert "FAIL  sampling" in done.stdout
        assert "set TRACE_SAMPLING_RATE between 0.1 and 1.0" in done.stdout
        assert "FAIL  webhook secret" in done.stdout
        # Where the intake reads it, not only compose's .env.
        assert "export WEBHOOK_SECRET=" in done.stdout
        assert "WEBHOOK_SECRET_FILE" in done.stdout
        assert ".env.example" in done.stdout

    def test_retired_jaeger_endpoint(self) -> None:
        """A JAEGER_ENDPOINT on the retired Thrift port stops the checks with the fix (OTLP 4318)."""
        done = doctor({"WEBHOOK_SECRET": "s", "JAEGER_ENDPOINT": "http://jaeger:14268/api/traces"})
        assert done.returncode == 1
        assert "FAIL  settings" in done.stdout
        assert "4318" in done.stdout

    def test_nothing_answers(self) -> None:
        """Redis, the OTLP endpoint and Jaeger at closed ports: each is reported unreachable with its fix,
        and the round trip is skipped rather than waited for."""
        port = _closed_port()
        done = doctor(
            {
                "WEBHOOK_SECRET": "s",
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "JAEGER_QUERY_URL": f"http://127.0.0.1:{port}",
            }
        )
        assert done.returncode == 1
        for check in ("redis", "otlp endpoint", "jaeger query"):
            assert f"FAIL  {check}" in done.stdout
        assert "start Redis" in done.stdout
        assert "OTLP/HTTP port 4318" in done.stdout
        # Jaeger 2.11.0's built-in config opens Thrift on 14268; only ours leaves it out.
        assert "no Thrift port" not in done.stdout
        assert "deploy/jaeger/config.yaml does not" in done.stdout
        assert "skip  round trip" in done.stdout
        assert "3 problem(s) found" in done.stderr

    def test_spans_not_readable(self, jaeger: tuple[OtlpReceiver, JaegerQueryApi]) -> None:
        """Spans accepted by one endpoint but the query API of another Jaeger: the round trip fails."""
        receiver, _ = jaeger
        other = OtlpReceiver().start()
        query = query_api(other)
        try:
            done = doctor(
                {
                    "WEBHOOK_SECRET": "s",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "JAEGER_QUERY_URL": query.url,
                },
                "--wait",
                "1",
            )
        finally:
            query.stop()
            other.stop()
        assert done.returncode == 1
        assert "FAIL  round trip" in done.stdout
        assert "different Jaegers" in done.stdout


class TestDoctorBroker:
    """A broker apart from Redis (RabbitMQ) is checked too; the Redis check covers it otherwise."""

    def test_rabbitmq_answers(self) -> None:
        """``amqp://`` on a RabbitMQ that answers: ok (skipped where none runs)."""
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", 5672)) != 0:
                pytest.skip("no RabbitMQ answers on 127.0.0.1:5672")
        done = doctor({"WEBHOOK_SECRET": "s", "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"})
        assert "ok    broker" in done.stdout, done.stdout

    def test_broker_down(self) -> None:
        """``amqp://`` at a closed port: reported with what to do."""
        done = doctor(
            {"WEBHOOK_SECRET": "s", "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"}
        )
        assert done.returncode == 1
        assert "FAIL  broker" in done.stdout
        assert "start the broker" in done.stdout

"""The ``tracehook`` tools: ``trace`` against a local stand-in of Jaeger's query API and against span files,
``logs --trace`` on mixed files, ``send`` against a local intake stand-in and against nothing."""

from __future__ import annotations

import base64
import io
import itertools
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.jaeger_api import JaegerQueryApi
from tracing import SettingsError
from tracing.exporters import OtlpJsonFileExporter
from workflows.cli import EXIT_CODES, _trace_view, main
from workflows.signing import SignatureError, StandardWebhooksVerifier

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SECRET = "whsec_" + base64.b64encode(b"unit-test-secret-0123456789abcdef").decode()

# span ids (hex) of the recorded trace
ROOT_ID, PUBLISH_ID, RUN_ID, WORKFLOW_ID = (
    "00f067aa0ba902b7",
    "1a2b3c4d5e6f7081",
    "2b3c4d5e6f708192",
    "3c4d5e6f708192a3",
)
STEP_ID, CLIENT_ID, SERVER_ID, BATCH_ID = (
    "4d5e6f708192a3b4",
    "5e6f708192a3b4c5",
    "6f708192a3b4c5d6",
    "708192a3b4c5d6e7",
)
T0 = 1_764_064_800_000_000_000  # 2025-11-25T10:00:00Z in ns


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def span(
    span_id: str,
    parent: str,
    name: str,
    kind: int,
    start_ms: float,
    end_ms: float,
    attributes: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "traceId": b64(TRACE_ID),
        "spanId": b64(span_id),
        "parentSpanId": b64(parent) if parent else "",
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(T0 + int(start_ms * 1_000_000)),
        "endTimeUnixNano": str(T0 + int(end_ms * 1_000_000)),
        "attributes": [attr(k, v) for k, v in (attributes or {}).items()],
        "status": status or {},
    }


def resource(service: str, *spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": {"attributes": [attr("service.name", service), attr("telemetry.sdk.language", "python")]},
        "scopeSpans": [{"scope": {"name": "tracehook"}, "spans": list(spans)}],
    }


def recorded_jaeger_answer() -> dict[str, Any]:
    """What Jaeger's /api/v3/traces/{id} answers: OTLP/JSON in "result"; ids base64 (older gateways)."""
    return {
        "result": {
            "resourceSpans": [
                # Jaeger groups by resource; spans need not come in tree order.
                resource(
                    "tracehook-worker",
                    span(
                        STEP_ID,
                        WORKFLOW_ID,
                        "workflow.step.notify_vendor",
                        1,
                        40,
                        1380,
                        {"slow": True},
                    ),
                    span(
                        RUN_ID,
                        PUBLISH_ID,
                        "celery.run workers.process_event",
                        5,
                        20,
                        1500,
                        {"celery.attempt": 2, "celery.task_name": "workers.process_event"},
                    ),
                    span(
                        WORKFLOW_ID,
                        RUN_ID,
                        "workflow.work_order.created",
                        1,
                        30,
                        1490,
                        {"workflow.status": "completed"},
                    ),
                    span(
                        CLIENT_ID,
                        STEP_ID,
                        "rentvine.vendor.notify",
                        3,
                        50,
                        1370,
                        status={"code": 2, "message": "HTTPStatusError: 503"},
                    ),
                    span(
                        BATCH_ID,
                        WORKFLOW_ID,
                        "batch.update_work_orders",
                        1,
                        1385,
                        1480,
                        {"batch.items_total": 25, "batch.items_failed": 2},
                    ),
                ),
                resource(
                    "tracehook-intake",
                    span(
                        ROOT_ID,
                        "",
                        "webhook.work_order.created",
                        2,
                        0,
                        12,
                        {"http.response.status_code": 202},
                    ),
                    span(PUBLISH_ID, ROOT_ID, "celery.publish workers.process_event", 4, 5, 10),
                ),
                resource("rentvine-sandbox", span(SERVER_ID, CLIENT_ID, "POST /vendors/notify", 2, 60, 1360)),
            ]
        }
    }


@pytest.fixture
def jaeger() -> Iterator[JaegerQueryApi]:
    traces = {TRACE_ID: recorded_jaeger_answer(), "0" * 31 + "1": {"result": {"resourceSpans": []}}}
    server = JaegerQueryApi(traces.get).start()
    yield server
    server.stop()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def indent_of(lines: list[str], name: str) -> tuple[int, int]:
    """(line number, column) of the one line showing span ``name``."""
    found = [(i, line.index(name)) for i, line in enumerate(lines) if f"  {name} " in line]
    assert 1 == len(found), (name, lines)
    return found[0]


class TestTraceFromJaeger:
    def test_tree_shows_services_and_nesting(
        self, jaeger: JaegerQueryApi, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert 0 == main(["trace", TRACE_ID, "--jaeger", jaeger.url])
        assert [f"/api/v3/traces/{TRACE_ID}"] == jaeger.paths
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[0].startswith(f"trace {TRACE_ID}  8 spans, 3 services")
        chain = [
            "webhook.work_order.created",
            "celery.publish workers.process_event",
            "celery.run workers.process_event",
            "workflow.work_order.created",
            "workflow.step.notify_vendor",
            "rentvine.vendor.notify",
            "POST /vendors/notify",
        ]
        positions = [indent_of(lines, name) for name in chain]
        # each span one level below the one before it, on a later line
        for (row, column), (next_row, next_column) in itertools.pairwise(positions):
            assert next_row > row
            assert next_column == column + 4
        # the batch starts after the step: next sibling of the step, under the workflow
        batch_row, batch_column = indent_of(lines, "batch.update_work_orders")
        assert batch_column == positions[4][1]
        assert batch_row > positions[6][0]
        for service in ("tracehook-intake", "tracehook-worker", "rentvine-sandbox"):
            assert service in out
        by_name = {name: lines[row] for name, (row, _) in zip(chain, positions, strict=True)}
        assert "ERROR HTTPStatusError: 503" in by_name["rentvine.vendor.notify"]
        assert "slow" in by_name["workflow.step.notify_vendor"]
        assert "slow" not in by_name["workflow.work_order.created"]
        assert "attempt 2" in by_name["celery.run workers.process_event"]
        assert "items 25 failed 2" in lines[batch_row]
        assert "1320.0 ms" in by_name["rentvine.vendor.notify"]
        # waterfall: the root is short and at the start; the batch near the end
        root_bar = by_name["webhook.work_order.created"].split("│")[1]
        batch_bar = lines[batch_row].split("│")[1]
        assert 30 == len(root_bar) == len(batch_bar)
        assert root_bar.startswith("█")
        assert root_bar.endswith("·")
        assert batch_bar.startswith("·")
        assert batch_bar.endswith("█")

    def test_json_has_hex_ids(self, jaeger: JaegerQueryApi, capsys: pytest.CaptureFixture[str]) -> None:
        assert 0 == main(["trace", TRACE_ID, "--jaeger", jaeger.url, "--json"])
        spans = json.loads(capsys.readouterr().out)
        assert 8 == len(spans)
        assert {TRACE_ID} == {s["trace_id"] for s in spans}
        by_id = {s["span_id"]: s for s in spans}
        assert {ROOT_ID, PUBLISH_ID, RUN_ID, WORKFLOW_ID, STEP_ID, CLIENT_ID, SERVER_ID, BATCH_ID} == set(
            by_id
        )
        assert "" == by_id[ROOT_ID]["parent_span_id"]
        assert CLIENT_ID == by_id[SERVER_ID]["parent_span_id"]
        assert ("SERVER", "rentvine-sandbox") == (by_id[SERVER_ID]["kind"], by_id[SERVER_ID]["service"])
        assert "ERROR" == by_id[CLIENT_ID]["status"]
        assert True is by_id[STEP_ID]["attributes"]["slow"]
        assert 25 == by_id[BATCH_ID]["attributes"]["batch.items_total"]
        assert 1320.0 == by_id[CLIENT_ID]["duration_ms"]
        assert [s["start_ns"] for s in spans] == sorted(s["start_ns"] for s in spans)
        assert set(spans[0]) == {
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "service",
            "kind",
            "start_ns",
            "end_ns",
            "duration_ms",
            "status",
            "status_message",
            "attributes",
        }

    def test_not_found(self, jaeger: JaegerQueryApi, capsys: pytest.CaptureFixture[str]) -> None:
        missing = "f" * 32
        assert 1 == main(["trace", missing, "--jaeger", jaeger.url])
        err = capsys.readouterr().err
        assert f"trace {missing} not found" in err
        assert jaeger.url in err

    def test_empty_answer_is_not_found(
        self, jaeger: JaegerQueryApi, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert 1 == main(["trace", "0" * 31 + "1", "--jaeger", jaeger.url])
        assert "not found" in capsys.readouterr().err

    def test_nothing_listening(self, capsys: pytest.CaptureFixture[str]) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        assert 2 == main(["trace", TRACE_ID, "--jaeger", url])
        err = capsys.readouterr().err
        assert f"cannot reach Jaeger's query API at {url}" in err
        assert "--file" in err

    def test_jaeger_query_url_from_environment(
        self, jaeger: JaegerQueryApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("JAEGER_QUERY_URL", jaeger.url + "/")
        assert 0 == main(["trace", TRACE_ID.upper(), "--json"])
        assert 8 == len(json.loads(capsys.readouterr().out))

    def test_bad_trace_id(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert 1 == main(["trace", "not-a-trace", "--jaeger", "http://127.0.0.1:9"])
        assert "32 hex digits" in capsys.readouterr().err

    def test_jaeger_answer_saved_as_a_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        saved = tmp_path / "trace.json"
        saved.write_text(json.dumps(recorded_jaeger_answer(), indent=2))
        assert 0 == main(["trace", TRACE_ID, "--file", str(saved), "--json"])
        assert 8 == len(json.loads(capsys.readouterr().out))


class TestTraceView:
    def test_ids_hex_or_base64(self) -> None:
        assert TRACE_ID == _trace_view.normalise_id(b64(TRACE_ID), 16)
        assert TRACE_ID == _trace_view.normalise_id(TRACE_ID.upper(), 16)
        assert ROOT_ID == _trace_view.normalise_id(b64(ROOT_ID), 8)
        assert "" == _trace_view.normalise_id("", 8)
        with pytest.raises(ValueError, match="neither hex nor base64"):
            _trace_view.normalise_id("abc", 16)

    def test_jaeger_v2_hex_shape(self) -> None:
        """Jaeger v2's gateway writes hex ids, numeric enums and string nanoseconds (its GetTrace snapshot)."""
        payload = {
            "result": {
                "resourceSpans": [
                    {
                        "resource": {},
                        "scopeSpans": [
                            {
                                "scope": {},
                                "spans": [
                                    {
                                        "kind": 2,
                                        "name": "foobar",
                                        "spanId": "0000000000000002",
                                        "status": {"code": 2},
                                        "traceId": "00000000000000000000000000000001",
                                    }
                                ],
                            }
                        ],
                    }
                ]
            }
        }
        (row,) = _trace_view.load_jaeger_v3(payload)
        assert ("0" * 31 + "1", "0" * 15 + "2", "", "SERVER", "ERROR") == (
            row.trace_id,
            row.span_id,
            row.parent_span_id,
            row.kind,
            row.status,
        )

    def test_enum_names(self) -> None:
        payload = {"resourceSpans": [resource("svc", span(ROOT_ID, "", "x", 1, 0, 1))]}
        payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(
            {"kind": "SPAN_KIND_CONSUMER", "status": {"code": "STATUS_CODE_OK"}}
        )
        (row,) = _trace_view.load_jaeger_v3(payload)
        assert ("CONSUMER", "OK", "svc") == (row.kind, row.status, row.service)

    def test_unknown_shape(self) -> None:
        with pytest.raises(ValueError, match="resourceSpans"):
            _trace_view.load_jaeger_v3({"data": []})


def write_real_spans(path: Path) -> str:
    """Spans of two services, exported by the real OtlpJsonFileExporter; returns the trace id."""
    exporter = OtlpJsonFileExporter(path)
    providers = []
    for service in ("tracehook-intake", "tracehook-worker"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
    intake, worker = (p.get_tracer("test") for p in providers)
    with (
        intake.start_as_current_span("webhook.payment.failed", kind=SpanKind.SERVER) as root,
        intake.start_as_current_span("celery.publish", kind=SpanKind.PRODUCER),
        worker.start_as_current_span("celery.run", kind=SpanKind.CONSUMER, attributes={"celery.attempt": 3}),
        worker.start_as_current_span("workflow.payment.failed") as workflow,
    ):
        time.sleep(0.002)
        workflow.set_status(Status(StatusCode.ERROR, "card declined"))
    # a second trace in the same file, to be left out
    with intake.start_as_current_span("webhook.other"):
        pass
    for provider in providers:
        provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


class TestTraceFromFile:
    def test_otlp_json_lines(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "spans.jsonl"
        trace_id = write_real_spans(path)
        assert len(path.read_text().splitlines()) >= 5
        assert 0 == main(["trace", trace_id, "--file", str(path)])
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"trace {trace_id}  4 spans, 2 services")
        chain = ["webhook.payment.failed", "celery.publish", "celery.run", "workflow.payment.failed"]
        columns = [indent_of(lines, name)[1] for name in chain]
        assert [columns[0] + 4 * i for i in range(4)] == columns
        assert "webhook.other" not in "\n".join(lines)
        (workflow,) = [line for line in lines if "workflow.payment.failed" in line]
        assert "ERROR card declined" in workflow
        assert "tracehook-worker" in workflow
        (run,) = [line for line in lines if "celery.run" in line]
        assert "attempt 3" in run

    def test_otlp_json_lines_as_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "spans.jsonl"
        trace_id = write_real_spans(path)
        assert 0 == main(["trace", trace_id, "--file", str(path), "--json"])
        spans = json.loads(capsys.readouterr().out)
        assert ["webhook.payment.failed", "celery.publish", "celery.run", "workflow.payment.failed"] == [
            s["name"] for s in spans
        ]
        assert all(len(s["span_id"]) == 16 and int(s["span_id"], 16) for s in spans)
        assert spans[0]["span_id"] == spans[1]["parent_span_id"]

    def test_garbage_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "spans.jsonl"
        path.write_text("not json\nat all\n")
        assert 1 == main(["trace", TRACE_ID, "--file", str(path)])
        assert "neither OTLP-JSON lines nor a Jaeger v3 answer" in capsys.readouterr().err

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert 1 == main(["trace", TRACE_ID, "--file", str(tmp_path / "nope.jsonl")])
        assert "cannot read" in capsys.readouterr().err


def log_line(trace_id: str, event: str, **fields: Any) -> str:
    record = {
        "event": event,
        "level": "info",
        "logger": "workflows.engine",
        "timestamp": "2026-11-25T10:00:00.123456Z",
        "service": "tracehook-worker",
        **fields,
        "trace_id": trace_id,
        "span_id": "00f067aa0ba902b7",
    }
    return json.dumps(record)


MIXED_LOG = "\n".join(
    [
        "celery@host ready.",
        log_line(TRACE_ID, "workflow.started", event_id="evt_1", priority="normal"),
        log_line("a" * 32, "workflow.started", event_id="evt_2"),
        "{ not json at all",
        "[2026-11-25 10:00:00,000: INFO/MainProcess] Task workers.process_event received",
        log_line(TRACE_ID, "workflow.completed", event_id="evt_1", duration_ms=12.5, note="two words"),
        json.dumps({"event": "no trace here", "level": "info"}),
        "",
    ]
)


class TestLogs:
    def test_compact(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "worker.log"
        path.write_text(MIXED_LOG)
        assert 0 == main(["logs", "--trace", TRACE_ID, str(path)])
        lines = capsys.readouterr().out.splitlines()
        assert [
            "2026-11-25T10:00:00.123456Z info    tracehook-worker workflow.started event_id=evt_1 "
            "priority=normal span_id=00f067aa0ba902b7",
            "2026-11-25T10:00:00.123456Z info    tracehook-worker workflow.completed event_id=evt_1 "
            'duration_ms=12.5 note="two words" span_id=00f067aa0ba902b7',
        ] == lines

    def test_raw_from_stdin(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(MIXED_LOG))
        assert 0 == main(["logs", "--trace", TRACE_ID.upper(), "--raw"])
        lines = capsys.readouterr().out.splitlines()
        assert ["workflow.started", "workflow.completed"] == [json.loads(line)["event"] for line in lines]

    def test_nothing_matches(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "worker.log"
        path.write_text(MIXED_LOG)
        assert 1 == main(["logs", "--trace", "b" * 32, str(path)])
        assert "no log lines of trace" in capsys.readouterr().err

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert 1 == main(["logs", "--trace", TRACE_ID, str(tmp_path / "nope.log")])
        assert "cannot read" in capsys.readouterr().err

    def test_follow(self, tmp_path: Path) -> None:
        """Lines appended after start are printed; a half-written line waits for its end; Ctrl-C ends it."""
        path = tmp_path / "worker.log"
        path.write_text(log_line(TRACE_ID, "first") + "\n")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workflows.cli",
                "logs",
                "--trace",
                TRACE_ID,
                str(path),
                "--follow",
                "--raw",
                "--interval",
                "0.05",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            assert "first" == json.loads(lines.get(timeout=30))["event"]
            second = log_line(TRACE_ID, "second")
            with path.open("a") as out:
                out.write(log_line("c" * 32, "other") + "\n" + second[:20])
                out.flush()
                time.sleep(0.3)
                out.write(second[20:] + "\n")
            assert "second" == json.loads(lines.get(timeout=30))["event"]
            process.send_signal(signal.SIGINT)
            assert 0 == process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


class FakeIntake(ThreadingHTTPServer):
    """An intake stand-in that checks the signature like the real one and answers like it."""

    daemon_threads = True

    def __init__(self, status: int = 202) -> None:
        self.status = status
        self.events: list[dict[str, Any]] = []
        self.message_ids: list[str] = []
        super().__init__(("127.0.0.1", 0), IntakeHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/webhooks/rentvine"


class IntakeHandler(BaseHTTPRequestHandler):
    server: FakeIntake

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            StandardWebhooksVerifier([SECRET]).verify({k.lower(): v for k, v in self.headers.items()}, body)
        except SignatureError as exc:
            self.reply(401, {"error": "invalid_signature", "detail": str(exc)})
            return
        event = json.loads(body)
        self.server.events.append(event)
        self.server.message_ids.append(self.headers["webhook-id"])
        if self.server.status != 202:
            self.reply(self.server.status, {"error": "invalid_event", "detail": "data.property_id: missing"})
            return
        self.reply(202, {"status": "queued", "event_id": event["id"], "trace_id": TRACE_ID, "task_id": "t-1"})

    def reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def intake(request: pytest.FixtureRequest) -> Iterator[FakeIntake]:
    server = FakeIntake(getattr(request, "param", 202))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "WEBHOOK_SECRET",
        "INTAKE_URL",
        "JAEGER_QUERY_URL",
        "TAIL_OTLP_ENDPOINT",
        "TAIL_JAEGER_QUERY_URL",
    ):
        monkeypatch.delenv(name, raising=False)


class TestSend:
    def test_signed_with_fresh_id(
        self, intake: FakeIntake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("WEBHOOK_SECRET", f"{SECRET} whsec_b2xk")
        monkeypatch.setenv("JAEGER_QUERY_URL", "http://jaeger.test:16686")
        assert 0 == main(["send", "work_order_created", "--url", intake.url])
        assert 0 == main(["send", "work_order.created", "--url", intake.url])
        out = capsys.readouterr().out
        first, second = intake.events
        assert first["id"] != second["id"]
        # the intake dedupes on webhook-id: it follows the event id
        assert [first["id"], second["id"]] == intake.message_ids
        assert first["id"].startswith("evt_01JD8W0C2V7K3M4N5P6Q7R8S9T_")
        assert "work_order.created" == first["type"] == second["type"]
        assert "202 queued" in out
        assert f"trace   {TRACE_ID}" in out
        assert f"jaeger  http://jaeger.test:16686/trace/{TRACE_ID}" in out
        assert f"event   {first['id']} (work_order.created)" in out

    @pytest.mark.parametrize(
        ("tail_host", "link"),
        [("localhost", "tail.test:16688"), ("jaeger-tail.invalid", "jaeger.test:16686")],
    )
    def test_link_to_the_tail_jaeger_when_it_runs(
        self,
        intake: FakeIntake,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        tail_host: str,
        link: str,
    ) -> None:
        """In the compose stack with ``--profile tail`` (the tail Jaeger's name resolves), the link printed is
        the tail Jaeger's UI, where the apps send their spans; without it (the name does not resolve), the
        plain JAEGER_QUERY_URL's."""
        monkeypatch.setenv("JAEGER_QUERY_URL", "http://jaeger.test:16686")
        monkeypatch.setenv("TAIL_OTLP_ENDPOINT", f"http://{tail_host}:4318")
        monkeypatch.setenv("TAIL_JAEGER_QUERY_URL", "http://tail.test:16688")
        assert 0 == main(["send", "work_order_created", "--url", intake.url, "--secret", SECRET])
        assert f"jaeger  http://{link}/trace/{TRACE_ID}" in capsys.readouterr().out

    def test_file_keep_id_json(
        self, intake: FakeIntake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        event = {"id": "evt_custom", "type": "lease.expiring", "data": {}}
        path = tmp_path / "event.json"
        path.write_text(json.dumps(event))
        assert 0 == main(["send", str(path), "--url", intake.url, "--secret", SECRET, "--keep-id", "--json"])
        assert [event] == intake.events
        answer = json.loads(capsys.readouterr().out)
        assert {
            "status": "queued",
            "event_id": "evt_custom",
            "trace_id": TRACE_ID,
            "task_id": "t-1",
        } == answer

    def test_wrong_secret_prints_the_error_body(
        self, intake: FakeIntake, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert 1 == main(["send", "payment_failed", "--url", intake.url, "--secret", "not-the-secret"])
        err = capsys.readouterr().err
        assert "answered 401" in err
        assert "signature does not match" in err

    @pytest.mark.parametrize("intake", [422], indirect=True)
    def test_rejected_event(self, intake: FakeIntake, capsys: pytest.CaptureFixture[str]) -> None:
        assert 1 == main(["send", "lease_renewed", "--url", intake.url, "--secret", SECRET])
        assert "data.property_id: missing" in capsys.readouterr().err

    def test_nothing_listening(self, capsys: pytest.CaptureFixture[str]) -> None:
        url = f"http://127.0.0.1:{closed_port()}/webhooks/rentvine"
        assert 2 == main(["send", "work_order_created", "--url", url, "--secret", SECRET])
        err = capsys.readouterr().err
        assert f"cannot reach the intake at {url}" in err
        assert "tracehook intake" in err
        assert "docker compose up" in err

    def test_unknown_type(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert 1 == main(["send", "work_order.exploded", "--secret", SECRET, "--url", "http://127.0.0.1:9"])
        err = capsys.readouterr().err
        assert "unknown event 'work_order.exploded'" in err
        assert "work_order_created" in err
        assert "payment.failed" in err

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert 1 == main(["send", str(tmp_path / "nope.json"), "--secret", SECRET])
        assert "no such file" in capsys.readouterr().err

    def test_no_secret(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert 1 == main(["send", "work_order_created", "--url", "http://127.0.0.1:9"])
        err = capsys.readouterr().err
        assert "--secret" in err
        assert "WEBHOOK_SECRET" in err


class TestHelp:
    @pytest.mark.parametrize(
        "argv",
        [["--help"], ["send", "--help"], ["trace", "--help"], ["logs", "--help"], ["dlq", "list", "--help"]],
    )
    def test_help(self, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert 0 == exit_info.value.code
        assert "usage: tracehook" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("command", "variables"),
        [
            ("intake", {"WEBHOOK_SECRET", "WEBHOOK_SECRET_FILE", "WEBHOOK_ALLOW_UNSIGNED", "REDIS_URL"}),
            ("sandbox", {"SANDBOX_DB", "SANDBOX_WEBHOOK_URL", "WEBHOOK_SECRET"}),
        ],
    )
    def test_servers_name_their_variables(
        self, command: str, variables: set[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``intake --help`` and ``sandbox --help`` name the variables each needs, and only ones the settings
        read."""
        from tests.unit.test_compose import _known_variables  # noqa: PLC0415

        with pytest.raises(SystemExit):
            main([command, "--help"])
        named = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", capsys.readouterr().out))
        assert variables | {"OTEL_EXPORTER_OTLP_ENDPOINT"} <= named
        assert not named - _known_variables() - {"OTEL_EXPORTER_OTLP_ENDPOINT"}

    def test_logs_needs_trace(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            main(["logs"])
        assert "--trace" in capsys.readouterr().err


class TestExitCodes:
    """One meaning per exit code across every command, as ``--help`` and docs/command-line.md say: 1 for anything to
    fix on the caller's side (argparse's usage errors and settings errors included), 2 only for something
    that could not be reached."""

    def test_usage_error_is_1(self, capsys: pytest.CaptureFixture[str]) -> None:
        """argparse's own usage errors (its default exit code is 2) exit 1."""
        with pytest.raises(SystemExit) as exit_info:
            main(["send"])
        assert 1 == exit_info.value.code
        assert "the following arguments are required" in capsys.readouterr().err

    @pytest.mark.parametrize(
        "argv",
        [["send", "work_order_created", "--url", "http://127.0.0.1:9"], ["trace", TRACE_ID], ["dlq", "list"]],
    )
    def test_settings_error_is_1(
        self, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad setting, whatever the command, exits 1 and names the variable."""
        monkeypatch.setenv("REDIS_URL", "http://not-redis")
        assert 1 == main(argv)
        assert "REDIS_URL" in capsys.readouterr().err

    def test_store_unreachable_is_2(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`dlq list` with Redis at a closed port: 2, with what to do."""
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
        assert 2 == main(["dlq", "list"])
        assert "cannot reach the store" in capsys.readouterr().err

    def test_help_and_readme_say_the_same(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``tracehook --help`` ends with the exit codes, and docs/command-line.md has the same sentence."""
        with pytest.raises(SystemExit):
            main(["--help"])
        assert EXIT_CODES in " ".join(capsys.readouterr().out.split())
        readme = (ROOT / "docs" / "command-line.md").read_text(encoding="utf-8")
        assert EXIT_CODES in " ".join(readme.split())


class TestSecret:
    """``tracehook secret`` makes signing secrets; with --file it writes one once and keeps it after."""

    def test_prints_a_valid_secret(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The printed secret is whsec_ + 32 random bytes, and two calls differ."""
        from workflows.signing import decode_secret  # noqa: PLC0415

        assert 0 == main(["secret"])
        assert 0 == main(["secret"])
        first, second = capsys.readouterr().out.split()
        assert first != second
        assert 32 == len(decode_secret(first))

    def test_file_written_once_owner_only(self, tmp_path: Path) -> None:
        """The file is created with mode 0600; a second run keeps it (restarts keep the secret)."""
        target = tmp_path / "run" / "webhook-secret"
        assert 0 == main(["secret", "--file", str(target)])
        written = target.read_text()
        assert 0o600 == target.stat().st_mode & 0o777
        assert 0 == main(["secret", "--file", str(target)])
        assert written == target.read_text()

    def test_settings_read_the_file_unless_the_variable_is_set(self, tmp_path: Path) -> None:
        """WEBHOOK_SECRET_FILE feeds the secrets when WEBHOOK_SECRET is empty; an unreadable file says how
        to make it."""
        from workflows.settings import load_app_settings  # noqa: PLC0415

        target = tmp_path / "webhook-secret"
        assert 0 == main(["secret", "--file", str(target)])
        from_file = load_app_settings({"WEBHOOK_SECRET_FILE": str(target)}).webhook_secrets
        assert (target.read_text().strip(),) == from_file
        chosen = load_app_settings({"WEBHOOK_SECRET": "mine", "WEBHOOK_SECRET_FILE": str(target)})
        assert ("mine",) == chosen.webhook_secrets
        with pytest.raises(SettingsError, match="tracehook secret --file"):
            load_app_settings({"WEBHOOK_SECRET_FILE": str(tmp_path / "missing")})

    def test_unwritable_file_is_a_clear_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A path under a file (not a folder) fails with exit 1 and names the path."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        assert 1 == main(["secret", "--file", str(blocker / "secret")])
        assert str(blocker / "secret") in capsys.readouterr().err

"""The RentVine API sandbox (a local stand-in) as a real uvicorn process: routes, faults, traces, webhooks."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy.pool import StaticPool

from tests.integration.conftest import ROOT
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tracing import SpanKind, inject_headers, trace_span
from workflows.cli._processes import Process, free_port, wait_answering
from workflows.events import parse_event
from workflows.sandbox._db import SandboxStore, add_months
from workflows.signing import SignatureError, StandardWebhooksVerifier

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"sandbox-test-secret-0123456789ab").decode()
API_KEY = "rvk_live_do_not_log_4f1c9a"


@dataclass
class Sandbox:
    """A sandbox running as ``serve('127.0.0.1', port)`` in a subprocess."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_answering(f"{self.url}/healthz", Process("sandbox", self.process, self.log_path), timeout)

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_sandbox(receiver: OtlpReceiver, directory: Path, **extra: str) -> Sandbox:
    """Start the sandbox on a free port, its database in ``directory``; return once /healthz answers."""
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SERVICE_NAME", "SANDBOX_WEBHOOK_URL", "TRACE_EXPORTER"}
    }
    env |= {
        "PYTHONPATH": str(ROOT),
        "SANDBOX_DB": str(directory / "rentvine-sandbox.sqlite3"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "WEBHOOK_SECRET": SECRET,
        "LOG_LEVEL": "INFO",
        **extra,
    }
    log_path = directory / "sandbox.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", f"from workflows.sandbox import serve; serve('127.0.0.1', {port})"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    sandbox = Sandbox(process, f"http://127.0.0.1:{port}", log_path)
    try:
        sandbox.wait_healthy()
    except AssertionError:
        sandbox.stop()
        raise
    return sandbox


@pytest.fixture(scope="module")
def sandbox(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox for the module, without webhooks."""
    running = start_sandbox(receiver, tmp_path_factory.mktemp("sandbox"))
    yield running
    running.stop()


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """A client of the module's sandbox, sending an API key as the workers do; faults cleared after."""
    with httpx.Client(
        base_url=sandbox.url, timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        yield client
        client.delete("/_sandbox/faults")


def made_up(method: str, *args: str) -> dict[str, Any]:
    """What a brand-new sandbox database makes up for an id, computed in this process."""
    engine = sqlalchemy.create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    store = SandboxStore(engine)
    store.create_schema()
    record: dict[str, Any] = getattr(store, method)(*args)
    engine.dispose()
    return record


def without_times(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if not key.endswith(("_at",))}


class TestRecords:
    """Each route answers with believable records; unknown ids are made up from the id, the same everywhere."""

    def test_healthz(self, api: httpx.Client) -> None:
        answer = api.get("/healthz")
        assert (200, {"status": "ok"}) == (answer.status_code, answer.json())

    def test_property_is_made_up_from_its_id(self, api: httpx.Client) -> None:
        first = api.get("/properties/prop_310").json()
        assert first == api.get("/properties/prop_310").json()
        assert without_times(made_up("property", "prop_310")) == without_times(first)
        address = first["address"]
        assert re.fullmatch(r"\d+ [A-Z][a-z]+ [A-Z][a-z]+", address["street"])
        assert re.fullmatch(r"[A-Z]{2}", address["state"])
        assert re.fullmatch(r"\d{5}", address["postal_code"])
        assert first["unit_count"] >= 1
        assert first["property_type"] in {"single_family", "multi_family", "condo", "townhouse"}
        assert address != api.get("/properties/prop_311").json()["address"]

    def test_work_order_lifecycle(self, api: httpx.Client) -> None:
        made = api.get("/work-orders/wo_30001", params={"property_id": "prop_310"}).json()
        assert ("wo_30001", "prop_310") == (made["work_order_id"], made["property_id"])
        assert made["status"] in {"open", "scheduled", "in_progress"}
        assert made["description"]

        body = {
            "work_order_id": "wo_30002",
            "property_id": "prop_312",
            "category": "hvac",
            "priority": "high",
        }
        created = api.post("/work-orders", json=body)
        assert (201, False, "open") == (
            created.status_code,
            created.json()["duplicate"],
            created.json()["status"],
        )
        again = api.post("/work-orders", json=body | {"priority": "low"})
        assert (200, True, "high") == (again.status_code, again.json()["duplicate"], again.json()["priority"])

        nulls = {"work_order_id": "wo_30004", "property_id": "prop_312", "priority": None, "category": None}
        defaulted = api.post("/work-orders", json=nulls).json()
        assert ("normal", "general", "open") == (
            defaulted["priority"],
            defaulted["category"],
            defaulted["status"],
        )

        assigned = api.post("/work-orders/wo_30002/assign-vendor", json={"category": "hvac"})
        assert 200 == assigned.status_code
        assert {"work_order_id", "vendor_id", "vendor_name", "status"} == set(assigned.json())
        assert re.fullmatch(r"ven_\d{3}", assigned.json()["vendor_id"])
        assert "scheduled" == assigned.json()["status"]

        patched = api.patch("/work-orders/wo_30002", json={"status": "completed"})
        assert (200, "completed") == (patched.status_code, patched.json()["status"])
        assert "completed" == api.get("/work-orders/wo_30002").json()["status"]

    def test_bad_status_is_422_naming_the_field(self, api: httpx.Client) -> None:
        answer = api.patch("/work-orders/wo_30003", json={"status": "done"})
        assert 422 == answer.status_code
        assert ("validation_error", "status") == (answer.json()["error"], answer.json()["field"])
        assert answer.json()["detail"].startswith("status:")

    def test_lease_renewal_offer_and_update(self, api: httpx.Client) -> None:
        lease = api.get("/leases/lease_5510", params={"tenant_id": "ten_5001"}).json()
        assert "ten_5001" == lease["tenant_id"]
        assert re.fullmatch(r"\d+\.\d\d", lease["monthly_rent"]["amount"])
        assert date.fromisoformat(lease["end_date"]) > date.fromisoformat(lease["start_date"])

        offer = api.post("/leases/lease_5510/renewal-offers", json={"months": 12, "monthly_rent": "1900.00"})
        assert 201 == offer.status_code
        expected_end = add_months(date.fromisoformat(lease["end_date"]), 12).isoformat()
        assert (expected_end, "1900.00") == (
            offer.json()["proposed_end_date"],
            offer.json()["monthly_rent"]["amount"],
        )

        updated = api.put("/leases/lease_5510", json={"end_date": expected_end})
        assert (200, expected_end) == (updated.status_code, updated.json()["end_date"])
        assert expected_end == api.get("/leases/lease_5510").json()["end_date"]

    def test_payment_and_ledger(self, api: httpx.Client) -> None:
        lease = api.get("/leases/lease_5600").json()
        payment = api.get("/payments/pay_90100", params={"lease_id": "lease_5600"}).json()
        assert (lease["monthly_rent"]["amount"], "lease_5600") == (payment["amount"], payment["lease_id"])
        assert "succeeded" == payment["status"]

        entry = {"payment_id": "pay_90100", "amount": payment["amount"], "currency": "USD", "kind": "rent"}
        recorded = api.post("/ledger/entries", json=entry, headers={"Idempotency-Key": "evt_l1:ledger"})
        repeated = api.post("/ledger/entries", json=entry, headers={"Idempotency-Key": "evt_l1:ledger"})
        assert (201, 200) == (recorded.status_code, repeated.status_code)
        assert recorded.json()["id"] == repeated.json()["id"]
        listed = api.get("/ledger/entries", params={"payment_id": "pay_90100"}).json()
        assert [recorded.json()["id"]] == [item["id"] for item in listed["entries"]]

    def test_errors_are_json(self, api: httpx.Client) -> None:
        missing = api.get("/no-such-route")
        assert (404, "not_found") == (missing.status_code, missing.json()["error"])
        garbled = api.patch(
            "/work-orders/wo_1", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert (400, "invalid_json") == (garbled.status_code, garbled.json()["error"])
        zero = api.post(
            "/ledger/entries", json={"payment_id": "p", "amount": "0", "currency": "USD", "kind": "x"}
        )
        assert (422, "amount") == (zero.status_code, zero.json()["field"])

    def test_api_key_is_accepted_and_never_logged(self, api: httpx.Client, sandbox: Sandbox) -> None:
        assert 200 == api.get("/properties/prop_777").status_code
        assert 200 == httpx.get(f"{sandbox.url}/properties/prop_777").status_code
        marker = api.post("/notifications", json={"kind": "k", "recipient": "r", "subject": "log marker"})
        assert 201 == marker.status_code
        assert "sandbox.notification.sent" in sandbox.log
        assert API_KEY not in sandbox.log

    def test_openapi_names_it_a_stand_in(self, api: httpx.Client) -> None:
        assert "RentVine API sandbox (local stand-in)" == api.get("/openapi.json").json()["info"]["title"]


class TestNotifications:
    """Notifications are idempotent by Idempotency-Key, and listed by event id."""

    def test_same_key_twice_stores_one(self, api: httpx.Client) -> None:
        body = {"kind": "work_order.vendor_assigned", "recipient": "ten_8812", "subject": "Vendor on the way"}
        body["event_id"] = "evt_notify_once"
        first = api.post("/notifications", json=body, headers={"Idempotency-Key": "evt_notify_once:tenant"})
        second = api.post("/notifications", json=body, headers={"Idempotency-Key": "evt_notify_once:tenant"})
        assert (201, False) == (first.status_code, first.json()["duplicate"])
        assert (200, True) == (second.status_code, second.json()["duplicate"])
        assert first.json()["id"] == second.json()["id"]
        listed = api.get("/notifications", params={"event_id": "evt_notify_once"}).json()
        assert (1, [first.json()["id"]]) == (
            listed["count"],
            [item["id"] for item in listed["notifications"]],
        )

    def test_other_keys_and_no_key_store_each(self, api: httpx.Client) -> None:
        body = {"kind": "receipt", "recipient": "ten_1", "subject": "Receipt", "event_id": "evt_notify_many"}
        api.post("/notifications", json=body, headers={"Idempotency-Key": "a"})
        api.post("/notifications", json=body, headers={"Idempotency-Key": "b"})
        api.post("/notifications", json=body)
        api.post("/notifications", json=body)
        assert 4 == api.get("/notifications", params={"event_id": "evt_notify_many"}).json()["count"]


class TestFaults:
    """Faults armed through /_sandbox/faults answer the next N matching requests, then the sandbox recovers."""

    def test_503_three_times_then_recovers(self, api: httpx.Client) -> None:
        armed = api.post("/_sandbox/faults", json={"status": 503, "count": 3, "path_prefix": "/work-orders"})
        assert 201 == armed.status_code
        answers = [api.get("/work-orders/wo_40001") for _ in range(3)]
        assert [503] * 3 == [answer.status_code for answer in answers]
        assert {"sandbox_fault"} == {answer.json()["error"] for answer in answers}
        assert 200 == api.get("/work-orders/wo_40001").status_code

    def test_other_paths_are_untouched(self, api: httpx.Client) -> None:
        api.post("/_sandbox/faults", json={"status": 500, "count": 5, "path_prefix": "/payments"})
        assert 200 == api.get("/properties/prop_401").status_code
        assert 500 == api.get("/payments/pay_401").status_code
        assert 4 == api.get("/_sandbox/faults").json()["faults"][0]["remaining"]

    def test_clear_disarms(self, api: httpx.Client) -> None:
        api.post("/_sandbox/faults", json={"status": 503, "count": 100, "path_prefix": "/leases"})
        assert {"cleared": 1} == api.delete("/_sandbox/faults").json()
        assert 200 == api.get("/leases/lease_402").status_code

    def test_delay_only(self, api: httpx.Client) -> None:
        api.post("/_sandbox/faults", json={"status": None, "delay_s": 0.3, "path_prefix": "/properties/"})
        started = time.monotonic()
        answer = api.get("/properties/prop_403")
        assert 200 == answer.status_code
        assert time.monotonic() - started >= 0.3

    def test_retry_after(self, api: httpx.Client) -> None:
        api.post("/_sandbox/faults", json={"status": 429, "path_prefix": "/payments", "retry_after_s": 7})
        answer = api.get("/payments/pay_404")
        assert (429, "7") == (answer.status_code, answer.headers.get("retry-after"))


def _path(span: ReceivedSpan) -> Any:
    return span.attributes.get("url.path", span.attributes.get("http.target"))


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    chain: list[str] = []
    while span.parent_span_id and span.parent_span_id in by_id:
        chain.append(span.parent_span_id)
        span = by_id[span.parent_span_id]
    return chain


class TestTracing:
    """The sandbox's server span is a child of the caller's client span, with its SQL queries under it."""

    def test_server_span_continues_the_callers_trace(self, producer: OtlpReceiver, api: httpx.Client) -> None:
        with trace_span("rentvine.work_order.get", kind=SpanKind.CLIENT) as caller:
            headers = dict(inject_headers())
            assert 200 == api.get("/work-orders/wo_50001", headers=headers).status_code
        ids = caller.get_span_context()
        trace_id, caller_id = format(ids.trace_id, "032x"), format(ids.span_id, "016x")

        def complete(spans: list[ReceivedSpan]) -> bool:
            mine = [s for s in spans if s.trace_id == trace_id and s.service_name == "rentvine-sandbox"]
            return any(s.kind == "SERVER" for s in mine) and any("db.system" in s.attributes for s in mine)

        producer.wait_for(complete, description="sandbox server and SQL spans")
        spans = producer.trace(trace_id)
        servers = [s for s in spans if s.kind == "SERVER"]
        assert 1 == len(servers), [s.name for s in spans]
        server = servers[0]
        assert ("rentvine-sandbox", caller_id) == (server.service_name, server.parent_span_id)
        assert "GET /work-orders/{work_order_id}" == server.name
        by_id = {s.span_id: s for s in spans}
        queries = [s for s in spans if s.attributes.get("db.system") == "sqlite"]
        assert queries
        assert all(server.span_id in _ancestors(q, by_id) for q in queries)
        assert {"rentvine-sandbox"} == {q.service_name for q in queries}
        assert any(q.name.startswith(("SELECT", "INSERT")) for q in queries)

    def test_health_checks_are_not_traced(self, receiver: OtlpReceiver, sandbox: Sandbox) -> None:
        # The /healthz polls at start-up and this one come before a traced request: once its span is in,
        # any span of theirs would be too.
        assert 200 == sandbox.client.get("/healthz").status_code
        assert 200 == sandbox.client.get("/properties/prop_health").status_code
        receiver.wait_for(
            lambda spans: "/properties/prop_health" in {_path(s) for s in spans},
            description="the span of /properties/prop_health",
        )
        assert "/healthz" not in {_path(s) for s in receiver.spans}

    def test_last_spans_are_exported_on_sigterm(self, receiver: OtlpReceiver, tmp_path: Path) -> None:
        """uvicorn re-raises SIGTERM after its shutdown, so atexit never runs: the app flushes on shutdown."""
        lazy = start_sandbox(receiver, tmp_path, OTEL_BSP_SCHEDULE_DELAY="600000")
        try:
            assert 200 == lazy.client.get("/properties/prop_sigterm").status_code
        finally:
            lazy.stop()
        receiver.wait_for(
            lambda spans: "/properties/prop_sigterm" in {_path(s) for s in spans},
            timeout=5,
            description="the span of the request made just before SIGTERM",
        )


class _Recorder(ThreadingHTTPServer):
    """A tiny webhook receiver that records each POST (headers lower-cased, raw body)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/webhooks/rentvine"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.received) >= count, timeout)
            assert len(self.received) >= count, f"{len(self.received)} of {count} webhooks arrived"
            return list(self.received)


class _RecordingHandler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.changed:
            self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.server.changed.notify_all()
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="class")
def webhooks(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Sandbox, _Recorder]]:
    """A sandbox announcing its changes to a recording server."""
    recorder = _Recorder()
    running = start_sandbox(
        receiver, tmp_path_factory.mktemp("sandbox-webhooks"), SANDBOX_WEBHOOK_URL=recorder.url
    )
    yield running, recorder
    running.stop()
    recorder.shutdown()
    recorder.server_close()


class TestWebhooks:
    """Changes made through the API are announced as Standard Webhooks signed with WEBHOOK_SECRET."""

    def test_patch_is_announced_signed(self, webhooks: tuple[Sandbox, _Recorder]) -> None:
        sandbox, recorder = webhooks
        start = len(recorder.received)
        api = sandbox.client
        assert (
            200
            == api.patch(
                "/work-orders/wo_60001", json={"status": "in_progress", "property_id": "prop_310"}
            ).status_code
        )
        # The same status again changes nothing, so only the next real change is announced after it.
        assert 200 == api.patch("/work-orders/wo_60001", json={"status": "in_progress"}).status_code
        assert 200 == api.patch("/work-orders/wo_60001", json={"status": "completed"}).status_code
        received = recorder.wait_for(start + 2)[start:]
        assert 2 == len(received)

        for headers, body in received:
            StandardWebhooksVerifier([SECRET]).verify(headers, body)
            with pytest.raises(SignatureError):
                StandardWebhooksVerifier(["whsec_" + base64.b64encode(b"another-secret").decode()]).verify(
                    headers, body
                )
            assert "traceparent" not in headers
        events = [json.loads(body) for _, body in received]
        assert ["in_progress", "completed"] == [event["data"]["status"] for event in events]
        first = events[0]
        assert ("work_order.updated", "acct_sandbox") == (first["type"], first["account_id"])
        assert re.fullmatch(r"evt_sbx_[0-9a-f]{32}", first["id"])
        assert first["id"] == received[0][0]["webhook-id"]
        assert ("wo_60001", "prop_310") == (first["data"]["work_order_id"], first["data"]["property_id"])
        parse_event(first)  # the intake's own validation accepts it

    def test_vendor_and_lease_changes_are_announced(self, webhooks: tuple[Sandbox, _Recorder]) -> None:
        sandbox, recorder = webhooks
        start = len(recorder.received)
        vendor = sandbox.client.post(
            "/work-orders/wo_60002/assign-vendor", json={"category": "plumbing"}
        ).json()
        assert 200 == sandbox.client.put("/leases/lease_60003", json={"end_date": "2031-01-31"}).status_code
        assigned, renewed = (json.loads(body) for _, body in recorder.wait_for(start + 2)[start:])
        assert ("work_order.updated", vendor["vendor_id"]) == (
            assigned["type"],
            assigned["data"]["vendor_id"],
        )
        assert ("lease.renewed", "2031-01-31") == (renewed["type"], renewed["data"]["new_end_date"])
        assert "lease_60003" == renewed["data"]["lease_id"]
        parse_event(renewed)

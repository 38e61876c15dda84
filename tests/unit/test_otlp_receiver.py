"""The test OTLP/HTTP receiver, driven by the real SDK exporter and by hand-built requests."""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, start_receiver

TRACE_ID = "5b8efff798038103d269b633813fc60c"
PARENT_ID = "eee19b7ec3c1b174"
CHILD_ID = "eee19b7ec3c1b173"
# The most a prompt give-up or stop may take. What these tests guard against costs far more (a timeout
# ignored, a stop waiting for a client's 30 s or a kept-alive connection forever), while a loaded 2-core
# machine can stretch a 0.2 s wait by a second.
PROMPT_S = 5.0

ProviderFactory = Callable[..., TracerProvider]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A running receiver, stopped after the test."""
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def make_provider() -> Iterator[ProviderFactory]:
    """Build private tracer providers exporting synchronously over OTLP/HTTP; shut down after the test."""
    providers: list[TracerProvider] = []

    def make(exporter: OTLPSpanExporter, service_name: str = "receiver-test") -> TracerProvider:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.shutdown()


def post(
    url: str, body: bytes, content_type: str, *, encoding: str | None = None, timeout: float = 5.0
) -> tuple[int, bytes, str]:
    """POST ``body`` and return status, response body and response Content-Type."""
    headers = {"Content-Type": content_type}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - test URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - test URL
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), error.headers.get("Content-Type", "")


def one_span_request(name: str = "hand-made", service_name: str = "hand-service") -> bytes:
    """A serialized protobuf export request holding one root span."""
    span = Span(
        trace_id=bytes.fromhex(TRACE_ID),
        span_id=bytes.fromhex(PARENT_ID),
        name=name,
        kind=Span.SpanKind.SPAN_KIND_PRODUCER,
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=1_250_000_000,
        attributes=[KeyValue(key="k", value=AnyValue(string_value="v"))],
    )
    resource_spans = ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])
    resource_spans.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=service_name))
    )
    return ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString()


class TestProtobufExport:
    """Spans sent by the SDK's OTLP/HTTP protobuf exporter decode with ids, parentage and data intact."""

    def test_parent_child_attributes_events_links_and_status(
        self, receiver: OtlpReceiver, make_provider: ProviderFactory
    ):
        provider = make_provider(OTLPSpanExporter(endpoint=receiver.traces_url, timeout=5))
        tracer = provider.get_tracer("receiver.tests")

        with tracer.start_as_current_span("linked") as linked:
            pass
        child_attributes = {
            "text": "hello",
            "count": 3,
            "flag": True,
            "ratio": 0.25,
            "tags": ["a", "b"],
            "sizes": [1, 2, 3],
        }
        link = Link(linked.get_span_context(), attributes={"link.reason": "retry"})
        with (
            tracer.start_as_current_span(
                "parent", kind=SpanKind.SERVER, attributes={"http.route": "/hooks"}
            ) as parent,
            tracer.start_as_current_span(
                "child", kind=SpanKind.CLIENT, attributes=child_attributes, links=[link]
            ) as child,
        ):
            child.add_event("cache.miss", attributes={"key": "user:1", "attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "upstream failed"))

        spans = receiver.wait_for_spans(count=3, timeout=5)
        assert [span.name for span in spans] == ["linked", "child", "parent"]
        assert receiver.request_count == 3

        trace_id = format(parent.get_span_context().trace_id, "032x")
        [got_parent] = receiver.by_name("parent")
        [got_child] = receiver.by_name("child")
        assert got_parent.trace_id == trace_id
        assert got_child.trace_id == trace_id
        assert got_parent.span_id == format(parent.get_span_context().span_id, "016x")
        assert got_child.span_id == format(child.get_span_context().span_id, "016x")
        assert got_parent.parent_span_id == ""
        assert got_parent.is_root
        assert got_child.parent_span_id == got_parent.span_id
        assert receiver.children(got_parent) == [got_child]
        assert receiver.trace(trace_id.upper()) == [got_parent, got_child]

        assert got_parent.kind == "SERVER"
        assert got_child.kind == "CLIENT"
        assert receiver.by_name("linked")[0].kind == "INTERNAL"

        assert got_parent.attributes == {"http.route": "/hooks"}
        assert got_child.attributes == child_attributes
        assert type(got_child.attributes["count"]) is int
        assert type(got_child.attributes["flag"]) is bool
        assert got_child.events == [("cache.miss", {"key": "user:1", "attempt": 2})]
        assert got_child.links == [
            (
                format(linked.get_span_context().trace_id, "032x"),
                format(linked.get_span_context().span_id, "016x"),
                {"link.reason": "retry"},
            )
        ]

        assert got_child.status_code == "ERROR"
        assert got_child.status_message == "upstream failed"
        assert got_parent.status_code == "UNSET"

        assert {span.service_name for span in spans} == {"receiver-test"}
        assert got_child.resource["service.name"] == "receiver-test"
        assert got_child.resource["telemetry.sdk.language"] == "python"
        assert got_child.scope_name == "receiver.tests"
        assert got_child.start_ns == child.start_time
        assert got_child.end_ns == child.end_time
        assert got_child.duration_ms == pytest.approx((child.end_time - child.start_time) / 1e6)
        assert got_parent.start_ns <= got_child.start_ns <= got_child.end_ns <= got_parent.end_ns

    def test_base_endpoint_works_as_otel_exporter_otlp_endpoint(
        self, receiver: OtlpReceiver, make_provider: ProviderFactory, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        provider = make_provider(OTLPSpanExporter(timeout=5), service_name="from-env")

        with provider.get_tracer("receiver.tests").start_as_current_span("via-env"):
            pass

        [span] = receiver.wait_for_spans(name="via-env", timeout=5)
        assert span.service_name == "from-env"

    def test_concurrent_exports_are_all_kept(self, receiver: OtlpReceiver):
        def send(index: int) -> None:
            status, _, _ = post(
                receiver.traces_url, one_span_request(name=f"span-{index}"), "application/x-protobuf"
            )
            assert status == 200

        threads = [threading.Thread(target=send, args=(index,)) for index in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        spans = receiver.wait_for_spans(count=20, timeout=5)
        assert sorted(span.name for span in spans) == sorted(f"span-{index}" for index in range(20))
        assert receiver.request_count == 20

    def test_protobuf_response_is_an_empty_export_response(self, receiver: OtlpReceiver):
        status, body, content_type = post(receiver.traces_url, one_span_request(), "application/x-protobuf")

        assert (status, body, content_type) == (200, b"", "application/x-protobuf")
        [span] = receiver.spans
        assert span.kind == "PRODUCER"
        assert span.service_name == "hand-service"
        assert span.duration_ms == 250.0


class TestJsonExport:
    """OTLP/JSON requests, with hex ids and string-encoded 64-bit integers, decode like protobuf ones."""

    def test_hand_built_json_request(self, receiver: OtlpReceiver):
        document = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "json-service"}},
                            {"key": "host.cpus", "value": {"intValue": "8"}},
                        ]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "json.scope"},
                            "spans": [
                                {
                                    "traceId": TRACE_ID,
                                    "spanId": PARENT_ID,
                                    "parentSpanId": "",
                                    "name": "GET /hooks",
                                    "kind": 2,
                                    "startTimeUnixNano": "1700000000000000000",
                                    "endTimeUnixNano": "1700000000500000000",
                                    "attributes": [
                                        {"key": "http.status_code", "value": {"intValue": "200"}},
                                        {"key": "ok", "value": {"boolValue": True}},
                                        {"key": "load", "value": {"doubleValue": 0.5}},
                                        {
                                            "key": "tags",
                                            "value": {
                                                "arrayValue": {
                                                    "values": [{"stringValue": "x"}, {"stringValue": "y"}]
                                                }
                                            },
                                        },
                                        {
                                            "key": "nested",
                                            "value": {
                                                "kvlistValue": {
                                                    "values": [{"key": "a", "value": {"intValue": 1}}]
                                                }
                                            },
                                        },
                                    ],
                                    "status": {"code": 1},
                                },
                                {
                                    "traceId": TRACE_ID,
                                    "spanId": CHILD_ID,
                                    "parentSpanId": PARENT_ID,
                                    "name": "enqueue",
                                    "kind": 4,
                                    "startTimeUnixNano": "1700000000100000000",
                                    "endTimeUnixNano": "1700000000200000000",
                                    "events": [
                                        {
                                            "timeUnixNano": "1700000000150000000",
                                            "name": "sent",
                                            "attributes": [{"key": "bytes", "value": {"intValue": "42"}}],
                                        }
                                    ],
                                    "links": [
                                        {
                                            "traceId": "0af7651916cd43dd8448eb211c80319c",
                                            "spanId": "b7ad6b7169203331",
                                            "attributes": [],
                                        }
                                    ],
                                    "status": {"code": 2, "message": "boom"},
                                    "someFutureField": {"ignored": True},
                                },
                            ],
                        }
                    ],
                }
            ]
        }

        status, body, content_type = post(
            receiver.traces_url, json.dumps(document).encode(), "application/json; charset=utf-8"
        )

        assert (status, json.loads(body), content_type) == (200, {}, "application/json")
        parent, child = receiver.trace(TRACE_ID)
        assert (parent.span_id, parent.parent_span_id) == (PARENT_ID, "")
        assert (child.span_id, child.parent_span_id) == (CHILD_ID, PARENT_ID)
        assert (parent.kind, child.kind) == ("SERVER", "PRODUCER")
        assert parent.attributes == {
            "http.status_code": 200,
            "ok": True,
            "load": 0.5,
            "tags": ["x", "y"],
            "nested": {"a": 1},
        }
        assert parent.duration_ms == 500.0
        assert (parent.status_code, child.status_code, child.status_message) == ("OK", "ERROR", "boom")
        assert child.events == [("sent", {"bytes": 42})]
        assert child.links == [("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", {})]
        assert parent.service_name == "json-service"
        assert parent.resource == {"service.name": "json-service", "host.cpus": 8}
        assert parent.scope_name == "json.scope"

    def test_malformed_json_is_rejected_with_400(self, receiver: OtlpReceiver):
        status, body, _ = post(
            receiver.traces_url, b'{"resourceSpans": [{"scopeSpans": 7}]}', "application/json"
        )

        assert status == 400
        assert b"OTLP/JSON" in body
        assert receiver.spans == []
        assert receiver.rejections == [body.decode()]


class TestCompression:
    """Compressed request bodies are inflated according to Content-Encoding."""

    def test_gzip_from_the_sdk_exporter(self, receiver: OtlpReceiver, make_provider: ProviderFactory):
        provider = make_provider(
            OTLPSpanExporter(endpoint=receiver.traces_url, compression=Compression.Gzip, timeout=5)
        )

        with provider.get_tracer("receiver.tests").start_as_current_span("zipped", attributes={"n": 1}):
            pass

        [span] = receiver.wait_for_spans(name="zipped", timeout=5)
        assert span.attributes == {"n": 1}

    @pytest.mark.parametrize(
        ("encoding", "compress"),
        [("gzip", gzip.compress), ("deflate", zlib.compress)],
    )
    def test_hand_compressed_body(
        self, receiver: OtlpReceiver, encoding: str, compress: Callable[[bytes], bytes]
    ):
        status, _, _ = post(
            receiver.traces_url, compress(one_span_request()), "application/x-protobuf", encoding=encoding
        )

        assert status == 200
        assert [span.name for span in receiver.spans] == ["hand-made"]

    def test_corrupt_gzip_is_rejected_with_400(self, receiver: OtlpReceiver):
        status, _, _ = post(receiver.traces_url, b"not gzip", "application/x-protobuf", encoding="gzip")

        assert status == 400
        assert receiver.spans == []


class TestRouting:
    """Only POST /v1/traces with a protobuf or JSON body is accepted."""

    def test_unknown_path_is_404(self, receiver: OtlpReceiver):
        status, _, _ = post(receiver.endpoint + "/v1/metrics", one_span_request(), "application/x-protobuf")

        assert status == 404
        assert receiver.request_count == 0

    def test_get_is_404(self, receiver: OtlpReceiver):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(receiver.traces_url, timeout=5)  # noqa: S310 - test URL
        caught.value.close()

        assert caught.value.code == 404

    def test_other_content_type_is_415(self, receiver: OtlpReceiver):
        status, _, _ = post(receiver.traces_url, b"hello", "text/plain")

        assert status == 415
        assert receiver.request_count == 1
        assert receiver.spans == []

    def test_garbage_protobuf_is_400(self, receiver: OtlpReceiver):
        status, _, _ = post(receiver.traces_url, b"\xff\xff\xff\xff", "application/x-protobuf")

        assert status == 400
        assert receiver.spans == []


class TestWaiting:
    """wait_for polls until the predicate holds, and fails fast with a summary of what did arrive."""

    def test_returns_spans_that_arrive_later(self, receiver: OtlpReceiver):
        sender = threading.Timer(
            0.2, post, args=(receiver.traces_url, one_span_request(name="late"), "application/x-protobuf")
        )
        sender.start()
        try:
            spans = receiver.wait_for(lambda spans: any(span.name == "late" for span in spans), timeout=5)
        finally:
            sender.join(timeout=5)

        assert [span.name for span in spans] == ["late"]

    def test_timeout_raises_assertion_error_with_summary(self, receiver: OtlpReceiver):
        post(receiver.traces_url, one_span_request(name="only-this"), "application/x-protobuf")

        started = time.monotonic()
        with pytest.raises(AssertionError, match=r"timed out after 0\.2s") as caught:
            receiver.wait_for(lambda spans: len(spans) >= 2, timeout=0.2)
        elapsed = time.monotonic() - started

        assert elapsed < PROMPT_S
        message = str(caught.value)
        assert "received 1 span(s) in 1 request(s)" in message
        assert "'only-this'" in message
        assert "hand-service" in message
        assert TRACE_ID in message

    def test_wait_for_spans_filters_and_describes(self, receiver: OtlpReceiver):
        post(receiver.traces_url, one_span_request(name="a"), "application/x-protobuf")
        post(receiver.traces_url, one_span_request(name="b"), "application/x-protobuf")

        assert [span.name for span in receiver.wait_for_spans(name="b", trace_id=TRACE_ID.upper())] == ["b"]
        assert len(receiver.wait_for_spans(count=2, trace_id=TRACE_ID)) == 2
        with pytest.raises(AssertionError, match="at least 1 span\\(s\\) named 'c'"):
            receiver.wait_for_spans(name="c", timeout=0.1)

    def test_clear_forgets_everything(self, receiver: OtlpReceiver):
        post(receiver.traces_url, one_span_request(), "application/x-protobuf")

        receiver.clear()

        assert (receiver.spans, receiver.request_count) == ([], 0)


class TestFaultModes:
    """Fault modes make the receiver fail like a broken collector, and stop() still returns promptly."""

    def test_error_mode_answers_503_and_keeps_nothing(self, receiver: OtlpReceiver):
        receiver.mode = "error"

        status, _, _ = post(receiver.traces_url, one_span_request(), "application/x-protobuf")

        assert status == 503
        assert receiver.request_count == 1
        assert receiver.spans == []

        receiver.mode = "ok"
        assert post(receiver.traces_url, one_span_request(), "application/x-protobuf")[0] == 200
        assert len(receiver.spans) == 1

    def test_blackhole_mode_times_the_client_out_and_stop_is_prompt(self):
        receiver = start_receiver()
        try:
            receiver.mode = "blackhole"
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                post(receiver.traces_url, one_span_request(), "application/x-protobuf", timeout=0.5)
            assert time.monotonic() - started < PROMPT_S
            receiver.wait_for(lambda _: receiver.request_count == 1, timeout=2)
        finally:
            started = time.monotonic()
            receiver.stop()
            stop_took = time.monotonic() - started

        assert stop_took < PROMPT_S
        assert receiver.spans == []

    def test_stop_releases_a_blackholed_request_still_waiting(self):
        receiver = start_receiver()
        receiver.mode = "blackhole"
        outcome: list[BaseException] = []

        def send() -> None:
            try:
                post(receiver.traces_url, one_span_request(), "application/x-protobuf", timeout=30)
            except Exception as error:
                outcome.append(error)

        sender = threading.Thread(target=send)
        sender.start()
        receiver.wait_for(lambda _: receiver.request_count == 1, timeout=5)

        started = time.monotonic()
        receiver.stop()
        assert time.monotonic() - started < PROMPT_S
        sender.join(timeout=PROMPT_S)

        assert not sender.is_alive()
        assert len(outcome) == 1

    def test_slow_mode_delays_the_answer(self, receiver: OtlpReceiver):
        receiver.mode = "slow"
        receiver.delay_s = 0.3

        started = time.monotonic()
        status, _, _ = post(receiver.traces_url, one_span_request(), "application/x-protobuf")

        assert status == 200
        assert time.monotonic() - started >= 0.3
        assert len(receiver.spans) == 1

    def test_unknown_mode_is_refused(self, receiver: OtlpReceiver):
        with pytest.raises(ValueError, match="unknown mode"):
            receiver.mode = "flaky"  # type: ignore[assignment]


class TestLifecycle:
    """The receiver binds a free loopback port on start and releases it, and open connections, on stop."""

    def test_endpoint_and_traces_url(self):
        with OtlpReceiver() as receiver:
            assert receiver.endpoint.startswith("http://127.0.0.1:")
            assert int(receiver.endpoint.rsplit(":", 1)[1]) > 0
            assert receiver.traces_url == receiver.endpoint + "/v1/traces"
            url = receiver.traces_url

        with pytest.raises(urllib.error.URLError):
            post(url, one_span_request(), "application/x-protobuf", timeout=1)
        with pytest.raises(RuntimeError, match="not running"):
            _ = receiver.endpoint

    def test_stop_is_idempotent_and_restart_is_refused(self):
        receiver = start_receiver()
        receiver.stop()
        receiver.stop()

        with pytest.raises(RuntimeError, match="started once"):
            receiver.start()

    def test_stop_with_an_exporter_connection_still_open(self, make_provider: ProviderFactory):
        receiver = start_receiver()
        provider = make_provider(OTLPSpanExporter(endpoint=receiver.traces_url, timeout=5))
        with provider.get_tracer("receiver.tests").start_as_current_span("kept-alive"):
            pass
        assert [span.name for span in receiver.spans] == ["kept-alive"]

        started = time.monotonic()
        receiver.stop()

        assert time.monotonic() - started < PROMPT_S

    def test_received_span_is_frozen(self, receiver: OtlpReceiver):
        post(receiver.traces_url, one_span_request(), "application/x-protobuf")
        [span] = receiver.spans

        assert isinstance(span, ReceivedSpan)
        with pytest.raises(AttributeError):
            span.name = "changed"  # type: ignore[misc]

"""A real OTLP/HTTP trace receiver for tests: a threaded HTTP server that decodes and keeps exported spans.

It receives the bytes a collector or Jaeger would receive, protobuf decoded with ``opentelemetry-proto``.

Point an exporter at it (``OtlpReceiver.traces_url`` for ``OTLPSpanExporter(endpoint=...)``, or
``OtlpReceiver.endpoint`` for ``OTEL_EXPORTER_OTLP_ENDPOINT``), then assert on ``ReceivedSpan`` objects.
Protobuf and JSON encodings are accepted, optionally gzip- or deflate-compressed. Fault modes
(``"error"``, ``"blackhole"``, ``"slow"``) simulate a broken collector for reliability tests.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["Mode", "OtlpReceiver", "ReceivedSpan", "start_receiver"]

_logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

Mode = Literal["ok", "error", "blackhole", "slow"]
_MODES: frozenset[str] = frozenset(get_args(Mode))

# Same default limit as the SDK exporter's max_request_size, so anything it sends is accepted.
_MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_LINE_BYTES = 65536
_SUMMARY_SPAN_LIMIT = 50
_REJECTION_LIMIT = 20

# The OTLP spec lets receivers treat SPAN_KIND_UNSPECIFIED as INTERNAL.
_KINDS = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS_CODES = ("UNSET", "OK", "ERROR")
# OTLP/JSON carries these ids as hex, while protobuf's canonical JSON mapping expects base64.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as the receiver decoded it, with ids as lowercase hex and enums as their short names."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str, dict[str, Any]]]
    status_code: str
    status_message: str
    service_name: str
    resource: dict[str, Any] = field(repr=False)
    scope_name: str = ""

    @property
    def duration_ms(self) -> float:
        """Wall-clock duration in milliseconds."""
        return (self.end_ns - self.start_ns) / 1_000_000

    @property
    def is_root(self) -> bool:
        """True when the span has no parent."""
        return not self.parent_span_id


class _HttpError(Exception):
    """Abort the request with this status; the connection is closed because the body may be unread."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Server(ThreadingHTTPServer):
    """The HTTP server, tracking live connections and handler threads so ``stop`` can cut them loose."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        self.live_lock = threading.Lock()
        self.live_sockets: set[socket.socket] = set()
        self.live_threads: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.live_lock:
            self.live_sockets.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        current = threading.current_thread()
        with self.live_lock:
            self.live_threads.add(current)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.live_lock:
                self.live_threads.discard(current)

    def shutdown_request(self, request: Any) -> None:
        with self.live_lock:
            self.live_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing mid-request are routine in fault tests; a traceback on stderr would be noise.
        _logger.debug("OTLP receiver: error while handling %s", client_address, exc_info=True)

    def disconnect_all(self) -> None:
        """Shut down every open connection, waking handlers blocked reading a keep-alive socket."""
        with self.live_lock:
            sockets = list(self.live_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        """Wait, up to ``timeout`` seconds in total, for handler threads to finish."""
        deadline = time.monotonic() + timeout
        with self.live_lock:
            threads = list(self.live_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    """Serves ``POST /v1/traces``; everything else is 404."""

    # HTTP/1.1 keeps the exporter's connection alive between exports, as a real collector does.
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        """Receive one export request."""
        try:
            self._handle_post()
        except _HttpError as error:
            self.server.receiver._reject(error.message)
            self._reply(error.status, error.message.encode(), "text/plain; charset=utf-8", close=True)

    def do_GET(self) -> None:
        """Answer 404: only POST is served."""
        self._reply(404, b"not found", "text/plain; charset=utf-8", close=True)

    def do_PUT(self) -> None:
        """Answer 404: only POST is served."""
        self.do_GET()

    def do_PATCH(self) -> None:
        """Answer 404: only POST is served."""
        self.do_GET()

    def do_DELETE(self) -> None:
        """Answer 404: only POST is served."""
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Log access lines at DEBUG instead of writing to stderr."""
        _logger.debug("OTLP receiver: " + format, *args)

    def _handle_post(self) -> None:
        receiver = self.server.receiver
        if urlsplit(self.path).path != TRACES_PATH:
            raise _HttpError(404, f"no such path {self.path!r}; traces go to {TRACES_PATH}")
        receiver._count_request()
        body = self._read_body()
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in {PROTOBUF, JSON}:
            raise _HttpError(415, f"unsupported Content-Type {content_type!r}; use {PROTOBUF} or {JSON}")

        mode = receiver.mode
        if mode == "error":
            self._reply(503, b"receiver in error mode", "text/plain; charset=utf-8")
            return
        if mode == "blackhole":
            receiver._released.wait()
            self.close_connection = True
            return
        if mode == "slow" and receiver._released.wait(receiver.delay_s):
            self.close_connection = True
            return

        payload = _decompress(body, self.headers.get("Content-Encoding", ""))
        if content_type == PROTOBUF:
            spans = _decode_protobuf(payload)
            response, response_type = ExportTraceServiceResponse().SerializeToString(), PROTOBUF
        else:
            spans = _decode_json(payload)
            response, response_type = b"{}", JSON
        # Stored before answering, so spans are visible as soon as the exporter's export() returns.
        receiver._store(spans)
        self._reply(200, response, response_type)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise _HttpError(411, "Content-Length required")
        try:
            length = int(length_header)
        except ValueError:
            raise _HttpError(400, f"bad Content-Length {length_header!r}") from None
        if length < 0 or length > _MAX_BODY_BYTES:
            raise _HttpError(413, f"body of {length} bytes is out of bounds")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _HttpError(400, f"body truncated: {len(body)} of {length} bytes")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_MAX_LINE_BYTES)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _HttpError(400, f"bad chunk size line {line!r}") from None
            if size == 0:
                while self.rfile.readline(_MAX_LINE_BYTES) not in {b"\r\n", b"\n", b""}:
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_BODY_BYTES:
                raise _HttpError(413, "chunked body too large")
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _HttpError(400, "chunked body truncated")
            parts.append(chunk)
            self.rfile.readline(_MAX_LINE_BYTES)

    def _reply(self, status: int, body: bytes, content_type: str, *, close: bool = False) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            # The client gave up (its timeout, or stop() cut the socket); nobody is left to answer.
            self.close_connection = True


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in {"", "identity", "none"}:
            return body
        if encoding in {"gzip", "x-gzip"}:
            return gzip.decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                # Some clients send raw deflate without the zlib wrapper HTTP nominally requires.
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except (OSError, EOFError, zlib.error) as error:
        raise _HttpError(400, f"cannot decompress {encoding} body: {error}") from None
    raise _HttpError(415, f"unsupported Content-Encoding {encoding!r}")


def _decode_protobuf(payload: bytes) -> list[ReceivedSpan]:
    try:
        request = ExportTraceServiceRequest.FromString(payload)
    except DecodeError as error:
        raise _HttpError(400, f"invalid ExportTraceServiceRequest protobuf: {error}") from None
    return _spans_from_request(request)


def _decode_json(payload: bytes) -> list[ReceivedSpan]:
    try:
        document = json.loads(payload)
    except ValueError as error:
        raise _HttpError(400, f"invalid OTLP/JSON ExportTraceServiceRequest: {error}") from None
    if not isinstance(document, dict):
        raise _HttpError(400, "invalid OTLP/JSON ExportTraceServiceRequest: top level must be an object")
    try:
        request = json_format.ParseDict(
            _hex_ids_to_base64(document), ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except (ValueError, TypeError, json_format.ParseError) as error:
        raise _HttpError(400, f"invalid OTLP/JSON ExportTraceServiceRequest: {error}") from None
    return _spans_from_request(request)


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _hex_to_base64(value)
            if key in _ID_KEYS and isinstance(value, str)
            else _hex_ids_to_base64(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def _hex_to_base64(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _spans_from_request(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    received: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service_name = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=_KINDS[span.kind] if 0 <= span.kind < len(_KINDS) else str(span.kind),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        events=[(event.name, _attributes(event.attributes)) for event in span.events],
                        links=[
                            (link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                            for link in span.links
                        ],
                        status_code=_STATUS_CODES[span.status.code]
                        if 0 <= span.status.code < len(_STATUS_CODES)
                        else str(span.status.code),
                        status_message=span.status.message,
                        service_name=service_name if isinstance(service_name, str) else "",
                        resource=dict(resource),
                        scope_name=scope_spans.scope.name,
                    )
                )
    return received


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind is None:
        return None
    return getattr(value, kind)


def _summarize(spans: list[ReceivedSpan]) -> str:
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans[:_SUMMARY_SPAN_LIMIT]:
        by_trace.setdefault(span.trace_id, []).append(span)
    lines: list[str] = []
    for trace_id, members in by_trace.items():
        lines.append(f"  trace {trace_id}:")
        lines.extend(
            f"    {span.service_name or '?'}/{span.name!r} {span.kind} span={span.span_id} "
            f"parent={span.parent_span_id or '-'} status={span.status_code}"
            for span in members
        )
    if len(spans) > _SUMMARY_SPAN_LIMIT:
        lines.append(f"  ... and {len(spans) - _SUMMARY_SPAN_LIMIT} more spans")
    return "\n".join(lines)


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on ``127.0.0.1``, serving ``POST /v1/traces`` from a daemon thread.

    Received spans are kept in arrival order until ``clear()``. ``mode`` selects how export requests
    are answered: ``"ok"`` (decode, store, 200), ``"error"`` (503, nothing stored), ``"blackhole"``
    (read the body, never answer; released by ``stop()``) or ``"slow"`` (wait ``delay_s`` seconds,
    then behave as ``"ok"``). Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, mode: Mode = "ok", delay_s: float = 1.0
    ) -> None:
        """Prepare a receiver; nothing listens until ``start()``. Port 0 picks a free port."""
        self._host = host
        self._port = port
        self.mode = mode
        self.delay_s = delay_s
        self._changed = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._generation = 0
        self._request_count = 0
        self._rejections: list[str] = []
        self._released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> Mode:
        """How export requests are answered: ``"ok"``, ``"error"``, ``"blackhole"`` or ``"slow"``."""
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        if value not in _MODES:
            raise ValueError(f"unknown mode {value!r}; expected one of {sorted(_MODES)}")
        self._mode = value

    def start(self) -> OtlpReceiver:
        """Bind and start serving; returns ``self``. A receiver can be started once."""
        if self._server is not None or self._released.is_set():
            raise RuntimeError("OtlpReceiver can only be started once")
        server = _Server((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-receiver-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release blackholed and slow requests, drop open connections. Idempotent."""
        self._released.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.disconnect_all()
        server.server_close()
        server.join_handlers(timeout=1.0)
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def __enter__(self) -> OtlpReceiver:
        """Start, and return the receiver."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop."""
        self.stop()

    def __repr__(self) -> str:
        """Where it listens, its mode and how much it received."""
        where = self.endpoint if self._server is not None else "stopped"
        return (
            f"<OtlpReceiver {where} mode={self.mode} spans={len(self.spans)} requests={self.request_count}>"
        )

    @property
    def endpoint(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``, suitable for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        if self._server is None:
            raise RuntimeError("OtlpReceiver is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def traces_url(self) -> str:
        """Full traces URL, ``endpoint + "/v1/traces"``, for ``OTLPSpanExporter(endpoint=...)``."""
        return self.endpoint + TRACES_PATH

    @property
    def spans(self) -> list[ReceivedSpan]:
        """A snapshot of every span received so far, in arrival order."""
        with self._changed:
            return list(self._spans)

    @property
    def request_count(self) -> int:
        """POST requests to ``/v1/traces`` received since start or ``clear()``, whatever their outcome."""
        with self._changed:
            return self._request_count

    @property
    def rejections(self) -> list[str]:
        """Why recent requests were refused (bad path, content type, encoding or payload), oldest first."""
        with self._changed:
            return list(self._rejections)

    def clear(self) -> None:
        """Forget received spans, the request count and rejections."""
        with self._changed:
            self._spans.clear()
            self._request_count = 0
            self._rejections.clear()
            self._generation += 1

    def wait_until(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0, interval: float = 0.05
    ) -> list[ReceivedSpan] | None:
        """Wait until ``predicate(spans)`` is true and return those spans; ``None`` at the deadline.

        The predicate is checked at once, on each arrival and at least every ``interval`` seconds, so it
        may also depend on time (how long the spans have been quiet, say).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                spans = list(self._spans)
                generation = self._generation
            if predicate(spans):
                return spans
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(min(interval, remaining))

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 10.0,
        interval: float = 0.05,
        *,
        description: str = "",
    ) -> list[ReceivedSpan]:
        """Wait until ``predicate(spans)`` is true and return those spans.

        The predicate is checked at once, on each arrival and at least every ``interval`` seconds.
        On timeout, raises ``AssertionError`` summarising what was received.
        """
        spans = self.wait_until(predicate, timeout, interval)
        if spans is None:
            raise AssertionError(self._timeout_message(description or _describe(predicate), timeout))
        return spans

    def wait_for_spans(
        self,
        count: int | None = None,
        name: str | None = None,
        trace_id: str | None = None,
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait for at least ``count`` (default 1) spans matching ``name`` and ``trace_id``; return them."""
        wanted = 1 if count is None else count
        trace = trace_id.lower() if trace_id is not None else None

        def matching(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [
                span
                for span in spans
                if (name is None or span.name == name) and (trace is None or span.trace_id == trace)
            ]

        criteria = [f"at least {wanted} span(s)"]
        if name is not None:
            criteria.append(f"named {name!r}")
        if trace is not None:
            criteria.append(f"in trace {trace}")
        spans = self.wait_for(
            lambda spans: len(matching(spans)) >= wanted, timeout=timeout, description=" ".join(criteria)
        )
        return matching(spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace (hex id, any case), ordered by start time."""
        wanted = trace_id.lower()
        return sorted(
            (span for span in self.spans if span.trace_id == wanted), key=lambda span: span.start_ns
        )

    def by_name(self, name: str) -> list[ReceivedSpan]:
        """The spans with this name, in arrival order."""
        return [span for span in self.spans if span.name == name]

    def children(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        """The direct children of ``span``, ordered by start time."""
        return sorted(
            (
                child
                for child in self.spans
                if child.trace_id == span.trace_id and child.parent_span_id == span.span_id
            ),
            key=lambda child: child.start_ns,
        )

    def _count_request(self) -> None:
        with self._changed:
            self._request_count += 1

    def _reject(self, reason: str) -> None:
        _logger.debug("OTLP receiver rejected a request: %s", reason)
        with self._changed:
            self._rejections.append(reason)
            del self._rejections[:-_REJECTION_LIMIT]

    def _store(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self._spans.extend(spans)
            self._generation += 1
            self._changed.notify_all()

    def _timeout_message(self, description: str, timeout: float) -> str:
        spans = self.spans
        lines = [
            f"timed out after {timeout:g}s waiting for {description}",
            f"received {len(spans)} span(s) in {self.request_count} request(s) (mode={self.mode!r})"
            + (":" if spans else ""),
        ]
        if spans:
            lines.append(_summarize(spans))
        if rejections := self.rejections:
            lines.append("rejected requests:")
            lines.extend(f"  {reason}" for reason in rejections)
        return "\n".join(lines)


def _describe(predicate: Callable[..., bool]) -> str:
    name = getattr(predicate, "__qualname__", None) or repr(predicate)
    return f"predicate {name}"


def start_receiver() -> OtlpReceiver:
    """Start an ``OtlpReceiver`` on a free port and return it; the caller must ``stop()`` it."""
    return OtlpReceiver().start()

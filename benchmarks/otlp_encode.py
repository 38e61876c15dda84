"""Measure the OTLP/protobuf span encoder, the SDK's against tracehook's, in µs per span.

Run from the repository root::

    .venv/bin/python benchmarks/otlp_encode.py              # 9 rounds, batches of 64 and 512
    .venv/bin/python benchmarks/otlp_encode.py --quick      # 3 rounds (smoke run)
    .venv/bin/python benchmarks/otlp_encode.py --export     # also the export thread's CPU per span

The batch alternates two spans made by the SDK's tracer, as tracehook's pipeline hands them to the
exporter: a CONSUMER span with 13 attributes like ``instrument_celery``'s run span (``messaging.*`` and
``celery.*``, strings, ints, a float) and a 5-attribute INTERNAL span, under one resource like
``configure_tracing``'s and two scopes. Each round encodes the batch repeatedly with each encoder (order
alternating, garbage collector off) and takes CPU time per span; the medians over the rounds are printed.

``--export`` also measures a whole ``export()`` call, the SDK's ``OTLPSpanExporter`` against
``TracehookOTLPSpanExporter``: the exporting thread's CPU per span (encoding, the HTTP POST, reading the
answer) against a local endpoint, in a child process, that reads each request and discards it.
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import code_fingerprint, free_port, median

_CHILD_SERVE = "--serve-discard"


def make_spans(count: int) -> list[object]:
    """``count`` finished spans, alternating the run-like CONSUMER span and the 5-attribute INTERNAL one."""
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: PLC0415
    from opentelemetry.trace import SpanKind  # noqa: PLC0415

    resource = Resource.create(
        {
            "service.name": "billing-worker",
            "service.version": "1.4.2",
            "deployment.environment.name": "production",
            "deployment.environment": "production",
            "host.name": "worker-7f9c6d",
            "process.pid": 48213,
            "process.runtime.name": "cpython",
            "process.runtime.version": "3.11.9",
        }
    )
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    celery = provider.get_tracer("tracehook.celery", "0.1.0")
    steps = provider.get_tracer("tracehook", "0.1.0")
    for index in range(count // 2 + 1):
        task_id = f"5d7f3c2a-9b1e-4c8d-a6f0-{index:012d}"
        run_attributes = {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.destination.name": "celery",
            "messaging.message.id": task_id,
            "messaging.client.id": "celery@worker-7f9c6d",
            "celery.task_name": "tasks.charge_invoice",
            "celery.task_id": task_id,
            "celery.retries": 0,
            "celery.attempt": 1,
            "celery.root_id": "0b8e4f1c-2d3a-4e5f-8a9b-0c1d2e3f4a5b",
            "celery.queue_wait_ms": 3.214,
            "celery.state": "SUCCESS",
        }
        step_attributes = {
            "workflow.name": "invoice",
            "workflow.step": "charge",
            "workflow.event_id": f"evt_{index:08d}",
            "workflow.attempt": 1,
            "workflow.duration_ms": 12.5,
        }
        with (
            celery.start_as_current_span(
                "run tasks.charge_invoice", kind=SpanKind.CONSUMER, attributes=run_attributes
            ),
            steps.start_as_current_span("workflow.step", attributes=step_attributes),
        ):
            pass
    spans: list[object] = list(memory.get_finished_spans())
    return spans[:count]


def cpu_per_span(run: Callable[[], object], spans: int, min_seconds: float) -> float:
    """µs of this thread's CPU per span, running ``run`` (one batch) until ``min_seconds`` have passed."""
    run()
    gc.collect()
    gc.disable()
    try:
        calls = 0
        started = time.thread_time_ns()
        while True:
            run()
            calls += 1
            elapsed = time.thread_time_ns() - started
            if elapsed >= min_seconds * 1e9:
                return elapsed / 1000 / (calls * spans)
    finally:
        gc.enable()


def measure(
    variants: dict[str, Callable[[], object]], spans: int, rounds: int, seconds: float
) -> dict[str, float]:
    """Median µs per span of each variant over ``rounds`` interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            samples[name].append(cpu_per_span(variants[name], spans, seconds))
    return {name: round(median(values), 2) for name, values in samples.items()}


def encode_variants(batch: Sequence[object]) -> dict[str, Callable[[], object]]:
    """The SDK's encoder and tracehook's, on ``batch``; checks first that their bytes are equal."""
    from tracing._otlp_encode import encode_spans, encode_spans_upstream  # noqa: PLC0415

    spans: list = list(batch)
    if encode_spans(spans) != encode_spans_upstream(spans):
        raise SystemExit("the encoders disagree on the benchmark batch")
    return {"upstream": lambda: encode_spans_upstream(spans), "tracehook": lambda: encode_spans(spans)}


def export_variants(batch: Sequence[object], url: str) -> dict[str, Callable[[], object]]:
    """The SDK's exporter and tracehook's, both posting ``batch`` to ``url``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: PLC0415

    from tracing._otlp_export import TracehookOTLPSpanExporter  # noqa: PLC0415

    spans: list = list(batch)
    upstream, tracehook = OTLPSpanExporter(endpoint=url), TracehookOTLPSpanExporter(endpoint=url)
    for exporter in (upstream, tracehook):
        if exporter.export(spans) is not SpanExportResult.SUCCESS:
            raise SystemExit(f"export to {url} failed")
    return {"upstream": lambda: upstream.export(spans), "tracehook": lambda: tracehook.export(spans)}


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        else:
            return


def serve_discard(port: int) -> None:
    """Answer every POST with 200 after reading its body, keeping connections alive; runs until killed."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    """Parse the arguments, run the measurements, print one JSON document."""
    if len(sys.argv) == 3 and sys.argv[1] == _CHILD_SERVE:
        serve_discard(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s per variant")
    parser.add_argument("--export", action="store_true", help="also measure export() to a local endpoint")
    args = parser.parse_args()
    rounds, seconds = (3, 0.2) if args.quick else (9, 1.0)
    results: dict[str, object] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "code": code_fingerprint("tracing/_otlp_encode.py", "tracing/_otlp_export.py"),
        "rounds": rounds,
        "unit": "µs of CPU per span (median over rounds)",
    }
    spans = make_spans(512)
    for size in (64, 512):
        results[f"encode_{size}"] = measure(encode_variants(spans[:size]), size, rounds, seconds)
    if args.export:
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, _CHILD_SERVE, str(port)])
        try:
            wait_for_port(port)
            variants = export_variants(spans[:64], f"http://127.0.0.1:{port}/v1/traces")
            results["export_64"] = measure(variants, 64, rounds, seconds)
        finally:
            server.terminate()
            server.wait(10)
    for value in results.values():
        if isinstance(value, dict) and "upstream" in value:
            value["ratio"] = round(value["tracehook"] / value["upstream"], 3)
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

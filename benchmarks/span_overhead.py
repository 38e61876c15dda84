"""Measure what tracehook's tracing helpers cost per span and per log line.

Run from the repository root::

    .venv/bin/python benchmarks/span_overhead.py            # 7 rounds x 20,000 ops per variant
    .venv/bin/python benchmarks/span_overhead.py --quick    # 3 rounds x 2,000 ops (smoke run)
    .venv/bin/python benchmarks/span_overhead.py --json     # machine-readable results only

What is measured
----------------
1. Spans, ns per span, each span opened as the current span with the same 5 start attributes
   (one of them holds a Luhn-valid card number, so tracehook's scrubber has something to mask):

   * ``bare SDK``: an OpenTelemetry SDK ``TracerProvider`` of its own (not the global one, default span
     limits and resource) and ``tracer.start_as_current_span(name, attributes=...)``;
   * ``tracehook``: ``configure_tracing(TracingSettings(service_name="bench", exporter="none"), ...)``
     (global provider, TracehookSpanProcessor scrubbing on end) and ``with trace_span(name, attributes=...)``.

   Both sides use the same sampler (tracehook's production one, ``ParentBased(RuleBasedSampler(1.0))``,
   unless ``--sampler always_on``) and the same delegate: ``SimpleSpanProcessor`` in front of a
   ``CountingExporter`` that does no I/O (``--batch``: ``BatchSpanProcessor`` with a queue large enough
   never to drop, in front of the same exporter).

2. Log lines, ns per ``structlog.get_logger("bench").info("workflow.step", event_id=..., step=...,
   duration_ms=...)`` line rendered as JSON into an in-memory sink (an ``io.StringIO`` emptied every
   100 lines), all configured by ``tracing.configure_logging(..., fmt="json")``:

   * (a) ``plain``: ``correlate=False, mirror_to_spans=False``, no recording span is current;
   * (b) ``correlated``: ``correlate=True, mirror_to_spans=False``, inside a recording span;
   * (c) ``mirrored``: ``correlate=True, mirror_to_spans=True``, inside a recording span (each line also
     becomes a span event, scrubbed again when the span ends).

   Every variant starts a fresh span (tracehook's provider) every 100 lines, so no span reaches the
   SDK's limit of 128 events, and ends it after those lines; (b) and (c) make it the current span, (a)
   makes the invalid span current instead (the state outside any span), so the restart costs the same.

Method
------
The machine this runs on is noisy, so the variants are interleaved: after a warm-up, each round runs
every variant once (the order rotates between rounds), each for N operations in a tight loop timed with
``time.perf_counter_ns`` with the garbage collector off (it collects between runs). Reported: median and
minimum ns/op over the rounds, and ratios of the medians (the ratio of minimums for information).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

# The editable install maps ``tracing`` through a path hook that loses to a namespace-package lookup when
# the script's own directory (benchmarks/) heads sys.path, leaving an empty ``tracing`` module: put the
# repository root first so the real package is imported.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import tracing  # noqa: E402
from tracing import (  # noqa: E402
    TracingSettings,
    build_sampler,
    configure_logging,
    configure_tracing,
    trace_span,
)

SPAN_NAME: Final = "bench.op"
CARD: Final = "4111 1111 1111 1111"
ATTRIBUTES: Final[dict[str, str | int]] = {
    "rentvine.work_order_id": "wo_1",
    "http.method": "GET",
    "http.status_code": 200,
    "note": f"paid with card {CARD}",
    "retries": 0,
}
LINES_PER_SPAN: Final = 100
# A correlated line costs at most 1.2x a plain one (the drop-in issue's logging item). Spans have no goal
# of their own here: what a span costs is judged end to end, per task and per webhook
# (benchmarks/celery_overhead.py, benchmarks/intake_throughput.py); this ratio is for information.
LOG_GOAL: Final = 1.20


class CountingExporter(SpanExporter):
    """Counts the spans it is given and keeps the last one; no I/O."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Count the batch and remember its last span."""
        self.count += len(spans)
        if spans:
            self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:  # the SDK's signature
        """Nothing is buffered here."""
        return True


@dataclass(slots=True)
class Variant:
    """One timed loop: ``run(n)`` does n operations and returns the elapsed ns."""

    key: str
    label: str
    run: Callable[[int], int]
    samples: list[float] = field(default_factory=list)  # ns per operation, one per round

    @property
    def median(self) -> float:
        """Median ns/op over the rounds."""
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        """Fastest round, ns/op."""
        return min(self.samples)


@dataclass(slots=True)
class Config:
    """What one run of the benchmark does."""

    rounds: int
    iterations: int
    warmup: int
    sampler: str
    batch: bool

    @property
    def queue_size(self) -> int:
        """A batch queue no run can fill (a full queue drops spans, which would flatter the numbers)."""
        return max(2048, 4 * (self.iterations + self.warmup))


def _make_sampler(name: str) -> Sampler:
    if name == "always_on":
        return ALWAYS_ON
    return build_sampler(1.0, 1.0, 0.01)  # what configure_tracing builds from the default settings


def _delegate(exporter: SpanExporter, config: Config) -> SpanProcessor:
    if config.batch:
        return BatchSpanProcessor(exporter, max_queue_size=config.queue_size)
    return SimpleSpanProcessor(exporter)


def _timed(loop: Callable[[int], None]) -> Callable[[int], int]:
    """Wrap a loop so it runs with the garbage collector off and reports the elapsed ns."""

    def run(n: int) -> int:
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            loop(n)
            return time.perf_counter_ns() - start
        finally:
            gc.enable()

    return run


# -- spans -------------------------------------------------------------------------------------------


def _bare_loop(tracer: trace.Tracer) -> Callable[[int], None]:
    def loop(n: int) -> None:
        attributes = ATTRIBUTES
        start = tracer.start_as_current_span
        for _ in range(n):
            with start(SPAN_NAME, attributes=attributes):
                pass

    return loop


def _tracehook_loop(n: int) -> None:
    attributes = ATTRIBUTES
    for _ in range(n):
        with trace_span(SPAN_NAME, attributes=attributes):
            pass


# -- log lines ---------------------------------------------------------------------------------------


class LogBench:
    """The three log-line variants; each reconfigures logging (untimed) before its loop."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.sink = io.StringIO()
        self.settings = TracingSettings(service_name="bench", exporter="none")

    def _configure(self, *, correlate: bool, mirror: bool) -> None:
        configure_logging(
            self.settings, fmt="json", stream=self.sink, correlate=correlate, mirror_to_spans=mirror
        )

    def _loop(self, n: int, *, current: bool) -> None:
        log = structlog.get_logger("bench")
        tracer = self.tracer
        sink = self.sink
        attach, detach = otel_context.attach, otel_context.detach
        set_span = trace.set_span_in_context
        invalid = trace.INVALID_SPAN
        done = 0
        while done < n:
            lines = min(LINES_PER_SPAN, n - done)
            span = tracer.start_span("bench.log_batch")
            token = attach(set_span(span if current else invalid))
            try:
                for _ in range(lines):
                    log.info("workflow.step", event_id="evt_1", step="fetch", duration_ms=1.5)
            finally:
                detach(token)
            span.end()
            sink.seek(0)
            sink.truncate()
            done += lines

    def check(self) -> None:
        """One line per variant: ids only when correlated, a span event only when mirrored."""
        for correlate, mirror, current in ((False, False, False), (True, False, True), (True, True, True)):
            self._configure(correlate=correlate, mirror=mirror)
            self.sink.seek(0)
            self.sink.truncate()
            span = self.tracer.start_span("bench.check")
            token = otel_context.attach(trace.set_span_in_context(span if current else trace.INVALID_SPAN))
            try:
                structlog.get_logger("bench").info("workflow.step", event_id="evt_1", step="fetch")
            finally:
                otel_context.detach(token)
            events = len(span.events) if isinstance(span, ReadableSpan) else -1
            span.end()
            line = json.loads(self.sink.getvalue())
            if ("trace_id" in line) != correlate or events != (1 if mirror else 0):
                msg = f"log variant correlate={correlate} mirror={mirror}: line {line}, {events} span events"
                raise RuntimeError(msg)

    def run(self, n: int, *, correlate: bool, mirror: bool, current: bool) -> int:
        """Configure logging for the variant, then time n lines."""
        self._configure(correlate=correlate, mirror=mirror)
        return _timed(lambda count: self._loop(count, current=current))(n)


# -- running -----------------------------------------------------------------------------------------


def _measure(variants: list[Variant], config: Config) -> None:
    for variant in variants:  # warm-up: imports, caches, specialisation, allocator pools
        variant.run(config.warmup)
    for round_no in range(config.rounds):
        shift = round_no % len(variants)
        order = variants[shift:] + variants[:shift]
        if round_no % 2:
            order.reverse()
        for variant in order:
            elapsed = variant.run(config.iterations)
            variant.samples.append(elapsed / config.iterations)


def _check_spans(bare: CountingExporter, hook: CountingExporter, expected: int) -> None:
    for name, exporter in (("bare SDK", bare), ("tracehook", hook)):
        if exporter.count != expected:
            msg = f"{name}: exporter saw {exporter.count} spans, expected {expected} (dropped or unsampled?)"
            raise RuntimeError(msg)
    bare_note = bare.last.attributes.get("note") if bare.last and bare.last.attributes else None
    hook_note = hook.last.attributes.get("note") if hook.last and hook.last.attributes else None
    if bare_note != ATTRIBUTES["note"] or not isinstance(hook_note, str) or CARD in hook_note:
        msg = f"scrubbing check failed: bare note={bare_note!r}, tracehook note={hook_note!r}"
        raise RuntimeError(msg)


def run_benchmark(config: Config) -> dict[str, Any]:
    """Run both benchmarks and return the results (ns/op per variant and ratios)."""
    sampler = _make_sampler(config.sampler)

    bare_exporter = CountingExporter()
    bare_provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    bare_provider.add_span_processor(_delegate(bare_exporter, config))
    bare_tracer = bare_provider.get_tracer("bench.baseline")

    tracing.reset_tracing()
    hook_exporter = CountingExporter()
    provider = configure_tracing(
        TracingSettings(service_name="bench", exporter="none", max_queue_size=config.queue_size),
        exporter=hook_exporter,
        sampler=_make_sampler(config.sampler),
        batch=config.batch,
    )
    try:
        span_variants = [
            Variant("bare_sdk_span", "bare SDK span, 5 attrs", _timed(_bare_loop(bare_tracer))),
            Variant("tracehook_span", "tracehook trace_span, 5 attrs", _timed(_tracehook_loop)),
        ]
        _measure(span_variants, config)
        bare_provider.force_flush()
        provider.force_flush()
        _check_spans(bare_exporter, hook_exporter, config.warmup + config.rounds * config.iterations)

        logs = LogBench(provider.get_tracer("bench.logs"))
        logs.check()
        log_variants = [
            Variant(
                "log_plain",
                "(a) log line, plain",
                lambda n: logs.run(n, correlate=False, mirror=False, current=False),
            ),
            Variant(
                "log_correlated",
                "(b) log line, correlated",
                lambda n: logs.run(n, correlate=True, mirror=False, current=True),
            ),
            Variant(
                "log_mirrored",
                "(c) log line, correlated+mirrored",
                lambda n: logs.run(n, correlate=True, mirror=True, current=True),
            ),
        ]
        _measure(log_variants, config)
    finally:
        tracing.reset_tracing()
        bare_provider.shutdown()

    bare, hook = span_variants
    plain, correlated, mirrored = log_variants
    return {
        "config": {
            "rounds": config.rounds,
            "iterations": config.iterations,
            "warmup": config.warmup,
            "sampler": "ALWAYS_ON"
            if config.sampler == "always_on"
            else "ParentBased(RuleBasedSampler(rate=1.0))",
            "delegate": (
                f"BatchSpanProcessor(CountingExporter, max_queue_size={config.queue_size})"
                if config.batch
                else "SimpleSpanProcessor(CountingExporter)"
            ),
            "python": platform.python_version(),
            "opentelemetry_sdk": metadata.version("opentelemetry-sdk"),
            "structlog": metadata.version("structlog"),
        },
        "variants": {
            v.key: {
                "label": v.label,
                "median_ns": round(v.median, 1),
                "min_ns": round(v.minimum, 1),
                "rounds_ns": [round(s, 1) for s in v.samples],
            }
            for v in (*span_variants, *log_variants)
        },
        "ratios": {
            key: round(value, 4)
            for key, value in (
                ("span_tracehook_over_bare", hook.median / bare.median),
                ("span_tracehook_over_bare_min", hook.minimum / bare.minimum),
                ("log_correlated_over_plain", correlated.median / plain.median),
                ("log_correlated_over_plain_min", correlated.minimum / plain.minimum),
                ("log_mirrored_over_plain", mirrored.median / plain.median),
                ("log_mirrored_over_plain_min", mirrored.minimum / plain.minimum),
            )
        },
        "goals": {"log_correlated_over_plain": LOG_GOAL},
    }


def _verdict(ratio: float, goal: float) -> str:
    return "ok" if ratio <= goal else "ABOVE GOAL"


def render(results: dict[str, Any]) -> str:
    """The human-readable report."""
    cfg = results["config"]
    variants = results["variants"]
    ratios = results["ratios"]
    lines = [
        f"tracehook overhead: python {cfg['python']}, opentelemetry-sdk {cfg['opentelemetry_sdk']}, "
        f"structlog {cfg['structlog']}",
        f"{cfg['rounds']} rounds x {cfg['iterations']} ops per variant (warm-up {cfg['warmup']}); "
        f"sampler {cfg['sampler']}; delegate {cfg['delegate']}",
        "",
        f"{'variant':<36}{'median ns/op':>14}{'min ns/op':>12}",
    ]
    for key, row in variants.items():
        if key == "log_plain":
            lines.append("")
        lines.append(f"{row['label']:<36}{row['median_ns']:>14,.0f}{row['min_ns']:>12,.0f}")
    span_ratio = ratios["span_tracehook_over_bare"]
    log_ratio = ratios["log_correlated_over_plain"]
    lines += [
        "",
        f"ratios of medians (of minimums):  spans {span_ratio:.2f}x "
        f"({ratios['span_tracehook_over_bare_min']:.2f}x)   "
        f"b/a {log_ratio:.2f}x ({ratios['log_correlated_over_plain_min']:.2f}x)   "
        f"c/a {ratios['log_mirrored_over_plain']:.2f}x ({ratios['log_mirrored_over_plain_min']:.2f}x)",
        "",
        f"info: trace_span / bare SDK span = {span_ratio:.2f}x (a card number to scrub in each)",
        f"goal: correlated log line / plain = {log_ratio:.2f}x (goal <= {LOG_GOAL:.2f}x)  "
        f"[{_verdict(log_ratio, LOG_GOAL)}]",
        f"info: correlated+mirrored log line / plain = {ratios['log_mirrored_over_plain']:.2f}x",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 rounds x 2,000 ops (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results only")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, --quick 3)")
    parser.add_argument("-n", "--iterations", type=int, help="ops per variant per round (default 20000)")
    parser.add_argument(
        "--sampler",
        choices=("rule", "always_on"),
        default="rule",
        help="sampler for both sides: tracehook's ParentBased rule sampler (default) or ALWAYS_ON",
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="BatchSpanProcessor (large queue) instead of SimpleSpanProcessor as the delegate, both sides",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="no card number in the attributes (the common span: scrubbing checks, finds nothing to mask)",
    )
    args = parser.parse_args(argv)
    if args.clean:
        ATTRIBUTES["note"] = "paid by ach transfer"
    rounds = args.rounds or (3 if args.quick else 7)
    iterations = args.iterations or (2_000 if args.quick else 20_000)
    if rounds < 1 or iterations < 1:
        parser.error("--rounds and --iterations must be positive")
    config = Config(
        rounds=rounds,
        iterations=iterations,
        warmup=min(iterations, 2_000),
        sampler=args.sampler,
        batch=args.batch,
    )
    results = run_benchmark(config)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak: N signed webhooks at a fixed rate through intake → Redis → prefork worker → sandbox, then accounting.

Every process is real and of its own: a ``redis-server`` on a free port (append-only file, as compose runs
it), the sandbox, the intake (uvicorn), one prefork worker, and an OTLP receiver in this process. The
senders behave like RentVine: a non-2xx answer is retried with the same webhook-id.

Accounting: accepted == completed + dead-lettered; lost (accepted, neither completed nor dead-lettered)
and run twice (completed more than once) must both be zero. Throughput is accepted webhooks per second
from the first send to the last completion; latency is intake receipt (the root span's start) to
workflow completion (the workflow span's end), from the traces. The worker's RSS (parent and pool) is
read after a warm-up and at the end.

The same latency as the worker's metric ``tracehook_webhook_completion_seconds`` sees it (completed
webhooks, scraped at the end): p50 and p99 read off its buckets as Prometheus's ``histogram_quantile``
does, and whether each lies in the bucket of the traces' figure ("agree within a bucket").

    python benchmarks/soak.py                 # 5,000 webhooks at 25/s
    python benchmarks/soak.py --n 10000 --rate 40 --json soak.json

Exit status 1 when anything was lost or run twice.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

# The repository's packages (tests, workflows, benchmarks), not whatever the script's directory shadows.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import code_fingerprint, free_port, quantile, rss_kb, terminate_on_sigterm  # noqa: E402
from tests.metrics_scrape import Scrape, scrape  # noqa: E402
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan  # noqa: E402
from tests.reliability.conftest import Cluster, RedisServer, make_cluster, wait_until  # noqa: E402
from workflows.events import FIXTURES, load_fixture  # noqa: E402
from workflows.metrics import COMPLETION_BUCKETS_S  # noqa: E402

SENDER_RETRY_S = 0.2
WARM_UP = 50
COMPLETION = "tracehook_webhook_completion_seconds"
# The worker reads a webhook's end just after its workflow span ends: a trace's figure can be that much
# under the metric's, and so just under the lower bound of the metric's bucket.
END_SLACK_S = 0.005


def events(n: int) -> list[dict[str, Any]]:
    """``n`` events cycling through every sample, each with ids of its own."""
    made = []
    for index in range(n):
        event = load_fixture(FIXTURES[index % len(FIXTURES)])
        suffix = uuid.uuid4().hex[:12]
        event["id"] = f"evt_soak_{suffix}"
        data = event["data"]
        for key in ("payment_id", "work_order_id", "lease_id"):
            if key in data:
                data[key] = f"{key.split('_')[0]}_{suffix}"
        made.append(event)
    return made


async def send_all(cluster: Cluster, batch: list[dict[str, Any]], rate: float) -> dict[str, list[int]]:
    """Send each event at its slot of a fixed rate; retry non-2xx answers until a 2xx. Returns answers."""
    answers: dict[str, list[int]] = collections.defaultdict(list)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def deliver(event: dict[str, Any], at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            body = json.dumps(event).encode()
            for _ in range(100):
                try:
                    code = (
                        await client.post(
                            cluster.intake_url, content=body, headers=cluster.headers(body, event["id"])
                        )
                    ).status_code
                except httpx.HTTPError:
                    code = 0
                answers[event["id"]].append(code)
                if 200 <= code < 300:
                    return
                await asyncio.sleep(SENDER_RETRY_S)

        start = time.monotonic()
        await asyncio.gather(*(deliver(event, start + i / rate) for i, event in enumerate(batch)))
    return answers


def latencies_ms(spans: list[ReceivedSpan]) -> tuple[list[float], collections.Counter[str]]:
    """Receipt → completion per trace, and how many workflow spans each event had."""
    by_type, runs = latencies_by_type(spans)
    return [ms for values in by_type.values() for ms in values], runs


def latencies_by_type(spans: list[ReceivedSpan]) -> tuple[dict[str, list[float]], collections.Counter[str]]:
    """Receipt → completion per trace grouped by event type, and how many workflow spans each event had."""
    roots: dict[str, tuple[int, str]] = {}
    ends: dict[str, int] = {}
    runs: collections.Counter[str] = collections.Counter()
    for span in spans:
        if not span.parent_span_id and span.name.startswith("webhook."):
            roots[span.trace_id] = (span.start_ns, span.name.removeprefix("webhook."))
        elif span.name.startswith("workflow.") and not span.name.startswith("workflow.step."):
            runs[str(span.attributes.get("workflow.event_id"))] += 1
            if span.attributes.get("workflow.status") == "completed":
                ends[span.trace_id] = max(ends.get(span.trace_id, 0), span.end_ns)
    grouped: dict[str, list[float]] = collections.defaultdict(list)
    for trace_id, end in ends.items():
        if trace_id in roots:
            start, event_type = roots[trace_id]
            grouped[event_type].append((end - start) / 1e6)
    return dict(grouped), runs


def latencies_over_time(spans: list[ReceivedSpan], windows: int = 10) -> list[dict[str, float]]:
    """p50/p99 of receipt → completion in each tenth of the run (by receipt): growth over time, or a
    passing jam?"""
    roots = {s.trace_id: s.start_ns for s in spans if not s.parent_span_id and s.name.startswith("webhook.")}
    ends: dict[str, int] = {}
    for span in spans:
        if span.name.startswith("workflow.") and not span.name.startswith("workflow.step."):
            ends[span.trace_id] = max(ends.get(span.trace_id, 0), span.end_ns)
    ordered = sorted((roots[t], (end - roots[t]) / 1e6) for t, end in ends.items() if t in roots)
    size = max(1, len(ordered) // windows)
    chunks = [[ms for _, ms in ordered[i : i + size]] for i in range(0, len(ordered), size)]
    return [{"p50": round(quantile(c, 0.5), 1), "p99": round(quantile(c, 0.99), 1)} for c in chunks]


def completed_buckets(scraped: Scrape) -> list[float]:
    """Cumulative counts of completed webhooks per bucket bound (then +Inf), over every event type."""
    bounds = [repr(bound) for bound in COMPLETION_BUCKETS_S] + ["+Inf"]
    return [scraped.value(f"{COMPLETION}_bucket", outcome="completed", le=le) for le in bounds]


def histogram_quantile(q: float, cumulative: list[float]) -> tuple[float, float, float]:
    """(estimate, lower, upper) of the ``q`` quantile from cumulative bucket counts, as Prometheus's
    ``histogram_quantile`` computes it: linear within the bucket the rank falls in; NaN when empty."""
    total = cumulative[-1]
    if not total:
        return math.nan, math.nan, math.nan
    rank = q * total
    bounds = [*COMPLETION_BUCKETS_S, math.inf]
    index = next(i for i, count in enumerate(cumulative) if count >= rank)
    lower = bounds[index - 1] if index else 0.0
    upper = bounds[index]
    if math.isinf(upper):
        return lower, lower, upper
    below = cumulative[index - 1] if index else 0.0
    return lower + (upper - lower) * (rank - below) / (cumulative[index] - below), lower, upper


def objective_figures(cumulative: list[float], latencies: list[float]) -> dict[str, Any]:
    """The metric's p50/p99 beside the traces' (``latencies`` in ms), and whether each pair agrees."""
    figures: dict[str, Any] = {"metric_count": int(cumulative[-1]), "trace_count": len(latencies)}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        estimate, lower, upper = histogram_quantile(q, cumulative)
        from_traces = quantile(latencies, q) / 1000
        figures[name] = {
            "metric_ms": round(estimate * 1000, 1),
            "metric_bucket_ms": [round(lower * 1000, 1), round(upper * 1000, 1)],
            "traces_ms": round(from_traces * 1000, 1),
            "agree": lower - END_SLACK_S <= from_traces <= upper,
        }
    return figures


def soak(n: int, rate: float, concurrency: int, workdir: Path) -> dict[str, Any]:
    """Run the soak; returns the figures."""
    redis_server = RedisServer(workdir / "redis").start()
    receiver = OtlpReceiver().start()
    cluster = make_cluster(workdir, redis_server.url(), receiver, LOG_LEVEL="INFO")
    try:
        cluster.start_sandbox(TRACE_EXPORTER="none")
        cluster.start_intake()
        metrics_port = free_port()
        cluster.start_worker(concurrency=concurrency, WORKER_METRICS_PORT=str(metrics_port))
        worker_pid = cluster.processes["worker"].pid
        batch = events(n + WARM_UP)
        warm, rest = batch[:WARM_UP], batch[WARM_UP:]
        asyncio.run(send_all(cluster, warm, rate))
        wait_until(lambda: len(cluster.completions()) >= len(warm), 120, "the warm-up to complete")
        rss_start = rss_kb(worker_pid)
        started = time.monotonic()
        answers = asyncio.run(send_all(cluster, rest, rate))
        sent_s = time.monotonic() - started
        accepted = {i for i, codes in answers.items() if 202 in codes}
        drain_deadline = max(120.0, n / rate)

        def settled() -> set[str]:
            return {i for i, c in cluster.completions().items() if c} | cluster.dead_lettered()

        with contextlib.suppress(AssertionError):  # what never settles is reported as lost below
            wait_until(lambda: accepted <= settled(), drain_deadline, "every accepted webhook to settle", 0.5)
        elapsed_s = time.monotonic() - started
        rss_end = rss_kb(worker_pid)
        completions = cluster.completions()
        dead = cluster.dead_lettered()
        completed = {i for i in accepted if completions[i]}
        receiver.wait_for(lambda spans: len(latencies_ms(spans)[0]) >= len(completed) + len(warm), timeout=60)
        receiver_spans = receiver.spans
        by_type, runs = latencies_by_type(receiver_spans)
        latencies = [ms for values in by_type.values() for ms in values]
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        # Pool children write their metrics about once a second: wait for every completion to be in.
        with contextlib.suppress(AssertionError):  # a shortfall shows as metric_count below
            wait_until(
                lambda: completed_buckets(scrape(metrics_url))[-1] >= len(latencies),
                30,
                "the worker's metrics to count every completion",
                0.2,
            )
        cumulative = completed_buckets(scrape(metrics_url))
    finally:
        cluster.close()
        receiver.stop()
        redis_server.stop()
    lost = accepted - completed - dead
    twice = {i for i in accepted if completions[i] > 1 or runs[i] > 1}
    refused = sum(1 for codes in answers.values() for code in codes if not 200 <= code < 300)
    return {
        "webhooks": len(rest),
        "warm_up": len(warm),
        "rate_per_s": rate,
        "concurrency": concurrency,
        "accepted": len(accepted),
        "duplicate_answers": sum(1 for codes in answers.values() if codes[-1] == 200),
        "refused_then_retried": refused,
        "completed": len(completed),
        "dead_lettered": len(dead & accepted),
        "lost": len(lost),
        "run_twice": len(twice),
        "lost_ids": sorted(lost)[:20],
        "run_twice_ids": sorted(twice)[:20],
        "send_s": round(sent_s, 1),
        "elapsed_s": round(elapsed_s, 1),
        "throughput_per_s": round(len(completed) / elapsed_s, 1) if elapsed_s else 0.0,
        "latency_ms": {
            "p50": round(quantile(latencies, 0.50), 1),
            "p99": round(quantile(latencies, 0.99), 1),
            "max": round(max(latencies, default=0.0), 1),
            "traces": len(latencies),
            "over_time": latencies_over_time(receiver_spans),
            "by_type": {
                name: {"p50": round(quantile(v, 0.5), 1), "p99": round(quantile(v, 0.99), 1), "n": len(v)}
                for name, v in sorted(by_type.items())
            },
        },
        "completion_metric": objective_figures(cumulative, latencies),
        "worker_rss_kb": {"start": rss_start, "end": rss_end, "growth": rss_end - rss_start},
        "code": code_fingerprint("workflows/*.py", "tracing/*.py", "workers/*.py"),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the soak, print the figures; exit 1 on anything lost or run twice."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, default=5000, help="webhooks to send after the warm-up (default 5000)"
    )
    parser.add_argument("--rate", type=float, default=25.0, help="webhooks per second (default 25)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    with terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="tracehook-soak-") as tmp:
        report = soak(args.n, args.rate, args.concurrency, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    latency, rss, metric = report["latency_ms"], report["worker_rss_kb"], report["completion_metric"]
    windows = ", ".join(f"{w['p50']:.0f}/{w['p99']:.0f}" for w in latency["over_time"])
    compared = "; ".join(
        f"{name} {figures['metric_ms']} ms (bucket {figures['metric_bucket_ms'][0]:g}-"
        f"{figures['metric_bucket_ms'][1]:g} ms) vs traces {figures['traces_ms']} ms: "
        f"{'agree' if figures['agree'] else 'DISAGREE'}"
        for name, figures in ((name, metric[name]) for name in ("p50", "p99"))
    )
    print(
        f"soak: {report['webhooks']} webhooks at {report['rate_per_s']:g}/s "
        f"(+{report['warm_up']} warm-up), worker --concurrency {report['concurrency']}\n"
        f"  accepted {report['accepted']} = completed {report['completed']} + dead-lettered "
        f"{report['dead_lettered']}; lost {report['lost']}; run twice {report['run_twice']}; "
        f"refused and retried {report['refused_then_retried']}\n"
        f"  throughput {report['throughput_per_s']}/s over {report['elapsed_s']} s\n"
        f"  receipt → completion: p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms "
        f"({latency['traces']} traces)\n"
        f"  p50 / p99 per tenth of the run: "
        f"{windows} ms\n"
        f"  {COMPLETION} ({metric['metric_count']} completed, {metric['trace_count']} traces): "
        f"{compared}\n"
        f"  worker RSS (parent + pool): {rss['start']} kB after warm-up → {rss['end']} kB "
        f"({rss['growth'] / 1024:+.1f} MB)"
    )
    return 1 if report["lost"] or report["run_twice"] else 0


if __name__ == "__main__":
    sys.exit(main())

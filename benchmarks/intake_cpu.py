"""What one intake process spends per webhook, without an HTTP server or a load generator beside it.

``benchmarks/intake_throughput.py`` measures what a user sees (requests per second through uvicorn, under
load from another process), on a 2-core machine where the servers, Redis, the load generator and the OTLP
endpoint share the CPUs: its rounds spread by ±20%, more than most changes worth measuring. This one
drives the app itself through ASGI, in one process per run, with 16 requests in flight, the same signed
``work_order_created`` events, real Redis and the OTLP/HTTP endpoint that discards (``benchmarks/_sink.py``)
in this process, so the only CPU counted is the app's (all its threads: the event loop and the span
export thread)::

    .venv/bin/python benchmarks/intake_cpu.py                    # 5 rounds of bare, intake, untraced
    .venv/bin/python benchmarks/intake_cpu.py --variants bare,intake,intake-nolog,intake-unsampled \\
        --rounds 7 --requests 2000

The servers are ``benchmarks/intake_throughput.py``'s (``VARIANTS``, the same settings): ``bare`` is the
enqueue-only endpoint, the others ``workflows.intake.create_app()`` with that variant's environment.
Every run is a fresh process: it warms up with 300 webhooks, then counts its CPU (``time.process_time``)
over ``--requests`` more, and the export of their spans (flushed before the clock stops). Rounds run
every variant once, in an order that rotates. Reported per variant: median and lowest CPU per webhook
over the rounds (the lowest is the least disturbed by the machine's other work), and both against
``bare``. Redis database 8 (or ``BENCH_REDIS_URL``) is flushed before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import code_fingerprint, median, ratio  # noqa: E402
from benchmarks._sink import OtlpSink  # noqa: E402
from benchmarks.intake_throughput import (  # noqa: E402
    REDIS_URL,
    ROUTE,
    SECRET,
    VARIANTS,
    _base_env,
    signed_events,
)

WARMUP: Final = 300
IN_FLIGHT: Final = 16
DEFAULT: Final = ("bare", "intake", "intake-untraced")
_Request = tuple[bytes, list[tuple[bytes, bytes]]]  # body, ASGI headers


def _requests(n: int) -> list[_Request]:
    """n fresh signed webhooks as (body, ASGI headers)."""
    prepared = []
    for body, signed in signed_events(f"cpu_{uuid.uuid4().hex[:10]}", n):
        headers = [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
        headers += [(name.lower().encode(), value.encode()) for name, value in signed.items()]
        prepared.append((body, headers))
    return prepared


async def _drive(
    app: Any, batch: Sequence[tuple[bytes, list[tuple[bytes, bytes]]]], statuses: list[int]
) -> None:
    """Send every webhook of ``batch`` through ``app``, ``IN_FLIGHT`` at a time."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": ROUTE,
            "raw_path": ROUTE.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        sent = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not sent.is_set():
                sent.set()
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))

        async with slots:
            await app(scope, receive, send)

    await asyncio.gather(*(one(body, headers) for body, headers in batch))


def _child(variant: str, n: int) -> dict[str, Any]:
    """One run, in this process: build the app from the environment, warm up, measure."""
    if variant == "bare":
        from benchmarks._bare_intake import app  # noqa: PLC0415
    else:
        from workflows.intake import create_app  # noqa: PLC0415

        app = create_app()
    batch = _requests(WARMUP + n)
    statuses: list[int] = []

    async def run() -> tuple[float, float]:
        await _drive(app, batch[:WARMUP], statuses)
        from tracing import flush_tracing  # noqa: PLC0415

        flush_tracing()
        cpu, wall = time.process_time(), time.perf_counter()
        await _drive(app, batch[WARMUP:], statuses)
        flush_tracing()  # the export of this run's spans counts
        return time.process_time() - cpu, time.perf_counter() - wall

    cpu_s, wall_s = asyncio.run(run())
    return {
        "variant": variant,
        "cpu_us": cpu_s / n * 1e6,
        "wall_us": wall_s / n * 1e6,
        "non_202": sum(1 for status in statuses if status != 202),
    }


def _run(variant: str, n: int, endpoint: str, log_path: Path) -> dict[str, Any]:
    env = {
        **_base_env(),
        "REDIS_URL": REDIS_URL,
        "WEBHOOK_SECRET": SECRET,
        "TRACE_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "LOG_LEVEL": "INFO",
        "CELERY_DEFAULT_QUEUE": f"bench-cpu-{variant}",
        **next(env for key, _, env in VARIANTS if key == variant),
    }
    if env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "down":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"  # discard port: refused at once
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--requests", str(n)]
    with log_path.open("ab") as log:  # the intake's log lines go to a file, as in intake_throughput
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.PIPE, check=False, timeout=600)
    if done.returncode != 0:
        msg = f"{variant}: exit {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stderr.decode().strip().splitlines()[-1])
    return result


def _flush_redis() -> None:
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--requests", type=int, default=1500, help="measured webhooks per run (default 1500)")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT),
        help="comma-separated (default " + ",".join(DEFAULT) + "): " + ", ".join(k for k, _, _ in VARIANTS),
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument("--child", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _child(args.child, args.requests)
        print(json.dumps(result), file=sys.stderr)  # stdout carries the intake's log lines
        return 0
    wanted = [key.strip() for key in args.variants.split(",") if key.strip()]
    known = {key for key, _, _ in VARIANTS}
    if "bare" not in wanted or any(key not in known for key in wanted):
        parser.error(f"--variants must include bare and name only: {', '.join(sorted(known))}")
    sink = OtlpSink().start()
    log_path = Path(tempfile.gettempdir()) / f"intake-cpu-{os.getpid()}.log"
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in wanted}
    _flush_redis()
    try:
        for round_index in range(args.rounds):
            shift = round_index % len(wanted)
            for variant in wanted[shift:] + wanted[:shift]:
                result = _run(variant, args.requests, sink.endpoint, log_path)
                runs[variant].append(result)
                if not args.json:
                    print(
                        f"round {round_index + 1}/{args.rounds} {variant:17s} {result['cpu_us']:7.0f} µs CPU"
                        f"/webhook  non-202 {result['non_202']}",
                        flush=True,
                    )
    finally:
        sink.stop()
        _flush_redis()
        log_path.unlink(missing_ok=True)
    summary = {
        key: {
            "median_us": median([r["cpu_us"] for r in results]),
            "min_us": min(r["cpu_us"] for r in results),
            "non_202": sum(r["non_202"] for r in results),
        }
        for key, results in runs.items()
    }
    for row in summary.values():
        row["median_x"] = ratio(row["median_us"], summary["bare"]["median_us"])
        row["min_x"] = ratio(row["min_us"], summary["bare"]["min_us"])
    report = {"summary": summary, "runs": runs, "code": code_fingerprint("workflows/*.py", "tracing/*.py")}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"\nCPU per webhook of one app process, {args.rounds} round(s) of {args.requests}; x = vs bare")
    print(f"{'variant':20s} {'median µs':>10s} {'x':>6s} {'lowest µs':>10s} {'x':>6s} {'non-202':>8s}")
    labels = {key: label for key, label, _ in VARIANTS}
    for key, row in summary.items():
        print(
            f"{labels[key][:20]:20s} {row['median_us']:10.0f} {row['median_x']:5.2f}x {row['min_us']:10.0f}"
            f" {row['min_x']:5.2f}x {row['non_202']:8d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

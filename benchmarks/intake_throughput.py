"""Measure the webhook intake: signed webhooks per second and p50/p99 latency, against a bare endpoint.

Run from the repository root (Redis must answer on 127.0.0.1:6379; database 8, or the one BENCH_REDIS_URL
names, is used and flushed before and after)::

    .venv/bin/python benchmarks/intake_throughput.py            # 3 rounds: 3,000 requests, 10 s open loop
    .venv/bin/python benchmarks/intake_throughput.py --quick    # 1 round: 1,000 requests, 5 s open loop
    .venv/bin/python benchmarks/intake_throughput.py --json     # machine-readable results only

Servers, each one uvicorn process started once and kept alive across rounds, with the same Redis
database and queue settings (a queue of its own each, ``CELERY_DEFAULT_QUEUE``):

1. ``bare``: ``benchmarks/_bare_intake.py``, a FastAPI endpoint that reads the body, ``json.loads`` it and
   publishes it with a plain Celery producer (``celery_config()``), on the event loop; no tracing, no
   signature check, no validation, no dedupe, no logging;
2. ``intake``, the headline: ``python -m workflows.cli intake`` (``tracehook intake``) with
   ``WEBHOOK_SECRET``, ``REDIS_URL`` (database 8), ``TRACE_EXPORTER=otlp`` to a live OTLP/HTTP endpoint in
   this process that accepts and discards (``benchmarks/_sink.py``: it decodes what it got only after the
   last run, to count the spans, so decoding steals no CPU from the servers), ``LOG_LEVEL=INFO`` with its
   JSON log lines going to a file;
3. references (``--variants`` picks): ``intake-none``, the same with ``TRACE_EXPORTER=none`` (spans made,
   not exported), and ``intake-down``, exporting to a closed port;
4. what the spans and the log line cost, side by side (only when ``--variants`` names them):
   ``intake-nolog`` (``LOG_LEVEL=WARNING``: no ``webhook.accepted`` line), ``intake-unsampled``
   (``TRACE_SAMPLING_RATE=0``: this fixture's spans are not recorded, so nothing is exported) and
   ``intake-untraced`` (both).

Method
------
The load comes from a separate process (this script with ``--load``), so it shares no GIL with the
servers nor with the OTLP receiver. It speaks HTTP/1.1 over asyncio streams on keep-alive connections:
a fraction of httpx's CPU per request, which matters where client and servers share a few CPUs
(``--client httpx`` uses ``httpx.AsyncClient`` instead, as a cross-check). Every request is a fresh
``work_order_created`` event (unique ``id``, ``work_order_id`` and ``webhook-id``) signed with
``signed_headers()``; bodies and headers are built before the timed part.

* Phase 1, peak throughput (closed loop): ``--concurrency`` connections (default 16) each send the next
  request as soon as their previous one is answered, ``--requests`` in all. req/s = requests / (first
  send -> last answer); a request's latency is send -> answer.
* Phase 2, latency at a fixed rate (open loop): one request every 1/R s for ``--duration`` s, R = half
  the bare endpoint's median peak from phase 1 (``--rate`` sets it), the same R for both servers. A
  request's latency runs from its scheduled send time to its answer, so time spent waiting for a free
  connection or behind a late generator counts (no coordinated omission); "lag" is how late the generator
  actually sent, its own share of that. Connections are opened as needed, up to 256.

Each phase warms every server up first (``--warmup`` requests, not measured), then runs ``--rounds``
rounds, each running every server once, the order alternating. Before every run the server's queue is
emptied; after it, the tasks in the queue are counted (one per 202 expected) and the queue deleted, so
Redis does not grow. Every answer must be 202 (the bare endpoint answers 202 too): other statuses and
transport errors are counted and reported.

Also per run, per request: CPU of the server process (``/proc/<pid>/stat``, all threads: the event loop,
anyio's worker threads, the span export thread), of Redis (``INFO cpu``), of the load generator and of
this process (the endpoint storing requests). They are read once the endpoint has had no export for
0.5 s, so a span backlog the intake exports after a run counts for that run, not against the next
server. Reported: medians over the rounds, ratios against ``bare``. The machine is small and noisy, hence
the interleaved, repeated rounds; a ratio within ~5 points of a goal is within the noise.

Diagnosis: ``--env KEY=VALUE`` runs the intake with an extra variable (``LOG_LEVEL=WARNING``,
``TRACE_EXPORTER=none``, ``TRACE_SAMPLING_RATE=0``: what one piece costs); ``--phases peak`` skips the
open-loop phase. ``--profile DIR`` runs the intake under cProfile, every thread (event loop, anyio workers,
span exporter) timed in its own CPU time (``time.thread_time``: waiting for the GIL or for Redis costs
nothing), through this script's ``--serve-intake`` wrapper around the same ``workflows.cli`` entry point,
and writes ``DIR/intake.prof`` and ``DIR/intake-top.txt`` when it stops. Profiling slows the
intake down a lot: its numbers are then not the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# Import the repository's packages (workflows, tests, benchmarks), not whatever the script's own
# directory would shadow them with.
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import code_fingerprint  # noqa: E402
from benchmarks._common import median as _median  # noqa: E402
from benchmarks._common import ratio as _ratio  # noqa: E402
from benchmarks._common import terminate_on_sigterm as _terminate_on_sigterm  # noqa: E402

REDIS_URL: Final = os.environ.get("BENCH_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/8"
ROUTE: Final = "/webhooks/rentvine"
SECRET: Final = "whsec_" + base64.b64encode(b"intake-throughput-benchmark-key!").decode()
FIXTURE: Final = "work_order_created"
# Issue 12: the intake exporting to a live endpoint at >= 0.65x the bare endpoint's peak (the aim: 0.8x),
# and p99 under 25 ms at half the bare endpoint's peak rate.
THROUGHPUT_GOAL: Final = 0.65
THROUGHPUT_AIM: Final = 0.80
P99_GOAL_MS: Final = 25.0
VARIANTS: Final = (
    ("bare", "bare (enqueue only)", {}),
    ("intake", "intake (tracehook)", {}),
    ("intake-none", "intake, export none", {"TRACE_EXPORTER": "none"}),
    ("intake-down", "intake, endpoint down", {"OTEL_EXPORTER_OTLP_ENDPOINT": "down"}),
    # What the spans and the log line cost, side by side (opt-in: --variants).
    ("intake-nolog", "intake, no log line", {"LOG_LEVEL": "WARNING"}),
    ("intake-unsampled", "intake, spans unsampled", {"TRACE_SAMPLING_RATE": "0"}),
    ("intake-untraced", "intake, neither", {"LOG_LEVEL": "WARNING", "TRACE_SAMPLING_RATE": "0"}),
)
# Run unless --variants says otherwise.
DEFAULT_VARIANTS: Final = ("bare", "intake", "intake-none", "intake-down")
MAX_OPEN_CONNECTIONS: Final = 256
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
PRIORITY_SEP: Final = "\x06\x16"  # kombu's Redis transport: queue names of priorities 3, 6, 9
START_TIMEOUT_S: Final = 30.0
# Variables of the caller's environment that would change what a server does.
_SCRUBBED_PREFIXES: Final = ("OTEL_", "TRACE_", "BENCH_", "CELERY_", "JAEGER_", "WEBHOOK_", "FASTAPI_")
_SCRUBBED: Final = frozenset({"SERVICE_NAME", "REDIS_URL", "LOG_LEVEL", "LOG_FORMAT", "ENVIRONMENT"})


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, the load generator failed)."""


# -- load generator (a subprocess per run) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    """One signed webhook, ready to send: raw HTTP/1.1 bytes for the stream client, parts for httpx."""

    body: bytes
    headers: dict[str, str]
    raw: bytes


def signed_events(tag: str, n: int) -> list[tuple[bytes, dict[str, str]]]:
    """n fresh work_order_created events (unique ids, work order ids and webhook-ids), signed now: each
    one's body and signature headers."""
    from workflows.events import load_fixture  # noqa: PLC0415
    from workflows.signing import signed_headers  # noqa: PLC0415

    template = load_fixture(FIXTURE)
    signed = []
    for index in range(n):
        event = {
            **template,
            "id": f"evt_bench_{tag}_{index}",
            "data": {**template["data"], "work_order_id": f"wo_bench_{tag}_{index}"},
        }
        body = json.dumps(event).encode()
        signed.append((body, signed_headers(SECRET, body, msg_id=f"msg_bench_{tag}_{index}")))
    return signed


def _prepare(tag: str, n: int, port: int) -> list[Prepared]:
    """n fresh signed webhooks (:func:`signed_events`), as raw HTTP/1.1 requests too."""
    prepared = []
    for body, headers in signed_events(tag, n):
        head = [f"POST {ROUTE} HTTP/1.1", f"host: 127.0.0.1:{port}", f"content-length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        prepared.append(Prepared(body, headers, raw))
    return prepared


_TRANSPORT_ERRORS: Final = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


def _content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased response head (uvicorn always sends one here)."""
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError("answer without content-length")
    return int(head[start + 17 : head.find(b"\r\n", start + 2)])


class StreamClient:
    """Keep-alive HTTP/1.1 connections over asyncio streams, at most ``limit`` open at once.

    A connection idle for longer than ``STALE_S`` is replaced rather than reused: uvicorn closes idle
    keep-alive connections after 5 s, and a request racing that close would fail for the client's sake.
    """

    STALE_S: Final = 4.0

    def __init__(self, port: int, limit: int) -> None:
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._all: list[asyncio.StreamWriter] = []
        self._slots = asyncio.Semaphore(limit)

    @property
    def opened(self) -> int:
        """Connections opened so far."""
        return len(self._all)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._all.append(writer)
        return reader, writer

    async def warm(self, count: int) -> None:
        """Open ``count`` connections before the timed part."""
        for _ in range(count - len(self._idle)):
            self._idle.append((*await self._open(), time.monotonic()))

    async def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, last_used = self._idle.pop()
            if time.monotonic() - last_used < self.STALE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return await self._open()

    async def send(self, request: Prepared) -> int:
        """Send one request and read its answer; returns the status."""
        async with self._slots:
            reader, writer = await self._take()
            try:
                writer.write(request.raw)
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                await reader.readexactly(_content_length(lower))
            except BaseException:
                writer.close()
                raise
            if b"\r\nconnection: close" in lower:
                writer.close()
            else:
                self._idle.append((reader, writer, time.monotonic()))
            return int(head[9:12])

    async def close(self) -> None:
        """Close every connection."""
        for writer in self._all:
            writer.close()
        for writer in self._all:
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                await writer.wait_closed()


class HttpxClient:
    """The same interface over ``httpx.AsyncClient`` (``--client httpx``)."""

    def __init__(self, port: int, limit: int) -> None:
        import httpx  # noqa: PLC0415

        self._errors = (httpx.HTTPError,)
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            timeout=60.0,
        )
        self._count = 0

    @property
    def opened(self) -> int:
        """Connections opened so far (not tracked by httpx: the warm-up count)."""
        return self._count

    async def warm(self, count: int) -> None:
        """Open ``count`` connections before the timed part (concurrent health checks)."""
        await asyncio.gather(*(self._client.get("/healthz") for _ in range(count)))
        self._count = count

    async def send(self, request: Prepared) -> int:
        """Send one request; returns the status."""
        response = await self._client.post(ROUTE, content=request.body, headers=request.headers)
        return response.status_code

    async def close(self) -> None:
        """Close the client."""
        await self._client.aclose()


def _quantiles_ms(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank), max and mean of latencies in seconds, as milliseconds."""
    if not values:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1e3

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": ordered[-1] * 1e3,
        "mean": statistics.fmean(ordered) * 1e3,
    }


class _Tally:
    """Statuses and transport errors of a run."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    async def send(self, client: Any, request: Prepared) -> None:
        try:
            status = await client.send(request)
        except (*_TRANSPORT_ERRORS, *getattr(client, "_errors", ())) as error:
            self.errors[type(error).__name__] += 1
            self.statuses["error"] += 1
        else:
            self.statuses[str(status)] += 1


async def _closed_loop(client: Any, requests: list[Prepared], concurrency: int) -> dict[str, Any]:
    tally = _Tally()
    latencies = [0.0] * len(requests)
    indices = iter(range(len(requests)))
    clock = time.perf_counter

    async def connection() -> None:
        for index in indices:  # one iterator shared by every connection: each takes the next request
            started = clock()
            await tally.send(client, requests[index])
            latencies[index] = clock() - started

    await client.warm(concurrency)
    cpu0 = time.process_time()
    t_first = time.time()
    started = clock()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = clock() - started
    return {
        "mode": "closed",
        "requests": len(requests),
        "concurrency": concurrency,
        "t_first": t_first,
        "elapsed_s": elapsed,
        "req_per_s": len(requests) / elapsed,
        "latency_ms": _quantiles_ms(latencies),
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
        "gen_cpu_s": time.process_time() - cpu0,
        "connections": client.opened,
    }


async def _open_loop(client: Any, requests: list[Prepared], rate: float, warm: int) -> dict[str, Any]:
    tally = _Tally()
    n = len(requests)
    latencies = [0.0] * n
    lags = [0.0] * n
    clock = time.perf_counter
    interval = 1.0 / rate

    async def one(index: int, scheduled: float) -> None:
        lags[index] = clock() - scheduled
        await tally.send(client, requests[index])
        latencies[index] = clock() - scheduled

    await client.warm(warm)
    cpu0 = time.process_time()
    t_first = time.time()
    origin = clock() + 0.01
    tasks = []
    for index in range(n):
        scheduled = origin + index * interval
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = clock() - origin
    return {
        "mode": "open",
        "requests": n,
        "rate": rate,
        "t_first": t_first,
        "elapsed_s": elapsed,
        "scheduled_s": n * interval,
        "latency_ms": _quantiles_ms(latencies),
        "lag_ms": _quantiles_ms(lags),
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
        "gen_cpu_s": time.process_time() - cpu0,
        "connections": client.opened,
    }


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    mode = spec["mode"]
    n = spec["requests"] if mode == "closed" else max(1, round(spec["rate"] * spec["duration"]))
    requests = _prepare(spec["tag"], n, spec["port"])
    limit = spec["concurrency"] if mode == "closed" else MAX_OPEN_CONNECTIONS
    client = (HttpxClient if spec["client"] == "httpx" else StreamClient)(spec["port"], limit)
    gc.collect()
    gc.freeze()
    gc.disable()  # no collector pauses inside the timed part
    try:
        if mode == "closed":
            return await _closed_loop(client, requests, spec["concurrency"])
        return await _open_loop(client, requests, spec["rate"], spec["concurrency"])
    finally:
        gc.enable()
        await client.close()


def load_main(spec_json: str) -> int:
    """Run one measured load and print its result as one JSON line."""
    result = asyncio.run(_load(json.loads(spec_json)))
    print(json.dumps(result), flush=True)
    return 0


# -- the intake under cProfile (``--profile``) ------------------------------------------------------


def serve_intake_main(argv: Sequence[str]) -> int:
    """``workflows.cli intake`` as is, profiled (every thread) when BENCH_PROFILE_DIR is set."""
    from workflows import cli  # noqa: PLC0415

    profile_dir = os.environ.get("BENCH_PROFILE_DIR", "").strip()
    if not profile_dir:
        return cli.main(["intake", *argv])
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415
    import threading  # noqa: PLC0415

    profiles: list[cProfile.Profile] = []

    def profile_thread(*_: Any) -> None:
        # First profile event of a new thread: replace this hook with a profiler of the thread's own.
        profiler = cProfile.Profile(time.thread_time)
        profiles.append(profiler)
        profiler.enable()

    def stop(signum: int, _: Any) -> None:
        raise SystemExit(128 + signum)

    # uvicorn re-raises the SIGTERM it caught once it has shut down; exit through the finally below.
    signal.signal(signal.SIGTERM, stop)
    # CPU time of each thread, not wall time: a thread waiting for the GIL or for Redis costs nothing.
    main_profiler = cProfile.Profile(time.thread_time)
    threading.setprofile(profile_thread)
    main_profiler.enable()
    try:
        return cli.main(["intake", *argv])
    finally:
        main_profiler.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(main_profiler)
        for profiler in profiles:
            with contextlib.suppress(TypeError):  # a thread that never made a call
                stats.add(profiler)
        out = Path(profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(str(out / "intake.prof"))
        with (out / "intake-top.txt").open("w") as text:
            report = pstats.Stats(str(out / "intake.prof"), stream=text)
            report.sort_stats("tottime").print_stats(45)
            report.sort_stats("cumulative").print_stats(80)


# -- servers -----------------------------------------------------------------------------------------


@dataclass
class Server:
    """A running server and what was measured on it."""

    key: str
    label: str
    command: list[str]
    env: dict[str, str]
    queue: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    peak: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0  # 202s over the whole run, warm-ups included
    answers: int = 0

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SCRUBBED and not key.startswith(_SCRUBBED_PREFIXES)
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def _servers(
    run_id: str,
    otlp_endpoint: str,
    log_dir: Path,
    profile_dir: str | None,
    extra: dict[str, str],
    wanted: Sequence[str],
) -> list[Server]:
    common = {
        "REDIS_URL": REDIS_URL,
        "WEBHOOK_SECRET": SECRET,
        "TRACE_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "LOG_LEVEL": "INFO",
    }
    servers = []
    for key, label, given_env in VARIANTS:
        if key not in wanted:
            continue
        variant_env = dict(given_env)
        port = _free_port()
        queue = f"bench-intake-{key}-{run_id}"
        env = {**_base_env(), **common, "CELERY_DEFAULT_QUEUE": queue}
        if variant_env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "down":
            variant_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{_free_port()}"
        address = ["--host", "127.0.0.1", "--port", str(port)]
        if key == "bare":
            command = [sys.executable, "-m", "benchmarks._bare_intake", *address]
        elif profile_dir and key == "intake":
            env |= {**extra, "BENCH_PROFILE_DIR": profile_dir}
            command = [sys.executable, str(Path(__file__).resolve()), "--serve-intake", *address]
        else:
            env |= {**extra, **variant_env}
            command = [sys.executable, "-m", "workflows.cli", "intake", *address]
        servers.append(Server(key, label, command, env, queue, port, log_dir / f"{key}.log"))
    return servers


def _start(server: Server) -> None:
    with server.log_path.open("wb") as log:
        server.process = subprocess.Popen(
            server.command,
            cwd=REPO_ROOT,
            env=server.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C here does not reach it half-way
        )


def _wait_ready(server: Server) -> None:
    """Poll ``GET /healthz`` until the server answers 200."""
    deadline = time.monotonic() + START_TIMEOUT_S
    request = f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{server.port}\r\nconnection: close\r\n\r\n"
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise BenchError(f"{server.key}: exited with {server.process.returncode}\n{server.log_tail()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock,
        ):
            sock.sendall(request.encode())
            if sock.recv(64).startswith(b"HTTP/1.1 200"):
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{server.key}: not ready after {START_TIMEOUT_S:g}s\n{server.log_tail()}")
        time.sleep(0.1)


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group of a subprocess of ours that is not reaped yet (its pid is still ours)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def _stop(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGINT, then SIGKILL what is left.

    uvicorn shuts down gracefully on SIGINT or SIGTERM, then raises the signal again: SIGINT's default
    handler makes that a KeyboardInterrupt, so the process still exits through :mod:`atexit` and
    ``finally`` blocks (span flush, the profile dump), where SIGTERM's default action would end it there.
    """
    for process in processes:
        _kill_group(process, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"pid {process.pid} did not stop in {timeout_s:g}s: SIGKILL", file=sys.stderr)
            _kill_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


# -- one run -------------------------------------------------------------------------------------------


def _queue_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{PRIORITY_SEP}{priority}" for priority in (3, 6, 9))]


def _queued(client: Any, server: Server) -> int:
    return sum(int(client.llen(key)) for key in _queue_keys(server.queue))


def _purge(client: Any, server: Server) -> None:
    client.delete(*_queue_keys(server.queue))


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads, dead ones included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def _redis_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _quiesce(receiver: Any, quiet_s: float = 0.5, limit_s: float = 20.0) -> None:
    """Wait until no span export arrived for ``quiet_s``: a backlog the intake still exports after a run
    is charged to that run, not to the next server's."""
    deadline = time.monotonic() + limit_s
    last = receiver.request_count
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        count = receiver.request_count
        if count == last:
            return
        last = count


def _run(
    client: Any, receiver: Any, server: Server, spec: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """One load against one server, with CPU readings around it; returns the sample."""
    assert server.process is not None
    spec = {**spec, "port": server.port, "client": args.client, "tag": uuid.uuid4().hex[:12]}
    _purge(client, server)
    server_cpu0, redis_cpu0, main_cpu0 = (
        _proc_cpu_s(server.process.pid),
        _redis_cpu_s(client),
        time.process_time(),
    )
    generator = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--load", json.dumps(spec)],
        cwd=REPO_ROOT,
        env=_base_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    expected_s = spec["requests"] / 50 if spec["mode"] == "closed" else spec["duration"] * 3
    try:
        out, err = generator.communicate(timeout=60 + expected_s)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{server.key}: the load generator did not finish in time") from None
    finally:
        if generator.returncode is None:
            _kill_group(generator, signal.SIGKILL)
            generator.wait(5)
    _quiesce(receiver)
    time.sleep(args.settle)
    server_cpu = _proc_cpu_s(server.process.pid) - server_cpu0
    redis_cpu = _redis_cpu_s(client) - redis_cpu0
    main_cpu = time.process_time() - main_cpu0
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if generator.returncode != 0 or not lines:
        raise BenchError(
            f"{server.key}: load generator failed (exit {generator.returncode})\n"
            f"{err.decode(errors='replace')[-3000:]}"
        )
    if server.process.poll() is not None:
        raise BenchError(f"{server.key}: server exited\n{server.log_tail()}")
    sample: dict[str, Any] = json.loads(lines[-1])
    n = sample["requests"]
    accepted = int(sample["statuses"].get("202", 0))
    sample["non_202"] = n - accepted
    sample["enqueued"] = _queued(client, server)
    _purge(client, server)
    sample["server_cpu_us"] = server_cpu / n * 1e6
    sample["redis_cpu_us"] = redis_cpu / n * 1e6
    sample["gen_cpu_us"] = sample["gen_cpu_s"] / n * 1e6
    sample["main_cpu_us"] = main_cpu / n * 1e6
    if spec["mode"] == "open":
        sample["sent_per_s"] = n / sample["elapsed_s"]
    server.accepted += accepted
    server.answers += n
    if sample["enqueued"] != accepted:
        print(
            f"warning: {server.key}: {accepted} answers 202 but {sample['enqueued']} tasks in the queue",
            file=sys.stderr,
        )
    return sample


# -- report --------------------------------------------------------------------------------------------


def _summary(samples: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> dict[str, Any]:
    keys = ["server_cpu_us", "redis_cpu_us", "gen_cpu_us", "main_cpu_us", *extra]
    summary: dict[str, Any] = {"rounds": len(samples)}
    for key in keys:
        summary[key] = _median([s[key] for s in samples])
    for key in ("p50", "p90", "p99", "max", "mean"):
        summary[f"{key}_ms"] = _median([s["latency_ms"][key] for s in samples])
    summary["non_202"] = sum(s["non_202"] for s in samples)
    summary["requests"] = sum(s["requests"] for s in samples)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for sample in samples:
        statuses.update(sample["statuses"])
        errors.update(sample["errors"])
    summary["statuses"] = dict(statuses)
    summary["errors"] = dict(errors)
    return summary


# The variants whose spans reach the endpoint: their 202s are what the root spans are counted against.
_EXPORTING: Final = frozenset({"intake", "intake-nolog"})


def _span_counts(receiver: Any, servers: Sequence[Server]) -> dict[str, Any]:
    by_name: Counter[str] = Counter()
    for (_, _, _, name), n in receiver.counts_by_name().items():
        by_name[name] += n
    roots = by_name.get("webhook.work_order.created", 0)
    return {
        "webhook_root_spans": roots,
        "intake_202s": sum(server.accepted for server in servers if server.key in _EXPORTING),
        "total": sum(by_name.values()),
        "by_name": dict(by_name.most_common(8)),
    }


def _goals(report: dict[str, Any]) -> list[tuple[str, bool]]:
    peak, latency = report["peak"], report["latency"]
    goals: list[tuple[str, bool]] = []
    if peak:
        ratio = _ratio(peak["intake"]["req_per_s"], peak["bare"]["req_per_s"])
        goals.append(
            (
                f"intake throughput exporting to a live endpoint = {ratio:.0%} of bare "
                f"(goal >= {THROUGHPUT_GOAL:.0%})",
                ratio >= THROUGHPUT_GOAL,
            )
        )
        goals.append((f"aim: the same >= {THROUGHPUT_AIM:.0%}", ratio >= THROUGHPUT_AIM))
    if latency:
        p99 = latency["intake"]["p99_ms"]
        where = "half the bare peak rate" if report["config"]["rate_from_peak"] else "the given rate"
        goals.append((f"intake p99 at {where} = {p99:.1f} ms (goal < {P99_GOAL_MS:g} ms)", p99 < P99_GOAL_MS))
    phases = [phase for phase in (peak, latency) if phase]
    keys = list(phases[0]) if phases else []
    bad = {key: sum(phase[key]["non_202"] for phase in phases) for key in keys}
    total = {key: sum(phase[key]["requests"] for phase in phases) for key in keys}
    goals.append(
        (
            "every answer 202: " + ", ".join(f"{key} {bad[key]} non-202 of {total[key]}" for key in keys),
            not any(bad.values()),
        )
    )
    return goals


def _labels(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The servers of this run, in the order of VARIANTS."""
    ran = set(report["samples"])
    return [(key, label) for key, label, _ in VARIANTS if key in ran]


def _print_peak(report: dict[str, Any]) -> None:
    config, peak = report["config"], report["peak"]
    print(
        f"1. peak: closed loop, {config['concurrency']} connections, {config['requests']} signed webhooks/run"
    )
    header = (
        f"{'server':<22}{'req/s':>7}{'x':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'srv µs':>8}{'x':>7}{'redis':>7}{'gen':>6}{'rcv':>6}{'non202':>7}"
    )
    print(header)
    print("-" * len(header))
    for key, label in _labels(report):
        s = peak[key]
        print(
            f"{label:<22}{s['req_per_s']:>7.0f}{report['ratios']['req_per_s'][key]:>6.2f}x"
            f"{s['p50_ms']:>8.2f}{s['p99_ms']:>8.2f}{s['max_ms']:>8.1f}{s['server_cpu_us']:>8.0f}"
            f"{report['ratios']['server_cpu_us'][key]:>6.2f}x{s['redis_cpu_us']:>7.0f}{s['gen_cpu_us']:>6.0f}"
            f"{s['main_cpu_us']:>6.0f}{s['non_202']:>7}"
        )


def _print_latency(report: dict[str, Any]) -> None:
    config, latency = report["config"], report["latency"]
    why = " (half the bare peak)" if config["rate_from_peak"] else ""
    print(
        f"2. latency: open loop at {config['rate']:.0f} req/s{why} for {config['duration']:g} s, "
        "latency from the scheduled send; ans/s = requests / (first scheduled send -> last answer)"
    )
    header = (
        f"{'server':<22}{'ans/s':>7}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'lag99':>7}{'srv µs':>8}{'redis':>7}{'conns':>6}{'non202':>7}"
    )
    print(header)
    print("-" * len(header))
    for key, label in _labels(report):
        s = latency[key]
        print(
            f"{label:<22}{s['sent_per_s']:>7.0f}{s['p50_ms']:>8.2f}{s['p90_ms']:>8.2f}{s['p99_ms']:>8.2f}"
            f"{s['max_ms']:>8.1f}{s['lag_p99_ms']:>7.2f}{s['server_cpu_us']:>8.0f}{s['redis_cpu_us']:>7.0f}"
            f"{s['connections']:>6.0f}{s['non_202']:>7}"
        )
    peak = report["peak"]
    if peak and peak["intake"]["req_per_s"] < config["rate"]:
        print(
            f"note: the intake's peak ({peak['intake']['req_per_s']:.0f} req/s) is below this rate: it is "
            "overloaded, requests queue up and its latency grows with the run's length"
        )


def _print_report(report: dict[str, Any]) -> None:
    config = report["config"]
    print(
        f"Webhook intake vs bare enqueue-only FastAPI, one uvicorn process each, Redis {REDIS_URL}, "
        f"{report['cpus']} CPUs, Python {report['python']}, {config['client']} client; medians of "
        f"{config['rounds']} round(s); code {report['code']['sha256']} ({report['code']['newest_mtime']})"
    )
    if config["intake_env"]:
        print(f"intake run with extra variables: {config['intake_env']}")
    if config["profiled"]:
        print("the intake ran under cProfile: its numbers are not the benchmark's")
    print(
        "µs are CPU per request: srv = server process (x: vs bare), redis = Redis, gen = load generator, "
        "rcv = this process (the OTLP endpoint, storing requests)"
    )
    if report["peak"]:
        print()
        _print_peak(report)
    if report["latency"]:
        print()
        _print_latency(report)
    print()
    print("per round (peak req/s | p99 ms ; open-loop p50 | p99 ms):")
    for key, _ in _labels(report):
        samples = report["samples"][key]
        peaks = ", ".join(f"{s['req_per_s']:.0f}|{s['latency_ms']['p99']:.1f}" for s in samples["peak"])
        lats = ", ".join(
            f"{s['latency_ms']['p50']:.1f}|{s['latency_ms']['p99']:.1f}" for s in samples["latency"]
        )
        print(f"  {key:<12}{peaks or '-'} ; {lats or '-'}")
    for key, _ in _labels(report):
        for phase in ("peak", "latency"):
            s = report[phase].get(key)
            if s and s["non_202"]:
                print(f"  {key} {phase}: answers {s['statuses']}, transport errors {s['errors']}")
    spans = report["spans"]
    print(
        f"spans received (sanity): {spans['webhook_root_spans']} webhook.work_order.created root spans for "
        f"{spans['intake_202s']} 202s of the exporting intakes (warm-ups included); "
        f"{spans['total']} spans in all: {spans['by_name']}"
    )
    for line, met in report["goals"]:
        print(f"{'PASS' if met else 'MISS'}  {line}")


# -- main ----------------------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per phase (default 3)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per peak run (default 3000)")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop connections (default 16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per open-loop run (default 10)")
    parser.add_argument("--rate", type=float, help="open-loop req/s (default: half the bare median peak)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests per server (default 500)")
    parser.add_argument(
        "--settle", type=float, default=0.0, help="extra pause after each run, once exports stopped (s)"
    )
    parser.add_argument("--quick", action="store_true", help="1 round: 1,000 requests, 5 s open loop")
    parser.add_argument("--client", choices=("stream", "httpx"), default="stream", help="load client")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra variable for the intake (diagnosis, e.g. LOG_LEVEL=WARNING, TRACE_EXPORTER=none)",
    )
    parser.add_argument(
        "--phases", default="peak,latency", help="which phases to run: peak, latency or both (default)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated servers to run (bare and intake always; default "
        + ",".join(DEFAULT_VARIANTS)
        + "): "
        + ", ".join(k for k, _, _ in VARIANTS),
    )
    parser.add_argument("--profile", metavar="DIR", help="run the intake under cProfile into DIR")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument("--load", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--serve-intake", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if rest and not args.serve_intake:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    args.phases = {phase.strip() for phase in args.phases.split(",") if phase.strip()}
    args.variants = {"bare", "intake"} | {key.strip() for key in args.variants.split(",") if key.strip()}
    unknown = args.variants - {key for key, _, _ in VARIANTS}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if not args.phases or args.phases - {"peak", "latency"}:
        parser.error("--phases takes peak, latency or peak,latency")
    if "peak" not in args.phases and not args.rate:
        parser.error("--phases latency alone needs --rate (the open-loop rate comes from the peak phase)")
    if args.quick:
        args.rounds, args.requests, args.duration, args.warmup = 1, 1000, 5.0, 300
    return args


def _phases(client: Any, receiver: Any, servers: list[Server], args: argparse.Namespace, log: Any) -> float:
    """Warm-up, then the peak rounds, then the latency rounds; returns the open-loop rate."""
    closed = {"mode": "closed", "concurrency": args.concurrency}
    for server in servers:
        log(f"warm-up {server.key} ({args.warmup} requests)")
        _run(client, receiver, server, {**closed, "requests": args.warmup}, args)
    for round_index in range(args.rounds if "peak" in args.phases else 0):
        shift = round_index % len(servers)
        for server in servers[shift:] + servers[:shift]:
            sample = _run(client, receiver, server, {**closed, "requests": args.requests}, args)
            server.peak.append(sample)
            log(
                f"peak    round {round_index + 1}/{args.rounds} {server.key:<7}"
                f"{sample['req_per_s']:6.0f} req/s  "
                f"p50 {sample['latency_ms']['p50']:6.2f} ms  p99 {sample['latency_ms']['p99']:6.2f} ms  "
                f"srv {sample['server_cpu_us']:5.0f} µs/req  non-202 {sample['non_202']}"
            )
    bare = next(server for server in servers if server.key == "bare")
    rate = args.rate or 0.5 * _median([s["req_per_s"] for s in bare.peak])
    opened = {"mode": "open", "concurrency": args.concurrency, "rate": rate, "duration": args.duration}
    for round_index in range(args.rounds if "latency" in args.phases else 0):
        shift = (round_index + 1) % len(servers)
        for server in servers[shift:] + servers[:shift]:
            sample = _run(client, receiver, server, opened, args)
            server.latency.append(sample)
            log(
                f"latency round {round_index + 1}/{args.rounds} {server.key:<7}"
                f"{sample['sent_per_s']:6.0f} req/s  "
                f"p50 {sample['latency_ms']['p50']:6.2f} ms  p99 {sample['latency_ms']['p99']:6.2f} ms  "
                f"lag p99 {sample['lag_ms']['p99']:5.2f} ms  conns {sample['connections']}  "
                f"non-202 {sample['non_202']}"
            )
    return rate


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0912
    """Run the benchmark; returns the exit status."""
    args = _parse(argv)
    if args.load:
        return load_main(args.load)
    if args.serve_intake:
        return serve_intake_main(args.rest)

    import redis  # noqa: PLC0415

    from benchmarks._sink import OtlpSink  # noqa: PLC0415

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    client.flushdb()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    log_dir = Path(tempfile.mkdtemp(prefix="intake-bench-"))
    profile_dir = str(Path(args.profile).resolve()) if args.profile else None
    receiver = OtlpSink().start()
    fingerprint = code_fingerprint("workflows/*.py", "tracing/*.py")
    extra = dict(item.split("=", 1) for item in args.env)
    servers = _servers(uuid.uuid4().hex[:8], receiver.endpoint, log_dir, profile_dir, extra, args.variants)
    failed = False
    rate = math.nan
    spans: dict[str, Any] = {}
    try:
        with _terminate_on_sigterm():
            for server in servers:
                _start(server)
            for server in servers:
                _wait_ready(server)
            rate = _phases(client, receiver, servers, args, log)
    except BenchError as error:
        failed = True
        print(f"benchmark failed: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        failed = True
        print("interrupted: stopping the servers", file=sys.stderr)
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        try:
            _stop([s.process for s in servers if s.process is not None], timeout_s=15.0)
            time.sleep(0.3)  # the intake's last export, answered before it exited
            spans = _span_counts(receiver, servers)
            receiver.stop()
            with contextlib.suppress(redis.RedisError):
                client.flushdb()
        finally:
            signal.signal(signal.SIGINT, previous)
    if failed:
        print(f"logs kept in {log_dir}", file=sys.stderr)
        return 1

    by_key = {server.key: server for server in servers}
    peak = (
        {key: _summary(server.peak, ("req_per_s",)) for key, server in by_key.items()}
        if "peak" in args.phases
        else {}
    )
    latency = (
        {
            key: _summary(server.latency, ("sent_per_s", "connections"))
            | {"lag_p99_ms": _median([s["lag_ms"]["p99"] for s in server.latency])}
            for key, server in by_key.items()
        }
        if "latency" in args.phases
        else {}
    )
    report: dict[str, Any] = {
        "config": {
            "rounds": args.rounds,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rate": rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "rate_from_peak": not args.rate,
            "client": args.client,
            "intake_env": extra,
            "profiled": bool(profile_dir),
        },
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "code": fingerprint,
        "peak": peak,
        "latency": latency,
        "ratios": {
            "req_per_s": {key: _ratio(peak[key]["req_per_s"], peak["bare"]["req_per_s"]) for key in peak},
            "server_cpu_us": {
                key: _ratio(peak[key]["server_cpu_us"], peak["bare"]["server_cpu_us"]) for key in peak
            },
            "p99_ms_open_loop": {
                key: _ratio(latency[key]["p99_ms"], latency["bare"]["p99_ms"]) for key in latency
            },
        },
        "spans": spans,
        "samples": {key: {"peak": s.peak, "latency": s.latency} for key, s in by_key.items()},
    }
    goals = _goals(report)
    if args.json:
        report["goals"] = [{"goal": line, "met": met} for line, met in goals]
        print(json.dumps(report, indent=2))
    else:
        report["goals"] = goals
        _print_report(report)
    if profile_dir:
        log(f"profile of the intake in {profile_dir}/intake.prof and intake-top.txt")
    if args.keep_logs:
        log(f"logs in {log_dir}")
    else:
        for path in log_dir.iterdir():
            path.unlink()
        log_dir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())

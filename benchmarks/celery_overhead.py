"""Measure what tracing costs a Celery prefork worker: uninstrumented vs stock OpenTelemetry vs tracehook.

Run from the repository root (Redis must answer on 127.0.0.1:6379; database 9 is used, or BENCH_BROKER_URL)::

    .venv/bin/python benchmarks/celery_overhead.py            # 3 rounds x 2,000 tasks per variant
    .venv/bin/python benchmarks/celery_overhead.py --quick    # 1 round x 500 tasks (smoke run)
    .venv/bin/python benchmarks/celery_overhead.py --json     # machine-readable results only

Variants (the app, ``benchmarks/_celery_bench_app.py``, is a user's own: a fresh ``Celery(...)`` with
Celery's defaults and a task that increments a Redis counter; ``BENCH_VARIANT`` picks its tracing):

1. ``plain``: no tracing at all;
2. ``stock``: ``opentelemetry.instrumentation.celery.CeleryInstrumentor().instrument()`` with an SDK
   ``TracerProvider`` + ``BatchSpanProcessor(OTLPSpanExporter)`` set up in each pool child in
   ``worker_process_init`` and flushed in ``worker_process_shutdown`` (as its docs say), and in the
   producer process;
3. ``tracehook``: ``tracing.instrument_celery(app)`` in the app module and nothing else, in the worker and
   in the producer: tracehook sets tracing up from the environment (``TRACE_EXPORTER=otlp``,
   ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``SERVICE_NAME``), metrics on (its default);

2b / 3b (``stock-down``, ``tracehook-down``): the same, with the OTLP endpoint pointing at a closed port.

Not run by default (``--variants`` adds it), for diagnosis: ``tracehook-warnlog`` (3w), tracehook with
``LOG_LEVEL=WARNING``, the level Celery's own logging runs at when ``--loglevel`` is not given, so the
per-task "received"/"succeeded" lines Celery logs at INFO are not rendered.

Spans go to a live OTLP/HTTP endpoint in this process that accepts and discards (``benchmarks/_sink.py``):
it decodes what it got only after the last run, so decoding steals no CPU from the measured processes.

Method
------
One worker per variant, ``celery -A benchmarks._celery_bench_app worker --pool=prefork -c 2
--without-gossip --without-mingle --without-heartbeat -Q <its own queue>``, started once and kept alive
across rounds, warmed up with ``--warmup`` tasks. Each round runs every variant once (the order rotates),
the queue purged before each run. A run: a fresh producer process (``celery_overhead.py --producer``,
tracing set up as the variant says) publishes N ``bench.noop.delay(key)`` in a loop; each task INCRs a
Redis counter, which this process polls. Measured per run:

* tasks/s: N / (first measured publish -> counter reaches N), wall clock;
* pool children's CPU per task: utime+stime of the worker's pool children (``/proc/<pid>/stat``, read
  before the run and ``--settle`` seconds after the last task, so the batch exporter's last export of
  the run is included), divided by N; the worker main process's CPU per task likewise. Also from
  ``/proc/<pid>/task/*/schedstat`` (ns resolution): the same total, "(sched)", and the part of it spent
  on the children's other threads (the span export thread), "(threads)";
* ``.delay()`` cost in the producer: wall and CPU time of the publish loop per call (the producer's CPU
  includes its span export thread);
* "rcv µs": this process's own CPU per task over the run: the endpoint storing requests and the counter
  polling.

Reported: medians over the rounds, and ratios of the medians against ``plain`` and against ``stock``. The
machine is noisy, so rounds are interleaved and repeated; a ratio within about 10% of a goal is within
the noise. The publish and run spans the endpoint got are counted per variant (issue 12's goals need
them exported, not only made).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

# Import the repository's packages (tracing, workers, tests, benchmarks), not whatever the script's own
# directory would shadow them with.
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._common import code_fingerprint  # noqa: E402
from benchmarks._common import median as _median  # noqa: E402
from benchmarks._common import ratio as _ratio  # noqa: E402
from benchmarks._common import terminate_on_sigterm as _terminate_on_sigterm  # noqa: E402

BROKER_URL: Final = os.environ.get("BENCH_BROKER_URL", "").strip() or "redis://127.0.0.1:6379/9"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
PRIORITY_SEP: Final = "\x06\x16"  # kombu's Redis transport: queue names of priorities 3, 6, 9
PRODUCER_WARMUP: Final = 50
POLL_S: Final = 0.005
# Issue 12: at most the stock instrumentation's CPU and at least its throughput; the aim beyond it:
# at most half of what stock adds over plain, and 0.95x plain's throughput.
ADDED_CPU_AIM: Final = 0.5
THROUGHPUT_AIM: Final = 0.95
# Endpoint down vs healthy: within the machine's noise.
DOWN_NOISE: Final = 1.10
# Variables of the caller's environment that would change what a variant does.
_SCRUBBED_PREFIXES: Final = ("OTEL_", "TRACE_", "BENCH_", "CELERY_", "JAEGER_")
_SCRUBBED: Final = frozenset({"SERVICE_NAME", "REDIS_URL", "LOG_LEVEL", "LOG_FORMAT", "ENVIRONMENT"})


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One worker configuration."""

    key: str
    label: str
    app_variant: str  # BENCH_VARIANT
    endpoint_down: bool
    worker_service: str
    producer_service: str
    extra_env: tuple[tuple[str, str], ...] = ()
    default: bool = True  # run unless --variants says otherwise


VARIANTS: Final = (
    VariantSpec("plain", "1  plain", "plain", False, "", ""),
    VariantSpec("stock", "2  stock", "stock", False, "bench-stock-worker", "bench-stock-producer"),
    VariantSpec("tracehook", "3  tracehook", "tracehook", False, "bench-worker", "bench-producer"),
    VariantSpec("stock-down", "2b stock, endpoint down", "stock", True, "", ""),
    VariantSpec("tracehook-down", "3b tracehook, endpoint down", "tracehook", True, "", ""),
    # Diagnosis only: tracehook with its log level at WARNING, as Celery's own default is.
    VariantSpec(
        "tracehook-warnlog",
        "3w tracehook, LOG_LEVEL=WARNING",
        "tracehook",
        False,
        "bench-worker-warnlog",
        "bench-producer-warnlog",
        (("LOG_LEVEL", "WARNING"),),
        default=False,
    ),
)


@dataclass(slots=True)
class Sample:
    """One measured run."""

    tasks: int
    elapsed_s: float
    tasks_per_s: float
    child_cpu_us: float
    child_sched_us: float
    child_other_threads_us: float
    main_cpu_us: float
    driver_cpu_us: float
    delay_us: float
    delay_cpu_us: float


@dataclass
class Worker:
    """A running worker and what was measured on it."""

    spec: VariantSpec
    queue: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    samples: list[Sample] = field(default_factory=list)
    tasks_run: int = 0
    tasks_published: int = 0

    @property
    def counter_key(self) -> str:
        """The Redis counter the tasks of this worker's queue increment."""
        return f"{self.queue}:count"

    @property
    def warm_queue(self) -> str:
        """Where producers send their warm-up publishes (nobody consumes it)."""
        return f"{self.queue}.warm"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the worker's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class BenchError(RuntimeError):
    """The benchmark could not run (a worker did not start, tasks did not finish)."""


# -- /proc ------------------------------------------------------------------------------------------


def _proc_cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def _proc_sched_ns(pid: int) -> tuple[int, int]:
    """CPU time of a process's live threads from schedstat, in ns (finer than ticks): (all, main thread)."""
    total = main = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            ns = int((task / "schedstat").read_text().split()[0])
            total += ns
            if task.name == str(pid):
                main = ns
    return total, main


def _children(pid: int) -> list[int]:
    """Direct children of a process (the pool processes of a worker's main process)."""
    found: set[int] = set()
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            children = task / "children"
            if children.exists():
                found.update(int(p) for p in children.read_text().split())
            else:  # kernel without CONFIG_PROC_CHILDREN: scan every process's parent
                return _children_by_scan(pid)
    except OSError:
        return []
    return sorted(found)


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    children: tuple[int, ...]
    child_ticks: int
    child_sched_ns: int
    child_main_thread_ns: int
    main_ticks: int


def _snapshot(main_pid: int) -> CpuSnapshot:
    children = tuple(_children(main_pid))
    ticks = sched = main_thread = 0
    for child in children:
        with contextlib.suppress(OSError):
            ticks += _proc_cpu_ticks(child)
            all_threads, main = _proc_sched_ns(child)
            sched += all_threads
            main_thread += main
    return CpuSnapshot(children, ticks, sched, main_thread, _proc_cpu_ticks(main_pid))


# -- processes --------------------------------------------------------------------------------------


def _free_closed_port() -> int:
    """A port nothing listens on: bind one, then close it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SCRUBBED and not key.startswith(_SCRUBBED_PREFIXES)
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["BENCH_BROKER_URL"] = BROKER_URL
    env.update(extra)
    return env


def _variant_env(spec: VariantSpec, queue: str, endpoint: str, extra: dict[str, str]) -> dict[str, str]:
    env = _base_env({})
    env["BENCH_VARIANT"] = spec.app_variant
    env["CELERY_DEFAULT_QUEUE"] = queue
    if spec.app_variant == "stock":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        env["BENCH_SERVICE"] = spec.worker_service or "bench-stock-worker"
    elif spec.app_variant == "tracehook":
        env["TRACE_EXPORTER"] = "otlp"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        env["SERVICE_NAME"] = spec.worker_service or "bench-worker"
    env.update(spec.extra_env)
    env.update(extra)
    return env


def _producer_env(worker: Worker) -> dict[str, str]:
    env = dict(worker.env)
    if worker.spec.app_variant == "stock":
        env["BENCH_SERVICE"] = worker.spec.producer_service or "bench-stock-producer"
    elif worker.spec.app_variant == "tracehook":
        env["SERVICE_NAME"] = worker.spec.producer_service or "bench-producer"
    return env


def _start_worker(worker: Worker) -> None:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "benchmarks._celery_bench_app",
        "worker",
        "--pool=prefork",
        "-c",
        "2",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        worker.queue,
        "-n",
        f"{worker.queue}@%h",
    ]
    with worker.log_path.open("wb") as log:
        worker.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=worker.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C here does not reach it half-way
        )


def _kill_group(pid: int, sig: int) -> None:
    """Signal the process group a still unreaped leader of ours heads (its pid cannot have been reused)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _session_members(sid: int) -> list[int]:
    """Processes in the session our subprocess made (sid = its pid; a pid in use as a sid is not reused)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # fields 6 (session id) and 3 of proc(5)
                members.append(int(entry.name))
    return members


def _exited(pid: int, timeout_s: float) -> bool:
    """Wait for a child to exit without reaping it, so its pid keeps naming its process group."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _kill_all(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a subprocess of ours and everything left in its session, then reap it."""
    if process.returncode is None:
        _kill_group(process.pid, signal.SIGKILL)  # reaped below, after the group is gone
    else:
        for pid in _session_members(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _stop_workers(workers: Sequence[Worker], timeout_s: float) -> None:
    """SIGTERM every worker (warm shutdown: children flush their spans), then SIGKILL what is left."""
    running = [w.process for w in workers if w.process is not None]
    for process in running:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        if worker.process is None:
            continue
        if not _exited(worker.process.pid, max(0.0, deadline - time.monotonic())):
            print(f"worker {worker.spec.key} did not stop in {timeout_s:g}s: SIGKILL", file=sys.stderr)
        _kill_all(worker.process)  # the main process if still there, and any pool child left behind


# -- one run ----------------------------------------------------------------------------------------


def _purge(client: redis.Redis, worker: Worker) -> None:
    keys = []
    for queue in (worker.queue, worker.warm_queue):
        keys.append(queue)
        keys.extend(f"{queue}{PRIORITY_SEP}{priority}" for priority in (3, 6, 9))
    client.delete(*keys)
    client.set(worker.counter_key, 0)


def _wait_count(client: redis.Redis, worker: Worker, n: int, producer: subprocess.Popen[bytes]) -> float:
    """Poll the counter until it reaches n; returns the wall-clock time it did."""
    deadline = time.monotonic() + max(90.0, n / 20)
    while True:
        count = int(client.get(worker.counter_key) or 0)
        if count >= n:
            return time.time()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{worker.spec.key}: {count} of {n} tasks ran before the deadline\n"
                f"worker log:\n{worker.log_tail()}"
            )
        if worker.process is not None and worker.process.poll() is not None:
            raise BenchError(f"{worker.spec.key}: worker exited\n{worker.log_tail()}")
        if producer.poll() not in (None, 0):
            raise BenchError(f"{worker.spec.key}: producer failed (exit {producer.returncode})")
        time.sleep(POLL_S)


def _run(client: redis.Redis, worker: Worker, n: int, settle_s: float, log_dir: Path) -> Sample:
    assert worker.process is not None
    _purge(client, worker)
    before = _snapshot(worker.process.pid)
    driver_before = time.process_time()
    stderr_path = log_dir / f"producer-{worker.spec.key}.log"
    with stderr_path.open("ab") as stderr:
        producer = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--producer",
                worker.spec.key,
                str(n),
                worker.queue,
            ],
            cwd=REPO_ROOT,
            env=_producer_env(worker),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        done = _wait_count(client, worker, n, producer)
        try:
            out, _ = producer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_all(producer)
            out, _ = producer.communicate(timeout=5)
    finally:
        if producer.returncode is None:
            _kill_all(producer)
    time.sleep(max(0.0, done + settle_s - time.time()))
    after = _snapshot(worker.process.pid)
    driver_cpu = time.process_time() - driver_before
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{worker.spec.key}: producer printed no result; see {stderr_path}")
    published = json.loads(lines[-1])
    if before.children != after.children and settle_s > 0:  # warm-up: the pool may still be starting
        print(
            f"warning: {worker.spec.key}: pool children changed during the run "
            f"({before.children} -> {after.children}); its CPU numbers are off",
            file=sys.stderr,
        )
    worker.tasks_run += n
    worker.tasks_published += n + PRODUCER_WARMUP
    elapsed = done - published["t_first"]
    return Sample(
        tasks=n,
        elapsed_s=elapsed,
        tasks_per_s=n / elapsed,
        child_cpu_us=(after.child_ticks - before.child_ticks) / CLK_TCK * 1e6 / n,
        child_sched_us=(after.child_sched_ns - before.child_sched_ns) / 1e3 / n,
        child_other_threads_us=(
            (after.child_sched_ns - after.child_main_thread_ns)
            - (before.child_sched_ns - before.child_main_thread_ns)
        )
        / 1e3
        / n,
        main_cpu_us=(after.main_ticks - before.main_ticks) / CLK_TCK * 1e6 / n,
        driver_cpu_us=driver_cpu * 1e6 / n,
        delay_us=published["delay_us"],
        delay_cpu_us=published["delay_cpu_us"],
    )


# -- producer (a subprocess per run, so instrumentations never mix) ---------------------------------


def producer_main(variant_key: str, n: int, queue: str) -> int:
    """Publish n tasks as the variant's producer would; print the timing as one JSON line."""
    started = time.perf_counter()
    from benchmarks import _celery_bench_app as bench  # noqa: PLC0415  # reads BENCH_VARIANT

    bench.setup_producer()
    key = f"{queue}:count"
    for _ in range(PRODUCER_WARMUP):  # connection, declarations, first spans: not measured
        bench.noop.apply_async((key,), queue=f"{queue}.warm")
    delay = bench.noop.delay
    setup_s = time.perf_counter() - started
    t_first = time.time()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(n):
        delay(key)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    result = {
        "variant": variant_key,
        "n": n,
        "t_first": t_first,
        "setup_s": round(setup_s, 3),
        "publish_s": round(wall, 4),
        "delay_us": wall / n * 1e6,
        "delay_cpu_us": cpu / n * 1e6,
    }
    print(json.dumps(result), flush=True)
    bench.flush_producer(3.0)
    sys.stdout.flush()
    os._exit(0)  # no atexit flush on a down endpoint: the bounded flush above was enough


# -- report -----------------------------------------------------------------------------------------


def _summary(worker: Worker) -> dict[str, Any]:
    samples = worker.samples
    return {
        "label": worker.spec.label,
        "rounds": len(samples),
        "tasks_per_s": _median([s.tasks_per_s for s in samples]),
        "child_cpu_us_per_task": _median([s.child_cpu_us for s in samples]),
        "child_sched_us_per_task": _median([s.child_sched_us for s in samples]),
        "child_other_threads_us_per_task": _median([s.child_other_threads_us for s in samples]),
        "main_cpu_us_per_task": _median([s.main_cpu_us for s in samples]),
        "driver_cpu_us_per_task": _median([s.driver_cpu_us for s in samples]),
        "delay_us": _median([s.delay_us for s in samples]),
        "delay_cpu_us": _median([s.delay_cpu_us for s in samples]),
        "samples": [
            {
                key: round(value, 3) if isinstance(value, float) else value
                for key, value in _sample_dict(s).items()
            }
            for s in samples
        ],
    }


def _sample_dict(sample: Sample) -> dict[str, Any]:
    """A Sample as a dict (slots dataclasses have no __dict__)."""
    return {name: getattr(sample, name) for name in Sample.__dataclass_fields__}


def _span_counts(receiver: Any, workers: Sequence[Worker]) -> dict[str, dict[str, int]]:
    counted = receiver.counts()
    counts: dict[str, dict[str, int]] = {}
    for worker in workers:
        spec = worker.spec
        if spec.app_variant == "plain":
            continue
        if spec.endpoint_down:
            counts[spec.key] = {"received": 0, "expected": 0}
            continue
        counts[spec.key] = {
            "run_spans": sum(
                n
                for (svc, kind, _), n in counted.items()
                if svc == spec.worker_service and kind == "CONSUMER"
            ),
            "run_spans_with_parent": counted[(spec.worker_service, "CONSUMER", True)],
            "tasks_run": worker.tasks_run,
            "publish_spans": sum(
                n
                for (svc, kind, _), n in counted.items()
                if svc == spec.producer_service and kind == "PRODUCER"
            ),
            "tasks_published": worker.tasks_published,
        }
    return counts


def _goals(summaries: dict[str, dict[str, Any]]) -> list[tuple[str, bool]]:
    goals: list[tuple[str, bool]] = []
    plain, stock, ours = (summaries.get(key) for key in ("plain", "stock", "tracehook"))
    if stock is None or ours is None:
        return goals
    cpu, tps = "child_cpu_us_per_task", "tasks_per_s"
    goals.append(
        (
            f"tracehook child CPU {ours[cpu]:.0f} µs/task vs stock {stock[cpu]:.0f} (goal <= stock)",
            ours[cpu] <= stock[cpu],
        )
    )
    goals.append(
        (
            f"tracehook {ours[tps]:.0f} tasks/s vs stock {stock[tps]:.0f} (goal >= stock)",
            ours[tps] >= stock[tps],
        )
    )
    goals.append(
        (
            f"tracehook .delay() CPU {ours['delay_cpu_us']:.0f} µs vs stock {stock['delay_cpu_us']:.0f} "
            "(goal < stock)",
            ours["delay_cpu_us"] < stock["delay_cpu_us"],
        )
    )
    if plain is not None:
        added, stock_added = ours[cpu] - plain[cpu], stock[cpu] - plain[cpu]
        goals.append(
            (
                f"aim: tracehook adds {added:.0f} µs/task, stock {stock_added:.0f} "
                f"(aim <= {ADDED_CPU_AIM:.1f}x stock's)",
                added <= ADDED_CPU_AIM * stock_added,
            )
        )
        ratio = _ratio(ours[tps], plain[tps])
        goals.append(
            (
                f"aim: tracehook throughput {ratio:.2f}x plain (aim >= {THROUGHPUT_AIM:.2f}x)",
                ratio >= THROUGHPUT_AIM,
            )
        )
    down = summaries.get("tracehook-down")
    if down is not None:
        goals.append(
            (
                f"endpoint down: child CPU {down[cpu]:.0f} vs {ours[cpu]:.0f} µs/task healthy, "
                f"{down[tps]:.0f} vs {ours[tps]:.0f} tasks/s "
                f"(goal: not slower, within {DOWN_NOISE:.2f}x noise)",
                down[cpu] <= ours[cpu] * DOWN_NOISE and down[tps] * DOWN_NOISE >= ours[tps],
            )
        )
    return goals


def _print_report(report: dict[str, Any]) -> None:
    summaries: dict[str, dict[str, Any]] = report["variants"]
    plain = summaries.get("plain")
    config = report["config"]
    print(
        f"Celery prefork (-c 2) over Redis, {config['tasks']} no-op tasks x {config['rounds']} round(s) "
        f"per variant, medians; {report['cpus']} CPUs; ratios vs plain; tracing code "
        f"{report['tracing_code']['sha256']} (newest file {report['tracing_code']['newest_mtime']})"
    )
    stock = summaries.get("stock")
    print(
        "µs are per task: child = pool children's CPU (/proc stat; sched = the same from schedstat, "
        "thr = its export-thread part), main = worker main process, delay = producer .delay() wall and "
        "CPU, rcv = this process (OTLP receiver)"
    )
    header = (
        f"{'variant':<33}{'tasks/s':>8}{'x':>6}{'xstk':>6}{'child':>7}{'x':>6}{'xstk':>6}{'sched':>7}{'thr':>5}"
        f"{'main':>6}{'delay':>7}{'d.CPU':>7}{'rcv':>5}"
    )
    print(header)
    print("-" * len(header))
    for summary in summaries.values():
        tps_ratio = _ratio(summary["tasks_per_s"], plain["tasks_per_s"]) if plain else float("nan")
        cpu_ratio = (
            _ratio(summary["child_cpu_us_per_task"], plain["child_cpu_us_per_task"])
            if plain
            else float("nan")
        )
        tps_stock = _ratio(summary["tasks_per_s"], stock["tasks_per_s"]) if stock else float("nan")
        cpu_stock = (
            _ratio(summary["child_cpu_us_per_task"], stock["child_cpu_us_per_task"])
            if stock
            else float("nan")
        )
        print(
            f"{summary['label']:<33}{summary['tasks_per_s']:>8.0f}{tps_ratio:>5.2f}x{tps_stock:>5.2f}x"
            f"{summary['child_cpu_us_per_task']:>7.0f}{cpu_ratio:>5.2f}x{cpu_stock:>5.2f}x"
            f"{summary['child_sched_us_per_task']:>7.0f}{summary['child_other_threads_us_per_task']:>5.0f}"
            f"{summary['main_cpu_us_per_task']:>6.0f}{summary['delay_us']:>7.0f}"
            f"{summary['delay_cpu_us']:>7.0f}{summary['driver_cpu_us_per_task']:>5.0f}"
        )
    print("x = ratio to plain, xstk = ratio to stock; per round (tasks/s | child µs/task):")
    for summary in summaries.values():
        rounds = ", ".join(f"{s['tasks_per_s']:.0f}|{s['child_cpu_us']:.0f}" for s in summary["samples"])
        print(f"  {summary['label']:<33}{rounds}")
    print("spans received (sanity):")
    for key, counts in report["spans"].items():
        if "run_spans" in counts:
            print(
                f"  {key:<16} run spans {counts['run_spans']} for {counts['tasks_run']} tasks run "
                f"({counts['run_spans_with_parent']} with a parent), publish spans {counts['publish_spans']} "
                f"for {counts['tasks_published']} published"
            )
        else:
            print(f"  {key:<16} endpoint down: nothing expected")
    for line, met in report["goals"]:
        print(f"{'PASS' if met else 'MISS'}  {line}")


# -- main -------------------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant (default 3)")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per run (default 2000)")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up tasks per worker (default 300)")
    parser.add_argument("--quick", action="store_true", help="1 round of 500 tasks (200 warm-up)")
    parser.add_argument("--settle", type=float, default=5.5, help="seconds after a run before reading CPU")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument(
        "--variants",
        default=",".join(v.key for v in VARIANTS if v.default),
        help="comma-separated subset of: " + ", ".join(v.key for v in VARIANTS),
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra variable for workers, producers",
    )
    parser.add_argument("--profile", metavar="DIR", help="cProfile each pool child into DIR (diagnosis)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    parser.add_argument("--producer", nargs=3, metavar=("VARIANT", "N", "QUEUE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.tasks, args.warmup = 1, 500, 200
    return args


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0912
    """Run the benchmark; returns the exit status."""
    args = _parse(argv)
    if args.producer:
        variant, n, queue = args.producer
        return producer_main(variant, int(n), queue)

    from benchmarks._sink import OtlpSink  # noqa: PLC0415

    wanted = [key.strip() for key in args.variants.split(",") if key.strip()]
    specs = [spec for spec in VARIANTS if spec.key in wanted]
    unknown = set(wanted) - {spec.key for spec in VARIANTS}
    if unknown or not specs:
        print(f"unknown variants: {', '.join(sorted(unknown)) or '(none given)'}", file=sys.stderr)
        return 2
    extra = dict(item.split("=", 1) for item in args.env)
    if args.profile:
        extra["BENCH_PROFILE_DIR"] = str(Path(args.profile).resolve())
    client = redis.Redis.from_url(BROKER_URL)
    client.ping()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    log_dir = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    receiver = OtlpSink().start()
    down_endpoint = f"http://127.0.0.1:{_free_closed_port()}"
    run_id = uuid.uuid4().hex[:8]
    # Read before the workers import the code.
    fingerprint = code_fingerprint("tracing/*.py", "benchmarks/_celery_bench_app.py")
    workers = []
    for spec in specs:
        queue = f"bench-{spec.key}-{run_id}"
        endpoint = down_endpoint if spec.endpoint_down else receiver.endpoint
        workers.append(
            Worker(
                spec, queue, _variant_env(spec, queue, endpoint, extra), log_dir / f"worker-{spec.key}.log"
            )
        )
    failed = False
    try:
        with _terminate_on_sigterm():
            for worker in workers:
                _start_worker(worker)
            for worker in workers:  # the warm-up run also waits for the worker to be up
                log(f"warm-up {worker.spec.key} ({args.warmup} tasks)")
                _run(client, worker, args.warmup, 0.0, log_dir)
                worker.samples.clear()
            for round_index in range(args.rounds):
                shift = round_index % len(workers)
                for worker in workers[shift:] + workers[:shift]:
                    sample = _run(client, worker, args.tasks, args.settle, log_dir)
                    worker.samples.append(sample)
                    log(
                        f"round {round_index + 1}/{args.rounds} {worker.spec.key:<15} "
                        f"{sample.tasks_per_s:6.0f} tasks/s  child {sample.child_cpu_us:5.0f} µs/task  "
                        f"main {sample.main_cpu_us:4.0f} µs/task  delay {sample.delay_us:4.0f} µs"
                    )
    except BenchError as error:
        failed = True
        print(f"benchmark failed: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        failed = True
        print("interrupted: stopping workers", file=sys.stderr)
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        try:
            _stop_workers(workers, timeout_s=20.0)
            time.sleep(0.5)  # last exports in flight
            spans = _span_counts(receiver, workers)
            receiver.stop()
            _cleanup_redis(client, workers)
        finally:
            signal.signal(signal.SIGINT, previous)
    if failed:
        print(f"logs kept in {log_dir}", file=sys.stderr)
        return 1

    summaries = {worker.spec.key: _summary(worker) for worker in workers}
    report = {
        "config": {
            "rounds": args.rounds,
            "tasks": args.tasks,
            "warmup": args.warmup,
            "settle_s": args.settle,
        },
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "tracing_code": fingerprint,
        "variants": summaries,
        "ratios_vs_plain": _ratios(summaries),
        "spans": spans,
        "goals": _goals(summaries),
    }
    if args.json:
        report["goals"] = [{"goal": line, "met": met} for line, met in report["goals"]]
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if args.keep_logs:
        log(f"logs in {log_dir}")
    else:
        for path in log_dir.iterdir():
            path.unlink()
        log_dir.rmdir()
    return 0


def _ratios(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    plain = summaries.get("plain")
    if plain is None:
        return {}
    return {
        key: {
            "tasks_per_s": _ratio(summary["tasks_per_s"], plain["tasks_per_s"]),
            "child_cpu_us_per_task": _ratio(summary["child_cpu_us_per_task"], plain["child_cpu_us_per_task"]),
            "child_sched_us_per_task": _ratio(
                summary["child_sched_us_per_task"], plain["child_sched_us_per_task"]
            ),
            "delay_us": _ratio(summary["delay_us"], plain["delay_us"]),
        }
        for key, summary in summaries.items()
    }


def _cleanup_redis(client: redis.Redis, workers: Sequence[Worker]) -> None:
    """Delete every key of this run: queues, counters, kombu's bindings (all named after the queue)."""
    with contextlib.suppress(redis.RedisError):
        for worker in workers:
            keys = list(client.scan_iter(match=f"*{worker.queue}*", count=1000))
            if keys:
                client.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())

"""``tracehook demo``: the main job on a laptop, without Docker.

Starts the RentVine sandbox, the intake and a prefork worker as local processes on the embedded defaults:
a Redis-protocol server inside the demo's own process (:mod:`workflows.cli._embedded_redis`) is the
broker and holds the dedupe keys, the source map and the dead-letter list, as Redis does in production,
and never a Redis the user's own stack reads. Sends the sample webhooks, waits for their traces, prints
each as a tree with its log lines, and stops everything it started. Spans go to an OTLP-JSON lines file
and logs to one file per process, both kept in the demo's folder for ``tracehook trace --file`` and
``tracehook logs``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from workflows.cli._embedded_redis import embedded_redis
from workflows.cli._logs import format_log
from workflows.cli._processes import (
    Process,
    StartError,
    free_port,
    start,
    stop,
    wait_answering,
    worker_command,
)
from workflows.cli._trace_view import SpanRow, load_otlp_lines, render_tree
from workflows.events import FIXTURES, load_fixture
from workflows.signing import new_secret, signed_headers

__all__ = ["DemoError", "DemoInterruptedError", "DemoResult", "run_demo"]

START_TIMEOUT_S: Final = 45.0
QUIET_S: Final = 0.6
_SERVICES: Final = ("sandbox", "intake", "worker")


class DemoError(Exception):
    """The demo could not run; the message says what failed and what to do."""


@dataclass
class Sent:
    """One webhook the demo sent and what the intake answered."""

    fixture: str
    event_type: str
    status: int
    trace_id: str = ""
    detail: str = ""


@dataclass
class DemoResult:
    """What the demo did: its folder, the events, which traces completed, how long it took."""

    folder: Path
    backend: str
    sent: list[Sent] = field(default_factory=list)
    complete: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every event accepted and every trace complete."""
        return bool(self.sent) and all(s.trace_id and s.trace_id in self.complete for s in self.sent)


def demo_environment(folder: Path, base: Mapping[str, str], *, redis_url: str) -> dict[str, str]:
    """The environment of the demo's processes: the embedded defaults, a fresh secret, the folder's files,
    and ``redis_url`` (the demo's own server) as the store and the broker."""
    secret = new_secret()
    env = {key: value for key, value in base.items() if not key.startswith(("OTEL_", "CELERY_"))}
    env.update(
        {
            "WEBHOOK_SECRET": secret,
            "TRACE_EXPORTER": f"file:{folder / 'spans.jsonl'}",
            "TRACE_SAMPLING_RATE": "1",
            "TRACE_EMERGENCY_SAMPLING_RATE": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "SANDBOX_DB": str(folder / "rentvine-sandbox.sqlite3"),
            "TASK_MAX_RETRIES": "2",
            "TASK_RETRY_BACKOFF_S": "0.5",
            # The demo shows traces and logs; a metrics endpoint would only collide with a real worker's.
            "WORKER_METRICS_PORT": "0",
            "CELERY_DEFAULT_QUEUE": "tracehook-demo",
            # The demo's own server: dedupe keys, the source map and dead letters never land in a Redis the
            # user's own stack reads (a source entry there would link their next webhook to a demo trace).
            "REDIS_URL": redis_url,
        }
    )
    for key in ("SERVICE_NAME", "SANDBOX_WEBHOOK_URL", "WEBHOOK_ALLOW_UNSIGNED"):
        env.pop(key, None)
    return env


def _read_spans(path: Path) -> list[SpanRow]:
    if not path.exists():
        return []
    # A line being appended by another process may be cut short: read whole lines only.
    text = path.read_text(errors="replace")
    return load_otlp_lines(text[: text.rfind("\n") + 1].splitlines())


def trace_complete(rows: Sequence[SpanRow]) -> bool:
    """A trace is whole when its intake root, a worker run and its workflow span are in, and no span's
    parent is missing."""
    ids = {row.span_id for row in rows}
    has_root = any(not row.parent_span_id and row.name.startswith("webhook.") for row in rows)
    has_run = any(row.kind == "CONSUMER" for row in rows)
    has_workflow = any(row.name.startswith("workflow.") and "step" not in row.name for row in rows)
    orphans = any(row.parent_span_id and row.parent_span_id not in ids for row in rows)
    return has_root and has_run and has_workflow and not orphans


def _log_lines(folder: Path, trace_id: str) -> list[dict[str, Any]]:
    found = []
    for name in _SERVICES:
        log = folder / f"{name}.log"
        if not log.exists():
            continue
        for raw in log.read_text(errors="replace").splitlines():
            if not raw.startswith("{") or trace_id not in raw:
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("trace_id") == trace_id:
                found.append(record)
    return sorted(found, key=lambda record: str(record.get("timestamp", "")))


def _send(url: str, secret: str, fixture: str) -> Sent:
    event = load_fixture(fixture)
    event["id"] = f"{event['id']}_{uuid.uuid4().hex[:8]}"
    body = json.dumps(event).encode()
    event_type = str(event.get("type"))
    try:
        answer = httpx.post(
            url, content=body, headers=signed_headers(secret, body, msg_id=event["id"]), timeout=30
        )
    except httpx.HTTPError as exc:
        return Sent(fixture, event_type, 0, detail=f"{type(exc).__name__}: {exc}")
    try:
        data = answer.json()
    except ValueError:
        data = {}
    return Sent(
        fixture, event_type, answer.status_code, str(data.get("trace_id") or ""), str(data.get("detail", ""))
    )


class DemoInterruptedError(Exception):
    """SIGTERM reached the demo; the processes it started have been stopped."""


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception while the demo runs, so its processes (each in a session of its own,
    out of reach of the terminal's signals) are stopped on the way out, never left behind."""

    def interrupt(signum: int, _: Any) -> None:
        raise DemoInterruptedError(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: the caller handles signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        yield progress


def run_demo(
    *,
    fixtures: Sequence[str] = FIXTURES,
    folder: Path | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    timeout_s: float = 45.0,
) -> DemoResult:
    """Run the demo; print the trees and log lines to ``out`` and the progress to stderr.

    Raises:
        DemoError: a process did not start; the message carries the end of its log.
        DemoInterruptedError: SIGTERM (Ctrl-C raises KeyboardInterrupt); both stop the processes first.
    """
    started = time.monotonic()
    base = os.environ if env is None else env
    folder = Path(folder or tempfile.mkdtemp(prefix="tracehook-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    screen = Console(file=out, highlight=False, soft_wrap=False)
    if not screen.is_terminal:
        screen = Console(file=out, highlight=False, width=200)
    status = Console(stderr=True, highlight=False)
    processes: list[Process] = []
    with ExitStack() as cleanup:
        redis_url = cleanup.enter_context(embedded_redis())
        child_env = demo_environment(folder, base, redis_url=redis_url)
        result = DemoResult(folder, f"an embedded Redis-protocol server at {redis_url}")
        status.print(f"tracehook demo: {result.backend}; spans and logs in {folder}", soft_wrap=True)
        cleanup.callback(stop, processes)
        cleanup.enter_context(_stopped_by_sigterm())
        with _progress(status) as progress:
            intake_url, worker = _start_stack(child_env, folder, processes, progress)
            sending = progress.add_task("sending sample webhooks", total=len(fixtures))
            for fixture in fixtures:
                result.sent.append(_send(intake_url, child_env["WEBHOOK_SECRET"], fixture))
                progress.advance(sending)
            wanted = {sent.trace_id for sent in result.sent if sent.trace_id}
            waiting = progress.add_task("waiting for the traces", total=len(wanted))
            _wait_for_traces(folder, wanted, result, worker, progress, waiting, timeout_s)
        status.print("tracehook demo: stopping the processes it started")
    result.seconds = time.monotonic() - started
    _report(result, screen, _read_spans(folder / "spans.jsonl"))
    return result


def _start_stack(
    env: dict[str, str], folder: Path, processes: list[Process], progress: Progress
) -> tuple[str, Process]:
    """Start the sandbox, the intake and a prefork worker (into ``processes``, which the caller stops);
    wait for the sandbox and the intake to answer. Returns the intake's webhook URL and the worker."""
    intake_port, sandbox_port = free_port(), free_port()
    env["RENTVINE_API_URL"] = f"http://127.0.0.1:{sandbox_port}"
    py = sys.executable
    commands = {
        "sandbox": [py, "-m", "workflows.cli", "sandbox", "--port", str(sandbox_port)],
        "intake": [py, "-m", "workflows.cli", "intake", "--port", str(intake_port)],
        "worker": worker_command(concurrency=2, loglevel="INFO"),
    }
    starting = progress.add_task("starting sandbox, intake and worker", total=2)
    processes.extend(start(name, command, env, folder) for name, command in commands.items())
    by_name = {proc.name: proc for proc in processes}
    since = time.monotonic()
    try:
        for name, port in (("sandbox", sandbox_port), ("intake", intake_port)):
            wait_answering(f"http://127.0.0.1:{port}/healthz", by_name[name], START_TIMEOUT_S, since=since)
            progress.advance(starting)
    except StartError as exc:
        raise DemoError(str(exc)) from None
    return f"http://127.0.0.1:{intake_port}/webhooks/rentvine", by_name["worker"]


def _wait_for_traces(
    folder: Path,
    wanted: set[str],
    result: DemoResult,
    worker: Process,
    progress: Progress,
    task: Any,
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    counts: dict[str, tuple[int, float]] = {}
    while time.monotonic() < deadline and not wanted <= result.complete:
        if worker.process.poll() is not None:
            msg = f"the worker exited with code {worker.process.returncode}; its log ends:\n{worker.tail()}"
            raise DemoError(msg)
        by_trace: dict[str, list[SpanRow]] = {}
        for row in _read_spans(folder / "spans.jsonl"):
            by_trace.setdefault(row.trace_id, []).append(row)
        now = time.monotonic()
        for trace_id in wanted - result.complete:
            rows = by_trace.get(trace_id, [])
            seen, since = counts.get(trace_id, (-1, now))
            if len(rows) != seen:
                counts[trace_id] = (len(rows), now)
            # Whole and quiet: late spans from the sandbox's own export have had their batch delay.
            elif trace_complete(rows) and now - since >= QUIET_S:
                result.complete.add(trace_id)
                progress.advance(task)
        time.sleep(0.1)


def _report(result: DemoResult, screen: Console, spans: list[SpanRow]) -> None:
    by_trace: dict[str, list[SpanRow]] = {}
    for row in spans:
        by_trace.setdefault(row.trace_id, []).append(row)
    for sent in result.sent:
        screen.rule(f"{sent.event_type} ({sent.fixture}.json) → {sent.status}")
        if not sent.trace_id:
            screen.print(f"not accepted: {sent.detail or 'no trace id in the answer'}")
            continue
        rows = by_trace.get(sent.trace_id, [])
        if not rows:
            screen.print(f"trace {sent.trace_id}: no spans arrived")
            continue
        render_tree(rows, screen)
        if sent.trace_id not in result.complete:
            screen.print(
                "[yellow]incomplete: the worker had not finished it when the demo stopped waiting[/]"
            )
        lines = _log_lines(result.folder, sent.trace_id)
        screen.print(f"[bold]log lines of trace {sent.trace_id}[/] ({len(lines)})")
        for record in lines:
            screen.print(format_log(record), markup=False, soft_wrap=True)
    done = len([s for s in result.sent if s.trace_id in result.complete])
    screen.rule()
    screen.print(
        f"{len(result.sent)} webhooks sent, {done} traces complete in {result.seconds:.1f} s "
        f"({result.backend})."
    )
    screen.print(
        f"Spans: {result.folder / 'spans.jsonl'}   logs: {result.folder}/{{intake,worker,sandbox}}.log"
    )
    if result.sent and result.sent[0].trace_id:
        first = result.sent[0].trace_id
        screen.print(f"Again:  tracehook trace {first} --file {result.folder / 'spans.jsonl'}", markup=False)
        screen.print(f"        tracehook logs --trace {first} {result.folder / 'worker.log'}", markup=False)

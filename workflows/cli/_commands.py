"""The commands of ``tracehook``, one function each, taking the parsed arguments and returning the exit code.

A command imports what only it needs (FastAPI, Celery, uvicorn, rich, the OpenTelemetry SDK) when it runs,
so ``tracehook --help`` or ``tracehook logs`` does not pay for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflows.cli._errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_UNREACHABLE, CliError
from workflows.events import EVENT_TYPES, FIXTURES, load_fixture

if TYPE_CHECKING:
    from tracing._trace_tree import SpanRow
    from workflows.settings import AppSettings
    from workflows.store import KeyValueStore

__all__ = [
    "demo",
    "dlq_list",
    "dlq_replay",
    "doctor",
    "intake",
    "sandbox",
    "secret",
    "send",
    "trace",
]


def intake(args: argparse.Namespace) -> int:
    """``tracehook intake``: the webhook intake under uvicorn."""
    import uvicorn  # noqa: PLC0415

    from workflows.intake import create_app  # noqa: PLC0415

    app = create_app()
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


def sandbox(args: argparse.Namespace) -> int:
    """``tracehook sandbox``: the RentVine API stand-in."""
    from workflows.sandbox import serve  # noqa: PLC0415

    serve(args.host, args.port)
    return 0


# --- dlq ------------------------------------------------------------------------------------------------


def _dlq_store() -> KeyValueStore:
    import redis  # noqa: PLC0415

    from workflows.settings import load_app_settings  # noqa: PLC0415
    from workflows.store import open_store  # noqa: PLC0415

    settings = load_app_settings(service_name="tracehook-cli")
    client = open_store(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        msg = (
            f"cannot reach the store at {settings.redis_url} ({type(exc).__name__}); start Redis, or point "
            "REDIS_URL at the one the workers use"
        )
        raise CliError(msg, EXIT_UNREACHABLE) from None
    return client


def dlq_list(args: argparse.Namespace) -> int:
    """``tracehook dlq list [--json]``."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from workflows.dlq import DeadLetters  # noqa: PLC0415

    entries = DeadLetters(_dlq_store()).list()
    if args.json:
        print(json.dumps([entry.__dict__ for entry in entries], indent=2))
        return 0
    if not entries:
        print("the dead-letter list is empty")
        return 0
    for entry in entries:
        when = datetime.fromtimestamp(entry.failed_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{entry.id}  {when}Z  {entry.event_type:<24} {entry.event_id}  trace {entry.trace_id}")
        print(f"    after {entry.attempts} attempt(s): {entry.error_type}: {entry.error}")
    return 0


def dlq_replay(args: argparse.Namespace) -> int:
    """``tracehook dlq replay ID``: re-enqueue one entry in a new trace linked to the failed one."""
    from tracing import configure_tracing, flush_tracing  # noqa: PLC0415
    from workflows.dlq import DeadLetters  # noqa: PLC0415
    from workflows.queue import producer_app  # noqa: PLC0415
    from workflows.settings import load_app_settings  # noqa: PLC0415

    configure_tracing(load_app_settings(service_name="tracehook-cli").tracing)
    try:
        trace_id, task_id = DeadLetters(_dlq_store()).replay(args.id, producer_app())
    except KeyError:
        print(f"tracehook dlq replay: no entry {args.id!r}; see `tracehook dlq list`", file=sys.stderr)
        return EXIT_ERROR
    flush_tracing()
    print(f"replayed {args.id}: task {task_id}, new trace {trace_id}")
    return 0


# --- secret ---------------------------------------------------------------------------------------------


def secret(args: argparse.Namespace) -> int:
    """``tracehook secret [--file FILE]``: print a new signing secret, or write one to FILE once."""
    from workflows.signing import new_secret  # noqa: PLC0415

    if not args.file:
        print(new_secret())
        return 0
    path = Path(args.file)
    try:
        if path.is_file() and path.read_text(encoding="utf-8").strip():
            print(f"kept the secret in {path}")
            return 0
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then renamed: a reader never sees half a secret.
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(new_secret() + "\n")
        partial.replace(path)
    except OSError as exc:
        raise CliError(f"cannot write {path} ({exc.strerror or exc})") from None
    print(f"wrote a new secret to {path}")
    return 0


# --- send -----------------------------------------------------------------------------------------------


def _load_event(spec: str) -> dict[str, Any]:
    """The event named by ``spec``: a JSON file, a fixture name, or an event type with a fixture."""
    path = Path(spec)
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read {spec} as JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise CliError(f"{spec} holds JSON but not an object; a webhook event is an object")
        return loaded
    name = spec.removesuffix(".json")
    if name in FIXTURES:
        return load_fixture(name)
    for fixture in FIXTURES:
        event = load_fixture(fixture)
        if event.get("type") == spec:
            return event
    known_types = sorted({str(load_fixture(f).get("type")) for f in FIXTURES} & set(EVENT_TYPES))
    if path.suffix == ".json" or "/" in spec:
        raise CliError(f"no such file {spec!r}; give a JSON file, a fixture or an event type")
    raise CliError(
        f"unknown event {spec!r}: not a file, a fixture nor an event type with a fixture. "
        f"Fixtures: {', '.join(FIXTURES)}. Event types: {', '.join(known_types)}"
    )


def _signed_request(
    args: argparse.Namespace, event: dict[str, Any], settings: AppSettings
) -> tuple[bytes, dict[str, str]]:
    """The body and the Standard Webhooks headers of ``event``, signed with --secret or WEBHOOK_SECRET."""
    from workflows.signing import signed_headers  # noqa: PLC0415

    signing_secret = args.secret or (settings.webhook_secrets[0] if settings.webhook_secrets else "")
    if not signing_secret:
        raise CliError(
            "no signing secret: pass --secret SECRET or set WEBHOOK_SECRET to the intake's secret "
            "(whsec_<base64>, as `tracehook secret` makes)"
        )
    body = json.dumps(event).encode()
    try:
        # The intake dedupes on webhook-id (a sender's retries repeat it): derive it from the event id, so
        # a fresh id is a new message and --keep-id a redelivery of the same one.
        msg_id = str(event.get("id") or f"msg_{uuid.uuid4().hex}")
        return body, signed_headers(signing_secret, body, msg_id=msg_id)
    except ValueError as exc:
        raise CliError(f"--secret/WEBHOOK_SECRET: {exc}") from None


def send(args: argparse.Namespace) -> int:
    """``tracehook send TYPE|FILE``: sign and post a webhook; print the answer and its trace id."""
    import httpx  # noqa: PLC0415

    from workflows._compose import tail_route  # noqa: PLC0415
    from workflows.settings import load_app_settings  # noqa: PLC0415

    # The compose stack's route: with --profile tail, the link is to the tail Jaeger the apps send to.
    settings = load_app_settings({**os.environ, **tail_route(os.environ)}, service_name="tracehook-cli")
    event = _load_event(args.event)
    if not args.keep_id:
        base = str(event.get("id") or "evt_cli")
        event["id"] = f"{base}_{uuid.uuid4().hex[:8]}"
    body, headers = _signed_request(args, event, settings)
    url = args.url or settings.intake_url
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=args.timeout)
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise CliError(
            f"cannot reach the intake at {url} ({type(exc).__name__}: {exc}). Start it with "
            "`tracehook intake` (or `docker compose up`), or point --url / INTAKE_URL at a running one",
            EXIT_UNREACHABLE,
        ) from None
    try:
        answer: Any = response.json()
    except ValueError:
        answer = None
    if not response.is_success:
        print(
            f"tracehook send: {url} answered {response.status_code} {response.reason_phrase}",
            file=sys.stderr,
        )
        print(response.text, file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(answer if answer is not None else {"body": response.text}, indent=2))
        return 0
    answer = answer if isinstance(answer, dict) else {}
    trace_id = answer.get("trace_id")
    print(f"{response.status_code} {answer.get('status', response.reason_phrase)}")
    print(f"event   {answer.get('event_id', event.get('id'))} ({event.get('type', '?')})")
    if trace_id:
        print(f"trace   {trace_id}")
        print(f"jaeger  {settings.jaeger_query_url}/trace/{trace_id}")
    elif answer.get("status") == "duplicate":
        print("trace   - (a duplicate: this event id was already accepted; omit --keep-id for a fresh one)")
    return 0


# --- trace ----------------------------------------------------------------------------------------------


def _spans_from_file(file: str, trace_id: str) -> tuple[list[SpanRow], str]:
    """The spans of ``trace_id`` in ``file`` (- for stdin), and the name of the source."""
    from workflows.cli._trace_view import load_spans_text, spans_of_trace  # noqa: PLC0415

    source = "stdin" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise CliError(
            f"cannot read {file} ({exc.strerror or exc}); give the OTLP-JSON lines file the "
            "services write (TRACE_EXPORTER=file:PATH) or a Jaeger v3 JSON answer"
        ) from None
    try:
        return spans_of_trace(load_spans_text(text), trace_id), source
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{source} is neither OTLP-JSON lines nor a Jaeger v3 answer: {exc}") from None


def _spans_from_jaeger(args: argparse.Namespace, trace_id: str) -> tuple[list[SpanRow], str]:
    """The spans of ``trace_id`` from Jaeger's query API (--jaeger or JAEGER_QUERY_URL), and its URL."""
    from workflows.cli import _jaeger  # noqa: PLC0415
    from workflows.cli._trace_view import load_jaeger_v3, spans_of_trace  # noqa: PLC0415
    from workflows.settings import load_app_settings  # noqa: PLC0415

    query_url = args.jaeger or load_app_settings(service_name="tracehook-cli").jaeger_query_url
    source = _jaeger.trace_url(query_url, trace_id)
    try:
        documents = _jaeger.fetch_trace(query_url, trace_id, timeout=args.timeout)
    except _jaeger.JaegerUnreachableError as exc:
        raise CliError(
            f"cannot reach Jaeger's query API at {query_url} ({exc}). Start Jaeger "
            "(`docker compose up jaeger`), point --jaeger / JAEGER_QUERY_URL at it, or read spans "
            "from a file with --file spans.jsonl",
            EXIT_UNREACHABLE,
        ) from None
    except _jaeger.TraceNotFoundError:
        raise CliError(
            f"trace {trace_id} not found at {source}: not exported yet (try again in a few "
            "seconds), sampled out, or sent to another Jaeger"
        ) from None
    except _jaeger.JaegerError as exc:
        raise CliError(f"{source}: {exc}") from None
    try:
        return spans_of_trace(load_jaeger_v3(documents), trace_id), source
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{source} did not answer a Jaeger v3 trace: {exc}") from None


def trace(args: argparse.Namespace) -> int:
    """``tracehook trace TRACE_ID``: the trace as a tree, from Jaeger or a spans file."""
    from rich.console import Console  # noqa: PLC0415

    from workflows.cli._trace_view import normalise_id, render_tree  # noqa: PLC0415

    try:
        trace_id = normalise_id(args.trace_id, 16)
    except ValueError:
        raise CliError(
            f"{args.trace_id!r} is not a trace id: expected 32 hex digits (as `tracehook send` prints)"
        ) from None
    if args.file:
        spans, source = _spans_from_file(args.file, trace_id)
    else:
        spans, source = _spans_from_jaeger(args, trace_id)
    if not spans:
        raise CliError(f"trace {trace_id} not found in {source} (no spans with that id)")
    if args.json:
        print(json.dumps([span.to_json() for span in spans], indent=2))
        return 0
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=220)
    render_tree(spans, console)
    return 0


# --- doctor and demo ------------------------------------------------------------------------------------

_MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def doctor(args: argparse.Namespace) -> int:
    """``tracehook doctor``: every check, each problem with its fix; 1 when any failed."""
    from workflows.cli._doctor import run_checks  # noqa: PLC0415

    failed = 0
    waiting = {} if args.wait is None else {"wait_s": args.wait}
    for finding in run_checks(os.environ, timeout_s=args.timeout, **waiting):
        print(f"{_MARKS[finding.verdict]}  {finding.check:<15} {finding.detail}", flush=True)
        if finding.fix and finding.verdict in {"fail", "warn"}:
            print(f"{'':<21} fix: {finding.fix}", flush=True)
        failed += finding.verdict == "fail"
    if failed:
        print(f"\n{failed} problem(s) found", file=sys.stderr)
        return EXIT_ERROR
    print("\nno problems found")
    return 0


def demo(args: argparse.Namespace) -> int:
    """``tracehook demo``: sandbox, intake and worker as local processes, the sample webhooks' traces."""
    from workflows.cli._demo import DemoError, DemoInterruptedError, run_demo  # noqa: PLC0415

    try:
        result = run_demo(
            fixtures=args.events or FIXTURES,
            folder=Path(args.dir) if args.dir else None,
            timeout_s=args.timeout,
        )
    except DemoError as exc:
        raise CliError(str(exc)) from None
    except (KeyboardInterrupt, DemoInterruptedError):
        print("tracehook demo: interrupted; the processes it started are stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if result.ok else EXIT_ERROR

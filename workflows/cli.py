"""The ``tracehook`` command line: run the intake and the sandbox, send a signed webhook, show a trace as a
tree and the log lines of one trace, inspect the dead-letter list.

Exit codes, with one meaning each for every command: :data:`EXIT_CODES` (also in ``tracehook --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TextIO

from tracing.settings import SettingsError
from workflows.events import FIXTURES as FIXTURE_NAMES

EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_INTERRUPTED = 130
EXIT_CODES = (
    "Exit codes: 0 done; 1 something to fix on your side (the command line, a setting, an input file, "
    "nothing found, a failed check, a webhook the intake refused); 2 something could not be reached (the "
    "intake, Jaeger, Redis, the broker); 130 interrupted."
)


class _Parser(argparse.ArgumentParser):
    """argparse's own usage errors exit 2, which here means "could not be reached": they exit 1."""

    def error(self, message: str) -> NoReturn:
        """Print the usage and the error, and exit 1."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class CliError(Exception):
    """A failure to report on stderr as ``tracehook COMMAND: message``, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _version() -> str:
    try:
        return metadata.version("tracehook")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _intake(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from workflows.intake import create_app  # noqa: PLC0415

    app = create_app()
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from workflows.sandbox import serve  # noqa: PLC0415

    serve(args.host, args.port)
    return 0


def _dlq_store() -> object:
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


def _dlq_list(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
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


def _dlq_replay(args: argparse.Namespace) -> int:
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


def _secret(args: argparse.Namespace) -> int:
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
    from workflows.events import EVENT_TYPES, FIXTURES, load_fixture  # noqa: PLC0415

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


def _send(args: argparse.Namespace) -> int:
    import httpx  # noqa: PLC0415

    from workflows._compose import tail_route  # noqa: PLC0415
    from workflows.settings import load_app_settings  # noqa: PLC0415
    from workflows.signing import signed_headers  # noqa: PLC0415

    # The compose stack's route: with --profile tail, the link is to the tail Jaeger the apps send to.
    settings = load_app_settings({**os.environ, **tail_route(os.environ)}, service_name="tracehook-cli")
    event = _load_event(args.event)
    if not args.keep_id:
        base = str(event.get("id") or "evt_cli")
        event["id"] = f"{base}_{uuid.uuid4().hex[:8]}"
    secret = args.secret or (settings.webhook_secrets[0] if settings.webhook_secrets else "")
    if not secret:
        raise CliError(
            "no signing secret: pass --secret SECRET or set WEBHOOK_SECRET to the intake's secret "
            "(whsec_<base64>, as `tracehook secret` makes)"
        )
    url = args.url or settings.intake_url
    body = json.dumps(event).encode()
    try:
        # The intake dedupes on webhook-id (a sender's retries repeat it): derive it from the event id, so
        # a fresh id is a new message and --keep-id a redelivery of the same one.
        headers = signed_headers(secret, body, msg_id=str(event.get("id") or f"msg_{uuid.uuid4().hex}"))
    except ValueError as exc:
        raise CliError(f"--secret/WEBHOOK_SECRET: {exc}") from None
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


def _trace(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415

    from workflows import _jaeger  # noqa: PLC0415
    from workflows._trace_view import (  # noqa: PLC0415
        load_jaeger_v3,
        load_spans_text,
        normalise_id,
        render_tree,
        spans_of_trace,
    )

    try:
        trace_id = normalise_id(args.trace_id, 16)
    except ValueError:
        raise CliError(
            f"{args.trace_id!r} is not a trace id: expected 32 hex digits (as `tracehook send` prints)"
        ) from None
    if args.file:
        source = "stdin" if args.file == "-" else args.file
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        except OSError as exc:
            raise CliError(
                f"cannot read {args.file} ({exc.strerror or exc}); give the OTLP-JSON lines file the "
                "services write (TRACE_EXPORTER=file:PATH) or a Jaeger v3 JSON answer"
            ) from None
        try:
            spans = spans_of_trace(load_spans_text(text), trace_id)
        except (ValueError, KeyError, TypeError) as exc:
            raise CliError(f"{source} is neither OTLP-JSON lines nor a Jaeger v3 answer: {exc}") from None
    else:
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
            spans = spans_of_trace(load_jaeger_v3(documents), trace_id)
        except (ValueError, KeyError, TypeError) as exc:
            raise CliError(f"{source} did not answer a Jaeger v3 trace: {exc}") from None
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


# --- logs -----------------------------------------------------------------------------------------------

_LOG_OWN_KEYS = frozenset({"timestamp", "level", "service", "event", "trace_id", "logger"})


def _follow_lines(stream: TextIO, *, follow: bool, interval: float) -> Iterator[str]:
    """The lines of ``stream``; with ``follow``, keep reading as it grows (a partial line waits)."""
    pending = ""
    while True:
        chunk = stream.readline()
        if chunk:
            pending += chunk
            if pending.endswith("\n"):
                yield pending
                pending = ""
            continue
        if not follow:
            if pending:
                yield pending
            return
        time.sleep(interval)


def format_log(record: dict[str, Any]) -> str:
    """One JSON log record as a line for people: time, level, service, event, then ``key=value``."""

    def show(value: Any) -> str:
        if isinstance(value, str):
            return value if value and " " not in value and "=" not in value else json.dumps(value)
        return json.dumps(value, separators=(",", ":"), default=str)

    head = [
        str(record.get("timestamp", "-")),
        f"{record.get('level', '-')!s:<7}",
        str(record.get("service", "-")),
        str(record.get("event", "")),
    ]
    rest = [f"{key}={show(value)}" for key, value in record.items() if key not in _LOG_OWN_KEYS]
    return " ".join(head + rest)


def _logs(args: argparse.Namespace) -> int:
    try:
        wanted = args.trace.strip().lower()
        stream: TextIO = sys.stdin if args.file == "-" else Path(args.file).open(errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise CliError(
            f"cannot read {args.file} ({exc.strerror or exc}); give a log file the services write, or - "
            "for stdin"
        ) from None
    follow = args.follow and args.file != "-"
    shown = 0
    try:
        for line in _follow_lines(stream, follow=follow, interval=args.interval):
            text = line.strip()
            if not text.startswith("{"):
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or str(record.get("trace_id", "")).lower() != wanted:
                continue
            print(text if args.raw else format_log(record), flush=follow)
            shown += 1
    except KeyboardInterrupt:
        return 0
    finally:
        if stream is not sys.stdin:
            stream.close()
    if not shown:
        where = "stdin" if args.file == "-" else args.file
        print(f"tracehook logs: no log lines of trace {wanted} in {where}", file=sys.stderr)
        return EXIT_ERROR
    return 0


# --- doctor ---------------------------------------------------------------------------------------------

_MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def _doctor(args: argparse.Namespace) -> int:
    from workflows.doctor import run_checks  # noqa: PLC0415

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


# --- demo -----------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from workflows.demo import DemoError, DemoInterruptedError, run_demo  # noqa: PLC0415

    try:
        result = run_demo(
            fixtures=args.events or FIXTURE_NAMES,
            folder=Path(args.dir) if args.dir else None,
            timeout_s=args.timeout,
        )
    except DemoError as exc:
        raise CliError(str(exc)) from None
    except (KeyboardInterrupt, DemoInterruptedError):
        print("tracehook demo: interrupted; the processes it started are stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if result.ok else EXIT_ERROR


def _add_tool_commands(commands: Any) -> None:
    secret = commands.add_parser(
        "secret",
        help="make a webhook signing secret (whsec_...)",
        description="Print a new Standard Webhooks signing secret, or with --file write one to FILE unless "
        "FILE already holds one (docker compose's webhook-secret service does this on first start).",
    )
    secret.add_argument(
        "--file", metavar="FILE", help="write it here (mode 0600) unless FILE has one already"
    )
    secret.set_defaults(run=_secret)

    doctor = commands.add_parser(
        "doctor",
        help="check settings and connectivity; say what to fix",
        description="Check the settings (sampling rate 0, a retired JAEGER_ENDPOINT, no webhook secret), "
        "that Redis, the broker, the OTLP endpoint and Jaeger's query API answer, and that a span sent now "
        "can be read back from Jaeger. Exit code 1 when anything is wrong.",
    )
    doctor.add_argument("--timeout", type=float, default=3.0, help="seconds per connection (default 3)")
    doctor.add_argument(
        "--wait",
        type=float,
        help="seconds to wait for the probe span in Jaeger (default 20, workflows.doctor.WAIT_S: longer "
        "than the tail Jaeger's decision_wait)",
    )
    doctor.set_defaults(run=_doctor)

    demo = commands.add_parser(
        "demo",
        help="run sandbox, intake and worker locally, send the sample webhooks, print their traces",
        description="The main job without Docker: starts the RentVine sandbox, the intake and a prefork "
        "worker as local processes (Redis when one answers at REDIS_URL, else Celery's filesystem transport "
        "and a SQLite file), sends the sample webhooks, prints each trace as a tree with its log lines, and "
        "stops everything it started. Spans and logs stay in the demo's folder.",
    )
    demo.add_argument(
        "--events",
        nargs="+",
        choices=FIXTURE_NAMES,
        metavar="FIXTURE",
        help=f"the sample events to send (default: all of {', '.join(FIXTURE_NAMES)})",
    )
    demo.add_argument(
        "--dir", metavar="DIR", help="folder for spans, logs and state (default: a new temp folder)"
    )
    demo.add_argument(
        "--timeout", type=float, default=45.0, help="seconds to wait for the traces to complete (default 45)"
    )
    demo.set_defaults(run=_demo)


_TRACING_ENVIRONMENT = """\
  OTEL_EXPORTER_OTLP_ENDPOINT  Jaeger's OTLP/HTTP address (default http://localhost:4318), or
                               TRACE_EXPORTER=file:PATH / console / none
  more (sampling, logs, metrics): the README, "Configuration"
"""
_INTAKE_ENVIRONMENT = f"""\
environment:
  WEBHOOK_SECRET               the Standard Webhooks secret senders sign with (required; several,
                               space-separated, for rotation); or WEBHOOK_SECRET_FILE, a file holding
                               it (`tracehook secret --file FILE`); WEBHOOK_ALLOW_UNSIGNED=true accepts
                               unsigned webhooks instead (local experiments only)
  REDIS_URL                    dedupe keys and the broker (default redis://localhost:6379/0)
  CELERY_BROKER_URL            another broker for the tasks (default: REDIS_URL)
  WEBHOOK_MAX_BYTES            the largest body accepted (default 1048576)
{_TRACING_ENVIRONMENT}"""
_SANDBOX_ENVIRONMENT = f"""\
environment:
  SANDBOX_DB                   its SQLite file (default rentvine-sandbox.sqlite3)
  SANDBOX_WEBHOOK_URL          the intake to announce changes to, as webhooks (default: none sent)
  WEBHOOK_SECRET               signs those webhooks, as the intake's (or WEBHOOK_SECRET_FILE);
                               without it they go unsigned
{_TRACING_ENVIRONMENT}"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tracehook``."""
    parser = _Parser(
        prog="tracehook",
        description="End-to-end tracing for webhook-triggered Celery workflows.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"tracehook {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    intake = commands.add_parser(
        "intake",
        help="run the webhook intake (uvicorn workflows.intake:app)",
        description="Run the webhook intake: POST /webhooks/rentvine, /healthz, /readyz, /metrics.",
        epilog=_INTAKE_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    intake.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    intake.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    intake.set_defaults(run=_intake)

    sandbox = commands.add_parser(
        "sandbox",
        help="run the RentVine API sandbox (a local stand-in)",
        description="Run a local stand-in for the RentVine API (leases, work orders, payments), which "
        "announces its changes to the intake as signed webhooks.",
        epilog=_SANDBOX_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8081, help="port (default 8081)")
    sandbox.set_defaults(run=_sandbox)

    send = commands.add_parser(
        "send",
        help="sign and post a sample webhook; print its trace id",
        description="Sign a webhook event (Standard Webhooks) and POST it to the intake; print the answer, "
        "the event id, the trace id and the trace's Jaeger URL.",
    )
    send.add_argument(
        "event",
        metavar="TYPE|FILE",
        help="a fixture (work_order_created, ...), an event type (work_order.created: its first fixture) "
        "or a JSON file",
    )
    send.add_argument("--url", help="the intake's webhook URL (default: INTAKE_URL, else localhost:8000)")
    send.add_argument("--secret", help="signing secret (default: the first of WEBHOOK_SECRET)")
    send.add_argument(
        "--keep-id", action="store_true", help="send the event id as is (default: add a fresh suffix)"
    )
    send.add_argument("--json", action="store_true", help="print the intake's JSON answer")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    send.set_defaults(run=_send)

    trace = commands.add_parser(
        "trace",
        help="print one trace as a tree, from Jaeger or a spans file",
        description="Fetch a trace from Jaeger's query API (GET /api/v3/traces/ID) or read it from a file, "
        "and print it as a tree: service, span, waterfall, duration, status, slow flag.",
    )
    trace.add_argument("trace_id", metavar="TRACE_ID", help="32 hex digits (base64 accepted too)")
    trace.add_argument(
        "--file",
        metavar="FILE",
        help="read OTLP-JSON lines (or a Jaeger v3 JSON answer) instead; - for stdin",
    )
    trace.add_argument("--jaeger", metavar="URL", help="Jaeger query URL (default: JAEGER_QUERY_URL)")
    trace.add_argument("--json", action="store_true", help="print the spans as a JSON list instead")
    trace.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for Jaeger (default 10)")
    trace.set_defaults(run=_trace)

    logs = commands.add_parser(
        "logs",
        help="print the JSON log lines of one trace",
        description="Print the JSON log lines (as the services write them) whose trace_id is TRACE_ID.",
    )
    logs.add_argument("--trace", required=True, metavar="TRACE_ID", help="the trace id (32 hex digits)")
    logs.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="log file, or - for stdin")
    logs.add_argument("--follow", "-f", action="store_true", help="keep reading FILE as it grows (Ctrl-C)")
    logs.add_argument("--raw", action="store_true", help="print the JSON lines as they are")
    logs.add_argument(
        "--interval", type=float, default=0.25, help="seconds between polls with --follow (default 0.25)"
    )
    logs.set_defaults(run=_logs)

    _add_tool_commands(commands)

    dlq = commands.add_parser("dlq", help="the dead-letter list: events that failed after the last retry")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    dlq_list = dlq_commands.add_parser("list", help="show the dead-lettered events")
    dlq_list.add_argument("--json", action="store_true", help="machine-readable output")
    dlq_list.set_defaults(run=_dlq_list)
    dlq_replay = dlq_commands.add_parser("replay", help="re-enqueue one, in a new trace linked to the old")
    dlq_replay.add_argument("id", help="the entry id (dlq_...) from `tracehook dlq list`")
    dlq_replay.set_defaults(run=_dlq_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tracehook`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        code: int = run(args)
    except SettingsError as exc:
        print(f"tracehook {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except CliError as exc:
        print(f"tracehook {args.command}: {exc}", file=sys.stderr)
        return exc.code
    return code


if __name__ == "__main__":
    sys.exit(main())

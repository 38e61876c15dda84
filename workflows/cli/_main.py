"""The ``tracehook`` command line: its parser and ``main``.

Exit codes, with one meaning each for every command: :data:`EXIT_CODES` (also in ``tracehook --help``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

from tracing.settings import SettingsError
from workflows.cli import _commands
from workflows.cli._errors import EXIT_CODES, EXIT_ERROR, CliError
from workflows.cli._logs import show_logs
from workflows.events import FIXTURES as FIXTURE_NAMES
from workflows.settings import DEFAULT_REDIS_URL

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse's own usage errors exit 2, which here means "could not be reached": they exit 1."""

    def error(self, message: str) -> NoReturn:
        """Print the usage and the error, and exit 1."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _version() -> str:
    try:
        return metadata.version("tracehook")
    except metadata.PackageNotFoundError:
        return "0.0.0"


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
  REDIS_URL                    dedupe keys and the broker (default {DEFAULT_REDIS_URL})
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


def _add_servers(commands: Any) -> None:
    for name, text, description, epilog, port, run in (
        (
            "intake",
            "run the webhook intake (uvicorn workflows.intake:app)",
            "Run the webhook intake: POST /webhooks/rentvine, /healthz, /readyz, /metrics.",
            _INTAKE_ENVIRONMENT,
            8000,
            _commands.intake,
        ),
        (
            "sandbox",
            "run the RentVine API sandbox (a local stand-in)",
            "Run a local stand-in for the RentVine API (leases, work orders, payments), which announces its "
            "changes to the intake as signed webhooks.",
            _SANDBOX_ENVIRONMENT,
            8081,
            _commands.sandbox,
        ),
    ):
        server = commands.add_parser(
            name,
            help=text,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        server.add_argument("--port", type=int, default=port, help=f"port (default {port})")
        server.set_defaults(run=run)


def _add_send(commands: Any) -> None:
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
    send.set_defaults(run=_commands.send)


def _add_trace_and_logs(commands: Any) -> None:
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
    trace.set_defaults(run=_commands.trace)

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
    logs.set_defaults(run=show_logs)


def _add_tools(commands: Any) -> None:
    secret = commands.add_parser(
        "secret",
        help="make a webhook signing secret (whsec_...)",
        description="Print a new Standard Webhooks signing secret, or with --file write one to FILE unless "
        "FILE already holds one (docker compose's webhook-secret service does this on first start).",
    )
    secret.add_argument(
        "--file", metavar="FILE", help="write it here (mode 0600) unless FILE has one already"
    )
    secret.set_defaults(run=_commands.secret)

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
        help="seconds to wait for the probe span in Jaeger (default 20: longer than the tail Jaeger's "
        "decision_wait)",
    )
    doctor.set_defaults(run=_commands.doctor)


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run sandbox, intake and worker locally, send the sample webhooks, print their traces",
        description="The main job without Docker: starts the RentVine sandbox, the intake and a prefork "
        "worker as local processes, with a Redis-protocol server of its own (in memory, in the demo's "
        "process), sends the sample webhooks, prints each trace as a tree with its log lines, and stops "
        "everything it started. Spans and logs stay in the demo's folder.",
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
    demo.set_defaults(run=_commands.demo)


def _add_dlq(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="the dead-letter list: events that failed after the last retry")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    dlq_list = dlq_commands.add_parser("list", help="show the dead-lettered events")
    dlq_list.add_argument("--json", action="store_true", help="machine-readable output")
    dlq_list.set_defaults(run=_commands.dlq_list)
    dlq_replay = dlq_commands.add_parser("replay", help="re-enqueue one, in a new trace linked to the old")
    dlq_replay.add_argument("id", help="the entry id (dlq_...) from `tracehook dlq list`")
    dlq_replay.set_defaults(run=_commands.dlq_replay)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tracehook``."""
    parser = _Parser(
        prog="tracehook",
        description="End-to-end tracing for webhook-triggered Celery workflows.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"tracehook {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # In the order `tracehook --help` lists them.
    for add in (_add_servers, _add_send, _add_trace_and_logs, _add_tools, _add_demo, _add_dlq):
        add(commands)
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

"""The ``tracehook`` command line: run the intake and the sandbox, inspect the dead-letter list, ..."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from tracing.settings import SettingsError


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

    settings = load_app_settings(service_name="tracehook-cli")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        msg = (
            f"cannot reach Redis at {settings.redis_url} ({type(exc).__name__}); start it, or point "
            "REDIS_URL at the one the workers use"
        )
        raise SystemExit(f"tracehook dlq: {msg}") from None
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
        return 1
    flush_tracing()
    print(f"replayed {args.id}: task {task_id}, new trace {trace_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tracehook``."""
    parser = argparse.ArgumentParser(
        prog="tracehook", description="End-to-end tracing for webhook-triggered Celery workflows."
    )
    parser.add_argument("--version", action="version", version=f"tracehook {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    intake = commands.add_parser("intake", help="run the webhook intake (uvicorn workflows.intake:app)")
    intake.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    intake.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    intake.set_defaults(run=_intake)

    sandbox = commands.add_parser("sandbox", help="run the RentVine API sandbox (a local stand-in)")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8081, help="port (default 8081)")
    sandbox.set_defaults(run=_sandbox)

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
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``tracehook logs``: the JSON log lines of one trace, rendered for people (the demo prints them too)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TextIO

from workflows.cli._errors import EXIT_ERROR, CliError

__all__ = ["format_log", "show_logs"]

_LOG_OWN_KEYS: Final = frozenset({"timestamp", "level", "service", "event", "trace_id", "logger"})


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


def show_logs(args: argparse.Namespace) -> int:
    """``tracehook logs --trace TRACE_ID [FILE|-] [--follow] [--raw]``."""
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

"""The ``tracehook`` command line (the console script is :func:`main`; ``python -m workflows.cli`` too).

Its commands run the intake and the sandbox, send a signed webhook, show a trace as a tree and the log
lines of one trace, check a set-up (``doctor``), run the whole job locally (``demo``), and inspect the
dead-letter list. Every module here is the command line's own; the package offers only what is below.
"""

from __future__ import annotations

from workflows.cli._errors import EXIT_CODES, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_UNREACHABLE, CliError
from workflows.cli._logs import format_log
from workflows.cli._main import build_parser, main

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_UNREACHABLE",
    "CliError",
    "build_parser",
    "format_log",
    "main",
]

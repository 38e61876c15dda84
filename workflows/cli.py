"""The ``tracehook`` command line; commands are added as the stack grows (intake, sandbox, send, ...)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import metadata


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tracehook``."""
    parser = argparse.ArgumentParser(prog="tracehook", description=__doc__)
    try:
        version = metadata.version("tracehook")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    parser.add_argument("--version", action="version", version=f"tracehook {version}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tracehook`` console script; returns the exit code."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0

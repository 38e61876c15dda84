"""The command line's exit codes, one meaning each for every command, and the error that carries one."""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_CODES", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_UNREACHABLE", "CliError"]

EXIT_ERROR: Final = 1
EXIT_UNREACHABLE: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_CODES: Final = (
    "Exit codes: 0 done; 1 something to fix on your side (the command line, a setting, an input file, "
    "nothing found, a failed check, a webhook the intake refused); 2 something could not be reached (the "
    "intake, Jaeger, Redis, the broker); 130 interrupted."
)


class CliError(Exception):
    """A failure to report on stderr as ``tracehook COMMAND: message``, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code

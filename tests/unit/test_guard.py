"""capture_internal_errors: instrumentation's own failures are logged and swallowed, never raised."""

from __future__ import annotations

import logging

import pytest

from tracing._guard import capture_internal_errors

_log = logging.getLogger("tests.guard")


class TestCaptureInternalErrors:
    """An Exception inside the block is logged at the level given, with its traceback, and goes no further."""

    def test_exception_logged_and_swallowed(self, caplog: pytest.LogCaptureFixture) -> None:
        """The code after the block runs; the line names what failed and carries the traceback."""
        ran_after = False
        with caplog.at_level(logging.DEBUG, logger="tests.guard"):
            with capture_internal_errors(_log, "tracehook: could not trace task %s", "t-1"):
                raise ValueError("boom")
            ran_after = True
        assert ran_after
        (record,) = caplog.records
        assert ("tracehook: could not trace task t-1", logging.WARNING) == (
            record.getMessage(),
            record.levelno,
        )
        assert record.exc_info is not None
        assert ValueError is record.exc_info[0]

    @pytest.mark.parametrize("level", [logging.DEBUG, logging.ERROR])
    def test_level_given(self, caplog: pytest.LogCaptureFixture, level: int) -> None:
        """``level=`` sets the level of the line (debug for best-effort extras, error for a set-up)."""
        with (
            caplog.at_level(logging.DEBUG, logger="tests.guard"),
            capture_internal_errors(_log, "tracehook: could not annotate", level=level),
        ):
            raise RuntimeError("x")
        assert [level] == [record.levelno for record in caplog.records]

    def test_nothing_logged_without_error(self, caplog: pytest.LogCaptureFixture) -> None:
        """A block that raises nothing logs nothing and keeps its result."""
        with (
            caplog.at_level(logging.DEBUG, logger="tests.guard"),
            capture_internal_errors(_log, "tracehook: could not %s", "x"),
        ):
            result = 1 + 1
        assert (2, []) == (result, caplog.records)

    def test_base_exceptions_pass(self) -> None:
        """KeyboardInterrupt and SystemExit are not the guard's to swallow."""
        with pytest.raises(KeyboardInterrupt), capture_internal_errors(_log, "tracehook: could not"):
            raise KeyboardInterrupt

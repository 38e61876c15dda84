"""Test your own workflows' traces across processes: a receiver, real prefork workers, tree assertions.

The pytest plugin (:mod:`tracing.testing.plugin`) gives these as fixtures; everything here also works
without it. See docs/testing.md. Names are imported on first use, so loading the plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracing._trace_tree import SpanRow
    from tracing.testing._producer import export_to
    from tracing.testing._receiver import OtlpReceiver, ReceivedSpan
    from tracing.testing._worker import Worker, start_worker
    from tracing.testing.assertions import (
        assert_no_card_numbers,
        assert_one_root,
        assert_one_trace,
        assert_trace,
        trace_id_of,
        wait_for_trace,
    )
    from tracing.testing.tree import ExpectedSpan, format_trace, match_tree, span

__all__ = [
    "ExpectedSpan",
    "OtlpReceiver",
    "ReceivedSpan",
    "SpanRow",
    "Worker",
    "assert_no_card_numbers",
    "assert_one_root",
    "assert_one_trace",
    "assert_trace",
    "export_to",
    "format_trace",
    "match_tree",
    "span",
    "start_worker",
    "trace_id_of",
    "wait_for_trace",
]

_HOMES = {
    "SpanRow": "tracing._trace_tree",
    "export_to": "tracing.testing._producer",
    "OtlpReceiver": "tracing.testing._receiver",
    "ReceivedSpan": "tracing.testing._receiver",
    "Worker": "tracing.testing._worker",
    "start_worker": "tracing.testing._worker",
    "assert_no_card_numbers": "tracing.testing.assertions",
    "assert_one_root": "tracing.testing.assertions",
    "assert_one_trace": "tracing.testing.assertions",
    "assert_trace": "tracing.testing.assertions",
    "trace_id_of": "tracing.testing.assertions",
    "wait_for_trace": "tracing.testing.assertions",
    "ExpectedSpan": "tracing.testing.tree",
    "format_trace": "tracing.testing.tree",
    "match_tree": "tracing.testing.tree",
    "span": "tracing.testing.tree",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names."""
    return sorted(__all__)

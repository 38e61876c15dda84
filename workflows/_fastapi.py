"""FastAPI helpers shared by the intake and the sandbox."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI

__all__ = ["telemetry_off"]


def telemetry_off() -> dict[str, Any]:
    """``FastAPI(**telemetry_off())`` turns off FastAPI's built-in tracing where the release has it.

    Recent FastAPI releases open their own server span once a tracer provider exists (docs/development.md,
    "Known facts"); we keep one instrumentation, so there is one server span, not two.
    """
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False, "metrics": False}}
    return {}

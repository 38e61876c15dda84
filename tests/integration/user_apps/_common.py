"""What every user app here shares: where the broker is, and a task that reports how the process is wired."""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace

# Workers get REDIS_URL from the test; the test process itself only has TEST_REDIS_URL.
REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def wiring(users_provider: Any = None) -> dict[str, Any]:
    """How this process is wired: which providers exist, whose handlers the root logger has."""
    from tracing.setup import current_provider  # noqa: PLC0415

    glob = trace.get_tracer_provider()
    return {
        "pid": os.getpid(),
        "global": type(glob).__name__,
        "global_is_users": users_provider is not None and glob is users_provider,
        "tracehook_provider": current_provider() is not None,
        "root_handlers": sorted(type(h).__name__ for h in logging.getLogger().handlers),
        "root_handler_names": sorted(str(h.get_name()) for h in logging.getLogger().handlers),
    }

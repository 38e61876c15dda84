"""Faults for tests, armed through ``POST /_sandbox/faults`` and answered before the route runs."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from workflows.sandbox._models import FaultSpec

__all__ = ["FaultInjector", "FaultMiddleware"]


@dataclass
class _Fault:
    spec: FaultSpec
    remaining: int


class FaultInjector:
    """Faults armed through ``/_sandbox/faults``, kept in memory; the first matching fault is used up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []

    def add(self, spec: FaultSpec) -> None:
        """Arm a fault after those already armed."""
        with self._lock:
            self._faults.append(_Fault(spec, spec.count))

    def clear(self) -> int:
        """Disarm every fault; returns how many were armed."""
        with self._lock:
            count, self._faults = len(self._faults), []
        return count

    def armed(self) -> list[dict[str, Any]]:
        """The armed faults with the requests each has left."""
        with self._lock:
            return [{**fault.spec.model_dump(), "remaining": fault.remaining} for fault in self._faults]

    def take(self, method: str, path: str) -> FaultSpec | None:
        """The fault this request gets, if any (counted as used)."""
        if path.startswith("/_sandbox") or path == "/healthz":
            return None
        with self._lock:
            for fault in self._faults:
                spec = fault.spec
                if path.startswith(spec.path_prefix) and (spec.method or method).upper() == method.upper():
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return spec
        return None


class FaultMiddleware:
    """Answers with the armed fault before the route runs (inside the server span, so it is traced)."""

    def __init__(self, app: ASGIApp, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = self.faults.take(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if spec is not None and spec.delay_s > 0:
            await asyncio.sleep(spec.delay_s)
        if spec is None or spec.status is None:
            held = spec.delay_after_s if spec is not None else 0.0
            await self.app(scope, receive, _held(send, held) if held > 0 else send)
            return
        headers = {"Retry-After": str(spec.retry_after_s)} if spec.retry_after_s is not None else None
        detail = f"fault injected through /_sandbox/faults: {spec.status}"
        response = JSONResponse({"error": "sandbox_fault", "detail": detail}, spec.status, headers)
        await response(scope, receive, send)


def _held(send: Send, delay_s: float) -> Send:
    """``send`` that waits ``delay_s`` before the response starts."""

    async def held_send(message: Any) -> None:
        if message.get("type") == "http.response.start":
            await asyncio.sleep(delay_s)
        await send(message)

    return held_send

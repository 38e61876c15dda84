"""Keep opentelemetry-instrumentation-celery off while ``instrument_celery`` traces Celery.

Both trace through Celery's global signals, so with both on every attempt gets two publish and two run
spans, and the stock package's ``traceparent``, written after ours, re-parents our run spans under its own
publish span. It gets switched on behind the user's back: ``opentelemetry-instrument celery -A app worker``
loads every installed instrumentation, and the stock docs' ``CeleryInstrumentor().instrument()`` in a
``worker_process_init`` handler outlives a migration. So while a tracehook instrumentation is active, the
stock one is switched off if it is on, and its ``instrument()`` is refused, each time with a warning that
says why and how to silence it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final

from tracing._guard import capture_internal_errors

__all__ = ["STOCK_MODULE", "guard_stock_instrumentation"]

STOCK_MODULE: Final = "opentelemetry.instrumentation.celery"
_GUARDED: Final = "_tracehook_guarded"
_HOW_TO_SILENCE: Final = (
    "remove that call, or set OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=celery for opentelemetry-instrument"
)

_log = logging.getLogger("tracing.celery")


def _refuse_while(active: Callable[[], bool], original: Callable[..., Any]) -> Callable[..., Any]:
    def _instrument(self: Any, **kwargs: Any) -> Any:
        if active():
            _log.warning(
                "tracehook: CeleryInstrumentor().instrument() ignored: instrument_celery() already traces "
                "Celery, and both at once would give two publish and two run spans per task; %s",
                _HOW_TO_SILENCE,
            )
            return None
        return original(self, **kwargs)

    _instrument.__wrapped__ = original  # type: ignore[attr-defined]
    return _instrument


def _guard(module: ModuleType, active: Callable[[], bool]) -> None:
    instrumentor = getattr(module, "CeleryInstrumentor", None)
    if instrumentor is None or getattr(instrumentor, _GUARDED, False):
        return
    with capture_internal_errors(
        _log, "tracehook: could not switch off opentelemetry-instrumentation-celery"
    ):
        instance = instrumentor()  # BaseInstrumentor is a singleton: this is the one already in use
        if instance.is_instrumented_by_opentelemetry:
            instance.uninstrument()
            _log.warning(
                "tracehook: switched off opentelemetry-instrumentation-celery (started by "
                "opentelemetry-instrument or CeleryInstrumentor().instrument()): instrument_celery() "
                "traces Celery, and both at once would give two publish and two run spans per task; %s",
                _HOW_TO_SILENCE,
            )
        instrumentor._instrument = _refuse_while(active, instrumentor._instrument)
        setattr(instrumentor, _GUARDED, True)


class _GuardOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Guards the stock module when it is first imported (importing it ourselves costs ~90 ms)."""

    def __init__(self, active: Callable[[], bool]) -> None:
        self._active = active
        self._loader: importlib.abc.Loader | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != STOCK_MODULE:
            return None
        sys.meta_path.remove(self)  # one module, once; and find_spec below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        assert self._loader is not None  # noqa: S101  # set by find_spec
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        assert self._loader is not None  # noqa: S101
        self._loader.exec_module(module)
        _guard(module, self._active)


def guard_stock_instrumentation(active: Callable[[], bool]) -> None:
    """Switch the stock Celery instrumentation off now, and refuse it later while ``active()`` is true.

    Args:
        active: whether a tracehook Celery instrumentation is active in this process.
    """
    module = sys.modules.get(STOCK_MODULE)
    if module is not None:
        _guard(module, active)
        return
    if not any(isinstance(finder, _GuardOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _GuardOnImport(active))

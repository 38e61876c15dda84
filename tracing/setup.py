"""Process-wide set-up: the tracer provider, its sampler, span limits, processors and exporter."""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import Sampler

from tracing._guard import capture_internal_errors
from tracing.exporters import OtlpJsonFileExporter
from tracing.processors import (
    CountingBatchSpanProcessor,
    ExportHealth,
    ScrubbingSpanExporter,
    TracehookSpanProcessor,
)
from tracing.protection import protect_provider
from tracing.sampling import build_sampler
from tracing.settings import TracingSettings, load_settings

__all__ = [
    "TracingState",
    "build_exporter",
    "configure_tracing",
    "current_provider",
    "current_settings",
    "flush_provider",
    "flush_tracing",
    "reset_tracing",
    "shutdown_tracing",
]

_log = logging.getLogger("tracing")
_lock = threading.RLock()
_POLL_S = 0.05


@dataclass(slots=True)
class TracingState:
    """What :func:`configure_tracing` set up in this process."""

    settings: TracingSettings
    provider: TracerProvider
    processor: TracehookSpanProcessor
    health: ExportHealth
    is_global: bool


_state: TracingState | None = None


def build_exporter(settings: TracingSettings) -> SpanExporter | None:
    """The exporter ``TRACE_EXPORTER`` asks for; None for ``none``."""
    if settings.exporter == "none":
        return None
    if settings.exporter == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if settings.exporter == "file":
        assert settings.exporter_path is not None  # noqa: S101  # guaranteed by TracingSettings
        return OtlpJsonFileExporter(settings.exporter_path)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    from tracing._otlp_export import TracehookOTLPSpanExporter  # noqa: PLC0415

    exporter_class = TracehookOTLPSpanExporter if settings.otlp_encoder == "tracehook" else OTLPSpanExporter
    return exporter_class(
        endpoint=settings.otlp_endpoint,
        headers=dict(settings.otlp_headers) or None,
        timeout=settings.otlp_timeout_s,
    )


def _resource(settings: TracingSettings) -> Resource:
    # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES, as the SDK defines it; ours win.
    return Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment.name": settings.environment,
            "deployment.environment": settings.environment,
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
            "process.runtime.name": sys.implementation.name,
            "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
        }
    )


def _delegate_factory(
    settings: TracingSettings, exporter: SpanExporter | None, health: ExportHealth, *, batch: bool
) -> Callable[[], SpanProcessor]:
    def build() -> SpanProcessor:
        inner = exporter if exporter is not None else build_exporter(settings)
        if inner is None:
            return SpanProcessor()  # the no-op base: spans are recorded (for logs) but not exported
        chosen = ScrubbingSpanExporter(
            inner, slow_threshold_ms=settings.slow_threshold_ms, owns_inner=exporter is None, health=health
        )
        if not batch:
            return SimpleSpanProcessor(chosen)
        return CountingBatchSpanProcessor(
            chosen,
            max_queue_size=settings.max_queue_size,
            max_export_batch_size=min(settings.export_batch_size, settings.max_queue_size),
        )

    return build


def configure_tracing(
    settings: TracingSettings | None = None,
    *,
    exporter: SpanExporter | None = None,
    sampler: Sampler | None = None,
    batch: bool = True,
    set_global: bool = True,
) -> TracerProvider:
    """Set up tracing for this process; calling it again returns the provider already set up.

    Args:
        settings: what to set up; read from the environment (:func:`load_settings`) when omitted.
        exporter: an exporter to use instead of the one ``settings.exporter`` names (tests inject an
            in-memory exporter here).
        sampler: a sampler to use instead of the rule-based one built from the settings.
        batch: export off the calling thread through a bounded queue (the default); ``False`` exports
            synchronously, which only tests want.
        set_global: install the provider as OpenTelemetry's global one; a later call with ``True``
            installs a provider set up earlier without it.

    Returns:
        The process's tracer provider.

    Raises:
        SettingsError: the environment holds a bad value (only when ``settings`` is omitted).
    """
    global _state  # noqa: PLW0603  # one provider per process is the point of this module
    with _lock:
        if _state is not None:
            if set_global and not _state.is_global:
                _install_global(_state.provider)
                _state.is_global = True
            return _state.provider
        settings = settings if settings is not None else load_settings()
        chosen_sampler = sampler or build_sampler(
            settings.sampling_rate,
            settings.emergency_sampling_rate,
            settings.health_sampling_rate,
            emergency_names=settings.emergency_names,
        )
        provider = TracerProvider(
            resource=_resource(settings),
            sampler=chosen_sampler,
            span_limits=SpanLimits(max_attribute_length=settings.max_attribute_length),
            shutdown_on_exit=False,
        )
        health = ExportHealth()
        processor = TracehookSpanProcessor(_delegate_factory(settings, exporter, health, batch=batch))
        provider.add_span_processor(processor)
        protect_provider(provider)
        if set_global:
            _install_global(provider)
        _state = TracingState(
            settings=settings, provider=provider, processor=processor, health=health, is_global=set_global
        )
        return provider


def _install_global(provider: TracerProvider) -> None:
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        _log.warning(
            "tracing: another global tracer provider was set before configure_tracing(); "
            "spans from instrumentations using the global provider will not go through tracehook"
        )


def current_settings() -> TracingSettings | None:
    """The settings tracing was configured with in this process, if it was."""
    return _state.settings if _state is not None else None


def current_provider() -> TracerProvider | None:
    """The provider :func:`configure_tracing` set up in this process, if it did."""
    return _state.provider if _state is not None else None


def _bounded(action: Callable[[], object], timeout_s: float, health: ExportHealth | None) -> bool:
    """Run ``action`` on a daemon thread; wait up to ``timeout_s``, or about a second once the exporter
    is failing or stuck. Returns whether it finished.

    The SDK's force_flush ignores its timeout and its shutdown joins the export thread for 30 s, while a
    down or black-holed endpoint holds each export for the exporter's retries and timeout (measured: an
    intake 12 s, a worker 5 s, a producer 5 s longer to stop than with a healthy endpoint).
    """
    done = threading.Event()

    def _run() -> None:
        try:
            with capture_internal_errors(_log, "tracing: flush failed"):
                action()
        finally:
            done.set()

    threading.Thread(target=_run, name="tracehook-flush", daemon=True).start()
    started = time.monotonic()
    while not done.wait(_POLL_S):
        waited = time.monotonic() - started
        stuck = health is not None and waited >= health.stuck_after_s and not health.ok
        if waited >= timeout_s or stuck:
            _log.warning("tracing: gave up exporting after %.1f s: the endpoint is not answering", waited)
            return False
    return True


def flush_tracing(timeout_s: float = 5.0) -> bool:
    """Export every span ended so far; returns False when the exporter did not finish in time.

    Waits up to ``timeout_s`` while the endpoint answers, and about a second once it is failing or stuck.
    """
    state = _state
    if state is None:
        return True
    result: list[bool] = []
    finished = _bounded(
        lambda: result.append(state.provider.force_flush(int(timeout_s * 1000))), timeout_s, state.health
    )
    return finished and all(result)


def flush_provider(provider: object, timeout_s: float = 5.0) -> bool:
    """Export what any provider holds (one of the user's too), waiting at most ``timeout_s``.

    Returns False when it did not finish in time; a provider without ``force_flush`` counts as flushed.
    """
    state = _state
    if state is not None and provider is state.provider:
        return flush_tracing(timeout_s)
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is None:
        return True
    result: list[bool] = []
    finished = _bounded(lambda: result.append(bool(force_flush(int(timeout_s * 1000)))), timeout_s, None)
    return finished and all(result)


def shutdown_tracing(timeout_s: float = 5.0) -> None:
    """Flush and stop exporting, within ``timeout_s`` (about a second once the endpoint is failing or
    stuck); safe to call more than once.

    Prefork pool children leave with ``os._exit``, so nothing registered with :mod:`atexit` runs there:
    call this from the pool's child-shutdown hook (``instrument_celery`` does).
    """
    global _state  # noqa: PLW0603
    with _lock:
        state = _state
        if state is None:
            return
        _state = None
    delegate = state.processor.delegate
    if isinstance(delegate, CountingBatchSpanProcessor):
        # Now, not after the flush: with the endpoint stuck the flush is abandoned, and the drops it
        # caused would never be told.
        delegate.report_drops()

    def _run() -> None:
        state.provider.force_flush(int(timeout_s * 1000))
        state.provider.shutdown()

    _bounded(_run, timeout_s, state.health)


def reset_tracing() -> None:
    """Forget the provider without waiting for its exports (tests use this between cases).

    Its shutdown runs on a daemon thread given a fraction of a second: an exporter retrying an endpoint
    nobody listens on (tracehook's own provider, set up from the environment by a publish) would
    otherwise hold every test's teardown for its backoff, seconds each.
    """
    global _state
    with _lock:
        state, _state = _state, None
    if state is not None:
        _bounded(state.provider.shutdown, 0.2, state.health)
    trace._TRACER_PROVIDER_SET_ONCE = trace.Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None


@atexit.register
def _flush_at_exit() -> None:
    shutdown_tracing()


class _ChildFlushAnchor:
    """Weak-referenceable anchor for multiprocessing's after-fork registry."""


_anchor = _ChildFlushAnchor()


def _arm_child_flush(_: object) -> None:
    # multiprocessing children leave through os._exit after running their finalizers, never atexit.
    multiprocessing.util.Finalize(_anchor, shutdown_tracing, exitpriority=100)


multiprocessing.util.register_after_fork(_anchor, _arm_child_flush)

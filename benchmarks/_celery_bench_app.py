"""The Celery app of ``benchmarks/celery_overhead.py``: a user's own app, traced as ``BENCH_VARIANT`` says.

A fresh ``Celery(...)`` with Celery's defaults (not tracehook's ``workers.config``) and one task that
increments a Redis counter, as a user would write it. Started by the benchmark as
``celery -A benchmarks._celery_bench_app worker ...`` and imported by its producer processes. Variables
(the benchmark sets them):

* ``BENCH_VARIANT``: ``plain`` (no tracing), ``stock`` (opentelemetry-instrumentation-celery with an SDK
  provider exporting in batches over OTLP/HTTP, set up per pool child in ``worker_process_init`` and
  flushed in ``worker_process_shutdown``, as its docs say) or ``tracehook``
  (``tracing.instrument_celery(app)`` and nothing else: tracehook sets tracing up per process from the
  environment, ``TRACE_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``SERVICE_NAME``, in the producer too);
* ``BENCH_BROKER_URL``: the Redis broker (default ``redis://127.0.0.1:6379/9``);
* ``CELERY_DEFAULT_QUEUE``: the queue;
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``BENCH_SERVICE``: where the stock variant exports, under which name;
* ``BENCH_PROFILE_DIR``: when set, the worker's main process and each pool child run under cProfile
  and dump ``<variant>-main|child-<pid>-<time>.prof`` there when they shut down (diagnosis only: it
  slows everything down; only the main thread is profiled).
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import redis
from celery import Celery, signals

VARIANTS: Final = ("plain", "stock", "tracehook")
VARIANT: Final = os.environ.get("BENCH_VARIANT", "plain").strip() or "plain"
BROKER_URL: Final = os.environ.get("BENCH_BROKER_URL", "").strip() or "redis://127.0.0.1:6379/9"

if VARIANT not in VARIANTS:
    raise RuntimeError(f"BENCH_VARIANT={VARIANT!r} is not one of {', '.join(VARIANTS)}")

app = Celery("celery_bench", broker=BROKER_URL)
app.conf.task_default_queue = os.environ.get("CELERY_DEFAULT_QUEUE", "celery")

_client: redis.Redis | None = None
_client_pid = 0


def _redis() -> redis.Redis:
    global _client, _client_pid  # noqa: PLW0603  # one client per process, made after the fork
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(BROKER_URL)
        _client_pid = os.getpid()
    return _client


@app.task(name="bench.noop", ignore_result=True)
def noop(key: str) -> None:
    """Count one run; nothing else."""
    _redis().incr(key)


# -- tracing, per variant ---------------------------------------------------------------------------


def _stock_provider(service: str) -> Any:
    """An SDK provider exporting in batches over OTLP/HTTP, as the stock instrumentation's docs say."""
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=base + "/v1/traces")))
    trace.set_tracer_provider(provider)
    return provider


def _stock_instrument(service: str) -> Any:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415

    provider = _stock_provider(service)
    CeleryInstrumentor().instrument()
    return provider


_stock_child: Any = None

if VARIANT == "stock":

    @signals.worker_process_init.connect(weak=False)
    def _init_stock_child(**_: Any) -> None:
        global _stock_child  # noqa: PLW0603
        _stock_child = _stock_instrument(os.environ.get("BENCH_SERVICE", "bench-stock-worker"))

    @signals.worker_process_shutdown.connect(weak=False)
    def _flush_stock_child(**_: Any) -> None:
        if _stock_child is not None:
            _stock_child.force_flush(5000)

elif VARIANT == "tracehook":
    from tracing import instrument_celery

    instrument_celery(app)


_producer_provider: Any = None


def setup_producer() -> None:
    """Set up tracing in a producer process, the way the variant's own docs say (tracehook: nothing more)."""
    global _producer_provider  # noqa: PLW0603
    if VARIANT == "stock":
        _producer_provider = _stock_instrument(os.environ.get("BENCH_SERVICE", "bench-stock-producer"))


def flush_producer(timeout_s: float) -> None:
    """Export the producer's spans, waiting no longer than ``timeout_s`` (the endpoint may be down)."""
    import threading  # noqa: PLC0415

    if VARIANT == "tracehook":
        from tracing import shutdown_tracing  # noqa: PLC0415

        shutdown_tracing(timeout_s)
        return
    if VARIANT == "plain" or _producer_provider is None:
        return
    provider = _producer_provider
    worker = threading.Thread(
        target=lambda: (provider.force_flush(int(timeout_s * 1000)), provider.shutdown()), daemon=True
    )
    worker.start()
    worker.join(timeout_s)


# -- diagnosis: cProfile in each pool child ---------------------------------------------------------

_PROFILE_DIR: Final = os.environ.get("BENCH_PROFILE_DIR", "").strip()

if _PROFILE_DIR:
    import cProfile

    _profiler: cProfile.Profile | None = None

    @signals.worker_init.connect(weak=False)
    @signals.worker_process_init.connect(weak=False)
    def _start_profile(**_: Any) -> None:
        global _profiler  # noqa: PLW0603
        if _profiler is not None:  # the child inherited the main process's: start afresh
            _profiler.disable()
        _profiler = cProfile.Profile()
        _profiler.enable()

    @signals.worker_shutdown.connect(weak=False)
    @signals.worker_process_shutdown.connect(weak=False)
    def _dump_profile(**kwargs: Any) -> None:
        if _profiler is None:
            return
        _profiler.disable()
        role = "child" if "pid" in kwargs else "main"  # worker_process_shutdown sends the child's pid
        os.makedirs(_PROFILE_DIR, exist_ok=True)
        name = f"{VARIANT}-{role}-{os.getpid()}-{int(time.time())}.prof"
        _profiler.dump_stats(os.path.join(_PROFILE_DIR, name))

"""Celery tracing: one call, ``instrument_celery(app)``, next to the user's own Celery app.

It replaces the signal handlers of opentelemetry-instrumentation-celery to fix what that package leaves
open: publish spans that never end for ``send_task`` to an unregistered task (contrib issue 609), spans
lost when a prefork child exits (contrib issue 4916), no queue-wait measure (3458), no canvas ids, retries
only as an attribute. Publishing is traced by wrapping the app's ``amqp.send_task_message`` (so a span
always ends, even when the broker is down); running by the ``task_prerun``/``task_postrun`` signals.

Header keys we add to a task message: ``traceparent``, ``tracestate``, ``baggage`` (W3C) and
``tracehook_enqueued_at`` (unix seconds as a string). A user's own headers are never touched
(Celery issues 4875, 7523), and neither is the app's configuration: Celery builds its message sender
from the configuration the first time it publishes, so the wrapper lets Celery build it then.

Spans go to the ``tracer_provider`` given, else to the global one; when neither is an SDK provider at the
first span, tracehook sets up its own from the environment (see :meth:`CeleryInstrumentation._resolve`).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from tracing._celery_message import (
    ENQUEUED_AT_HEADER,
    TRACE_HEADERS,
    enqueued_now,
    headers_of,
    merge_baggage,
    messaging_system,
    queue_wait,
    request_headers,
    task_fields,
)
from tracing._guard import capture_internal_errors
from tracing._stock_celery import guard_stock_instrumentation
from tracing.celery_metrics import CeleryMetrics
from tracing.logs import configure_logging
from tracing.propagation import extract_context, inject_headers
from tracing.protection import protect_provider
from tracing.settings import TracingSettings, load_settings
from tracing.setup import (
    configure_tracing,
    current_provider,
    current_settings,
    flush_provider,
    shutdown_tracing,
)
from tracing.spans import TracerCache, record_error

__all__ = ["ENQUEUED_AT_HEADER", "TRACE_HEADERS", "CeleryInstrumentation", "instrument_celery"]

_INSTRUMENTED_FLAG: Final = "_tracehook_instrumentation"
_RECEIVED_LIMIT: Final = 4096
_SCOPE: Final = "tracehook.celery"
_TASK_LINE_LOGGERS: Final = ("celery.app.trace", "celery.worker.strategy")
_LOST_IN_CHILD: Final = frozenset({"TimeLimitExceeded", "WorkerLostError", "Terminated"})

_log = logging.getLogger("tracing.celery")
# Live instrumentations; while there is one, the stock Celery instrumentation stays off.
_active: list[CeleryInstrumentation] = []

LogContext = Callable[[Any, Sequence[Any], Mapping[str, Any]], Mapping[str, Any]]


@dataclass(slots=True)
class _Running:
    span: Span
    token: object
    log_tokens: Mapping[str, Any]
    started: float


class _RunningTasks:
    """The run spans open in this process, by task id: a stack per id, for a task that runs again
    inside itself (an eager call with the same id)."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, list[_Running]] = {}

    def push(self, task_id: str, running: _Running) -> None:
        """A run of ``task_id`` started."""
        self._by_id.setdefault(task_id, []).append(running)

    def current(self, task_id: str | None) -> _Running | None:
        """The innermost open run of ``task_id``."""
        stack = self._by_id.get(task_id) if task_id is not None else None
        return stack[-1] if stack else None

    def pop(self, task_id: str) -> _Running | None:
        """The innermost open run of ``task_id``, no longer open."""
        stack = self._by_id.get(task_id)
        if not stack:
            return None
        running = stack.pop()
        if not stack:
            del self._by_id[task_id]
        return running

    def drain(self) -> list[_Running]:
        """Every open run, none left open."""
        every = [running for stack in self._by_id.values() for running in stack]
        self._by_id.clear()
        return every

    def __len__(self) -> int:
        return sum(len(stack) for stack in self._by_id.values())


@dataclass
class CeleryInstrumentation:
    """What ``instrument_celery`` wired; ``uninstrument()`` undoes it."""

    app: Any
    tracer_provider: trace.TracerProvider | None
    log_baggage_keys: tuple[str, ...]
    log_context: LogContext | None
    flush_timeout_s: float
    settings: TracingSettings | None
    configure: bool
    setup_logging: bool = False
    task_log_lines: bool = False
    metrics: CeleryMetrics | None = None
    _running: _RunningTasks = field(default_factory=_RunningTasks, init=False, repr=False)
    _connected: list[tuple[Any, Callable[..., None]]] = field(default_factory=list, init=False, repr=False)
    _original_sender: Any = field(default=None, init=False, repr=False)
    _sender: Callable[..., Any] | None = field(default=None, init=False, repr=False)
    _sender_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _system: str | None = field(default=None, init=False, repr=False)
    _queue: str | None = field(default=None, init=False, repr=False)
    # Worker main process: the trace headers of messages received, so a task that never reports back
    # from its child (hard time limit, terminate) still gets a span in its own trace. Bounded.
    _received: OrderedDict[str, tuple[str, dict[str, Any]]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _tracers: TracerCache = field(default_factory=TracerCache, init=False, repr=False)
    _spans_to: Any = field(default=None, init=False, repr=False)
    _in_worker: bool = field(default=False, init=False, repr=False)
    _own_failed: bool = field(default=False, init=False, repr=False)

    def _tracer(self) -> Tracer:
        # Follow the global provider (it may be set up after instrument_celery) without the cost of
        # get_tracer on every span, and without a ProxyTracer that would pin the first provider forever.
        looked_up = self.tracer_provider or trace.get_tracer_provider()
        tracer = self._tracers.get(looked_up)
        return tracer if tracer is not None else self._resolve(looked_up)

    def _resolve(self, looked_up: trace.TracerProvider) -> Tracer:
        """The tracer of the provider spans go to: the one given, the global SDK one, or tracehook's.

        Only when no SDK provider is set (the API's proxy) does tracehook set up its own, from the
        environment: in a worker process with ``configure_worker`` it becomes the global provider, so
        the task's own spans join; anywhere else it stays private to these spans, so a provider the user
        sets later still wins (the next span looks again).
        """
        provider = looked_up
        if isinstance(looked_up, trace.ProxyTracerProvider):
            own = self._own_provider()
            if own is not None:
                provider = own
                if trace.get_tracer_provider() is own:
                    looked_up = own
        # Every exporter on it sees scrubbed spans, the user's included (docs/operations.md, "Security").
        protect_provider(provider)
        tracer = provider.get_tracer(_SCOPE)
        self._spans_to = provider
        return self._tracers.put(looked_up, tracer)

    def _own_provider(self) -> trace.TracerProvider | None:
        if self._own_failed:
            return None
        try:
            settings = self.settings or current_settings() or load_settings(service_name=self._service())
            return configure_tracing(settings, set_global=self._in_worker and self.configure)
        except Exception as exc:
            self._own_failed = True
            _log.warning(
                "tracehook: no tracer provider is set up and tracehook could not set up its own (%s); "
                "Celery spans are not recorded in this process",
                exc,
            )
            return None

    def _service(self) -> str:
        """The default service name, when neither SERVICE_NAME nor OTEL_SERVICE_NAME is set."""
        main = str(getattr(self.app, "main", None) or "celery")
        return f"{main}-worker" if self._in_worker else main

    # -- publish ------------------------------------------------------------------------------------

    def wrap_sender(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``app.amqp.send_task_message`` so each publish is a PRODUCER span that always ends."""

        def send_task_message(producer: Any, name: str, message: Any, *args: Any, **kwargs: Any) -> Any:
            span: Span | None = None
            with capture_internal_errors(_log, "tracehook: could not trace the publish of %s", name):
                extra = kwargs.get("headers")
                if isinstance(extra, Mapping) and extra:
                    # apply_async(headers=...) arrives here and is merged over the message's headers by
                    # Celery after us: fold it in first, so a user baggage is merged rather than winning.
                    kwargs = {**kwargs, "headers": None}
                    headers_of(message).update(extra)
                span = self._start_publish(name, message, kwargs)
            if span is None:
                return original(producer, name, message, *args, **kwargs)
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                result = original(producer, name, message, *args, **kwargs)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    record_error(span, exc)
                raise
            finally:
                otel_context.detach(token)
                span.end()
            return result

        send_task_message.__wrapped__ = original  # type: ignore[attr-defined]
        return send_task_message

    def install_sender(self) -> None:
        """Put the traced sender in place of ``app.amqp.send_task_message``, reading no setting.

        Celery builds its sender (``AMQP._create_task_sender``) from the configuration the first time it
        is asked for, and fixes ``task_compression``, ``task_default_delivery_mode``, the publish retry
        settings and the queues in it. Asking for it here would freeze the configuration as it is now,
        before the user's ``conf.update()`` or ``config_from_object()``; instead the sender is built by
        Celery at the first publish, as it would be without tracehook.
        """
        amqp = self.app.amqp  # creating it reads no setting
        if "send_task_message" in vars(amqp):
            # Celery already built its sender (the app published before instrument_celery): wrap that.
            self._original_sender = amqp.send_task_message
            self._sender = self.wrap_sender(self._original_sender)
            amqp.send_task_message = self._sender
            return

        def send_task_message(producer: Any, name: str, message: Any, *args: Any, **kwargs: Any) -> Any:
            sender = self._sender or self._build_sender(amqp)
            return sender(producer, name, message, *args, **kwargs)

        amqp.send_task_message = send_task_message

    def _build_sender(self, amqp: Any) -> Callable[..., Any]:
        with self._sender_lock:
            if self._sender is None:
                built = inspect.getattr_static(type(amqp), "send_task_message", None)
                build = getattr(built, "func", None)
                original = build(amqp) if build is not None else amqp._create_task_sender()
                self._original_sender = original
                self._sender = self.wrap_sender(original)
                amqp.send_task_message = self._sender
            return self._sender

    def _start_publish(self, name: str, message: Any, kwargs: Mapping[str, Any]) -> Span:
        headers = headers_of(message)
        fields = task_fields(message, headers)
        task_id = str(fields.get("id") or "")
        queue = kwargs.get("queue")
        destination = getattr(queue, "name", queue) or kwargs.get("routing_key") or self._default_queue()
        attributes: dict[str, Any] = {
            "messaging.system": self._messaging_system(),
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": str(destination),
            "messaging.message.id": task_id,
            "celery.task_name": name,
            "celery.task_id": task_id,
            "celery.retries": int(fields.get("retries") or 0),
        }
        for key, attribute in (
            ("root_id", "celery.root_id"),
            ("parent_id", "celery.parent_id"),
            ("group", "celery.group_id"),
        ):
            if fields.get(key):
                attributes[attribute] = str(fields[key])
        eta = fields.get("eta")
        if eta:
            attributes["celery.eta"] = str(eta)
        origin = headers.get("origin")
        if origin:
            attributes["messaging.client.id"] = str(origin)
        span = self._tracer().start_span(f"publish {name}", kind=SpanKind.PRODUCER, attributes=attributes)
        self._inject(headers, trace.set_span_in_context(span))
        return span

    @staticmethod
    def _inject(headers: MutableMapping[str, Any], ctx: otel_context.Context) -> None:
        carrier: dict[str, str] = {}
        inject_headers(carrier, ctx)
        existing = headers.get("baggage")
        if existing and carrier.get("baggage"):
            carrier["baggage"] = merge_baggage(str(existing), carrier["baggage"])
        elif existing:
            carrier.pop("baggage", None)
        headers.update(carrier)
        headers[ENQUEUED_AT_HEADER] = enqueued_now()

    def _messaging_system(self) -> str:
        # Reading app.conf costs microseconds per access; the broker does not change under a process.
        if self._system is None:
            try:
                broker_url = str(self.app.conf.broker_url or "")
            except Exception:
                broker_url = ""
            self._system = messaging_system(broker_url)
        return self._system

    def _default_queue(self) -> str:
        if self._queue is None:
            try:
                self._queue = str(self.app.conf.task_default_queue or "celery")
            except Exception:
                self._queue = "celery"
        return self._queue

    # -- run ----------------------------------------------------------------------------------------

    def on_prerun(
        self, task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
    ) -> None:
        """task_prerun: start the CONSUMER span as a child of the publish span, bind the log context."""
        if task is None or task_id is None or not self._ours(task):
            return
        with capture_internal_errors(_log, "tracehook: could not start the span of task %s", task_id):
            self._start_run(task_id, task, args or (), kwargs or {})

    def _start_run(self, task_id: str, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        request = task.request
        carrier = request_headers(request)
        parent = extract_context(carrier) if carrier else None
        if parent is not None and not trace.get_current_span(parent).get_span_context().is_valid:
            parent = None if not baggage.get_all(parent) else parent
        now = time.time()
        attributes = self._run_attributes(task_id, task, request, carrier, now)
        span = self._tracer().start_span(
            f"run {task.name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        log_fields: dict[str, Any] = {"task_id": task_id, "task_name": task.name}
        ctx_baggage = baggage.get_all(parent) if parent is not None else {}
        for key in self.log_baggage_keys:
            if key in ctx_baggage:
                log_fields[key] = str(ctx_baggage[key])
        for key in self.log_baggage_keys:
            if key in kwargs and isinstance(kwargs[key], str | int):
                log_fields.setdefault(key, kwargs[key])
        if self.log_context is not None:
            with capture_internal_errors(_log, "tracehook: log_context hook failed", level=logging.DEBUG):
                log_fields.update(self.log_context(task, args, kwargs))
        log_tokens = structlog.contextvars.bind_contextvars(**log_fields)
        self._running.push(task_id, _Running(span, token, log_tokens, time.perf_counter()))
        if self.metrics is not None:
            wait_ms = attributes.get("celery.queue_wait_ms")
            if wait_ms is not None:
                self.metrics.waited(attributes["messaging.destination.name"], wait_ms / 1000, span)

    def _run_attributes(
        self, task_id: str, task: Any, request: Any, carrier: Mapping[str, Any], now: float
    ) -> dict[str, Any]:
        delivery = getattr(request, "delivery_info", None) or {}
        attributes: dict[str, Any] = {
            "messaging.system": self._messaging_system(),
            "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.destination.name": str(delivery.get("routing_key") or self._default_queue()),
            "messaging.message.id": task_id,
            "celery.task_name": task.name,
            "celery.task_id": task_id,
            "celery.retries": int(getattr(request, "retries", 0) or 0),
            "celery.attempt": int(getattr(request, "retries", 0) or 0) + 1,
        }
        for key, attribute in (
            ("root_id", "celery.root_id"),
            ("parent_id", "celery.parent_id"),
            ("group", "celery.group_id"),
        ):
            value = getattr(request, key, None)
            if value:
                attributes[attribute] = str(value)
        hostname = getattr(request, "hostname", None)
        if hostname:
            attributes["messaging.client.id"] = str(hostname)
        if getattr(request, "is_eager", False):
            attributes["celery.eager"] = True
        eta = getattr(request, "eta", None)
        if eta:
            attributes["celery.eta"] = str(eta)
        attributes.update(queue_wait(carrier, eta, now))
        return attributes

    def on_retry(self, request: Any = None, reason: Any = None, **_: Any) -> None:
        """task_retry: this attempt ends as a retry, not an error; the next attempt gets its own span."""
        running = self._running.current(getattr(request, "id", None))
        if running is None:
            return
        span = running.span
        span.set_attribute("celery.retry.reason", str(reason)[:500])
        span.add_event("celery.retry", {"celery.retries": int(getattr(request, "retries", 0) or 0)})

    def on_failure(
        self,
        task_id: str | None = None,
        exception: BaseException | None = None,
        sender: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        """task_failure: record the exception (unless the task declares it in ``throws``)."""
        with capture_internal_errors(_log, "tracehook: could not record the failure of task %s", task_id):
            self._failure(task_id, exception, sender, einfo)

    def _failure(self, task_id: str | None, exception: BaseException | None, task: Any, einfo: Any) -> None:
        if task_id is None or exception is None or not self._ours(task):
            return
        running = self._running.current(task_id)
        if running is None:
            # The worker's main process reports failures of a child that could not: hard time limit,
            # child killed. Those get a span of their own, in the task's trace.
            if type(exception).__name__ in _LOST_IN_CHILD:
                self._orphan_span(task, task_id, exception)
            return
        expected = tuple(getattr(task, "throws", ()) or ())
        if expected and isinstance(exception, expected):
            running.span.set_attribute("celery.expected_error", type(exception).__qualname__)
            running.span.add_event("celery.expected_error", {"exception.message": str(exception)[:500]})
            return
        if isinstance(exception, Exception):
            record_error(running.span, exception)

    def on_postrun(
        self, task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
    ) -> None:
        """task_postrun: end the span with the task's state, clear the log context."""
        if task_id is None:
            return
        running = self._running.pop(task_id)
        if running is None:
            return
        try:
            with capture_internal_errors(
                _log, "tracehook: could not annotate task span", level=logging.DEBUG
            ):
                self._annotate_run(running, task_id, task, state)
        finally:
            structlog.contextvars.reset_contextvars(**running.log_tokens)
            with capture_internal_errors(_log, "tracehook: context detach failed", level=logging.DEBUG):
                otel_context.detach(running.token)  # type: ignore[arg-type]
            running.span.end()

    def _annotate_run(self, running: _Running, task_id: str, task: Any, state: str | None) -> None:
        span = running.span
        if state is None:
            # The task was interrupted (hard time limit, terminate): postrun runs, the task did not.
            span.set_attribute("celery.state", "INTERRUPTED")
            span.set_status(Status(StatusCode.ERROR, "task interrupted before it finished"))
        else:
            span.set_attribute("celery.state", str(state))
        duration_s = time.perf_counter() - running.started
        span.set_attribute("celery.duration_ms", round(duration_s * 1000, 3))
        if self.metrics is not None:
            self.metrics.ran(task_id, str(getattr(task, "name", "unknown")), state, duration_s, span)

    def _ours(self, task: Any) -> bool:
        # Celery's task signals are global: with several apps in one process, each instrumentation
        # handles only its own app's tasks.
        return getattr(task, "app", self.app) is self.app

    # -- tasks that never ran -----------------------------------------------------------------------

    def on_revoked(
        self,
        request: Any = None,
        terminated: bool = False,
        signum: Any = None,
        expired: bool = False,
        sender: Any = None,
        **_: Any,
    ) -> None:
        """task_revoked: a span for the revoked task, ended at once with the reason."""
        if sender is not None and not self._ours(sender):
            return
        with capture_internal_errors(_log, "tracehook: could not trace a revoked task", level=logging.DEBUG):
            reason = "expired" if expired else ("terminated" if terminated else "revoked")
            self._message_span(
                request,
                getattr(sender, "name", None),
                reason,
                {"celery.revoked.reason": reason, "celery.terminated.signal": str(signum or "")},
            )

    def on_rejected(self, message: Any = None, exc: Any = None, sender: Any = None, **_: Any) -> None:
        """task_rejected / task_unknown: a message the worker would not run, as an ERROR span."""
        if not self._ours(sender):
            return
        with capture_internal_errors(
            _log, "tracehook: could not trace a rejected message", level=logging.DEBUG
        ):
            headers = dict(getattr(message, "headers", None) or {})
            name = str(headers.get("task") or "unknown")
            parent = extract_context(headers)
            span = self._tracer().start_span(
                f"run {name}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "celery.task_name": name,
                    "celery.task_id": str(headers.get("id") or ""),
                    "celery.state": "REJECTED",
                    "messaging.system": self._messaging_system(),
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"rejected by the worker: {exc!s}"[:300]))
            span.end()

    def on_received(self, request: Any = None, sender: Any = None, **_: Any) -> None:
        """task_received (worker main process): remember the message's trace headers, bounded."""
        if not self._ours(sender):
            return
        with capture_internal_errors(_log, "tracehook: could not note a received task", level=logging.DEBUG):
            task_id = str(getattr(request, "id", "") or "")
            if not task_id:
                return
            headers = getattr(getattr(request, "_message", None), "headers", None) or {}
            carrier = {key: headers[key] for key in (*TRACE_HEADERS, ENQUEUED_AT_HEADER) if key in headers}
            self._received[task_id] = (str(getattr(request, "name", "unknown")), carrier)
            while len(self._received) > _RECEIVED_LIMIT:
                self._received.popitem(last=False)

    def _message_span(
        self, request: Any, task_name: str | None, status: str, attributes: Mapping[str, Any]
    ) -> None:
        if request is None:
            return
        name = str(task_name or getattr(request, "task", None) or getattr(request, "name", None) or "unknown")
        task_id = str(getattr(request, "id", "") or getattr(request, "task_id", ""))
        carrier = request_headers(request) or self._received.pop(task_id, ("", {}))[1]
        span = self._ended_span_start(name, task_id, carrier, status.upper(), attributes)
        span.set_status(Status(StatusCode.ERROR, f"task {status} before it finished"))
        span.end()

    def _orphan_span(self, task: Any, task_id: str, exception: BaseException) -> None:
        # Celery reports a hard time limit twice (pool and request); the first report takes the entry.
        received = self._received.pop(task_id, None)
        if received is None:
            return
        name, carrier = received
        span = self._ended_span_start(name, task_id, carrier, "FAILURE", {"celery.reported_by": "worker"})
        if isinstance(exception, Exception):
            record_error(span, exception)
        span.end()

    def _ended_span_start(
        self, name: str, task_id: str, carrier: Mapping[str, Any], state: str, attributes: Mapping[str, Any]
    ) -> Span:
        """Start the run span of a task that will not report back itself (the caller ends it)."""
        return self._tracer().start_span(
            f"run {name}",
            context=extract_context(carrier),
            kind=SpanKind.CONSUMER,
            attributes={
                "celery.task_name": name,
                "celery.task_id": task_id,
                "celery.state": state,
                **attributes,
            },
        )

    # -- processes ----------------------------------------------------------------------------------

    def on_process_init(self, **_: Any) -> None:
        """worker_init / worker_process_init: this is a worker process; take over logging if asked to.

        Tracing is set up at the first span (:meth:`_resolve`), after every ``worker_process_init``
        handler has run, so a provider the user sets in their own handler is found whatever the order.
        """
        self._in_worker = True
        if not self.setup_logging:
            return
        with capture_internal_errors(
            _log, "tracehook: could not set up logging in the worker process", level=logging.ERROR
        ):
            settings = self.settings or current_settings() or load_settings(service_name=self._service())
            configure_logging(settings)
            if not self.task_log_lines:
                # Celery logs two INFO lines per task ("received", "succeeded"); the run span already
                # records both. Celery decides once, when it builds its tracers, whether to format them
                # (celery/app/trace.py, worker/strategy.py), so this must run before: setup_logging does.
                for name in _TASK_LINE_LOGGERS:
                    logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))

    def on_process_shutdown(self, **_: Any) -> None:
        """worker_process_shutdown / worker_shutdown: export what is left, within the flush timeout.

        Flushes the provider these spans went to, the global one and tracehook's own, whichever of them
        exist, all within ``flush_timeout_s``: a pool child leaves with ``os._exit``, so nothing else
        would export what their batch processors still hold.
        """
        for running in self._running.drain():
            running.span.set_status(Status(StatusCode.ERROR, "worker process exited during the task"))
            running.span.end()
        deadline = time.monotonic() + self.flush_timeout_s
        own = current_provider()
        others: list[Any] = []
        for provider in (self._spans_to, trace.get_tracer_provider()):
            if provider is None or provider is own or isinstance(provider, trace.ProxyTracerProvider):
                continue
            if all(provider is not seen for seen in others):
                others.append(provider)
        for provider in others:
            flush_provider(provider, max(0.0, deadline - time.monotonic()))
        shutdown_tracing(max(0.0, deadline - time.monotonic()))

    def on_setup_logging(self, **_: Any) -> None:
        """setup_logging: our logging instead of Celery's (connecting this stops Celery's own set-up)."""
        self.on_process_init()

    # -- wiring -------------------------------------------------------------------------------------

    def connect(self, signal: Any, handler: Callable[..., None]) -> None:
        """Connect a handler strongly and remember it for ``uninstrument``."""
        signal.connect(handler, weak=False)
        self._connected.append((signal, handler))

    def uninstrument(self) -> None:
        """Disconnect every handler and restore the app's publisher."""
        for signal, handler in self._connected:
            signal.disconnect(handler)
        self._connected.clear()
        amqp = self.app.amqp
        if self._original_sender is not None:
            amqp.send_task_message = self._original_sender
        else:
            vars(amqp).pop("send_task_message", None)  # Celery builds it at the next publish, as before
        self._original_sender = self._sender = None
        if getattr(self.app, _INSTRUMENTED_FLAG, None) is self:
            delattr(self.app, _INSTRUMENTED_FLAG)
        if self in _active:
            _active.remove(self)

    @property
    def running_tasks(self) -> int:
        """How many task spans are open in this process (0 between tasks: nothing survives a task)."""
        return len(self._running)


def _connect_worker_metrics(inst: CeleryInstrumentation, task_metrics: CeleryMetrics, signals: Any) -> None:
    # The task metrics are recorded by the tracing handlers (one receiver per signal, the request read
    # once): CeleryInstrumentation calls task_metrics.waited and .ran.
    inst.connect(signals.worker_init, task_metrics.on_worker_init)
    inst.connect(signals.worker_process_init, task_metrics.on_process_init)
    inst.connect(signals.worker_shutdown, task_metrics.on_worker_shutdown)


def _brought_own_set_up(tracer_provider: trace.TracerProvider | None) -> bool:
    """Whether the user set up OpenTelemetry or logging themselves before calling instrument_celery."""
    if tracer_provider is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return True
    return any(handler.get_name() != "tracehook" for handler in logging.getLogger().handlers)


def instrument_celery(
    app: Any,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    settings: TracingSettings | None = None,
    configure_worker: bool = True,
    setup_logging: bool | None = None,
    log_baggage_keys: Sequence[str] = ("event_id", "event_type"),
    log_context: LogContext | None = None,
    flush_timeout_s: float = 5.0,
    task_log_lines: bool = False,
    metrics: bool = True,
) -> CeleryInstrumentation:
    """Trace a Celery app: publish and run spans, per-process flush, task log context.

    Put it next to your Celery app (``app = Celery(...); instrument_celery(app)``), before or after its
    configuration; calling it again for the same app returns the first instrumentation. It reads and
    changes none of the app's settings. While it is active, opentelemetry-instrumentation-celery is kept
    off (with a warning), so each publish and each run has one span.

    Args:
        app: the Celery app.
        tracer_provider: the provider for the spans. When omitted, the global one; and when no SDK
            provider is set at the first span, tracehook sets up its own from the environment (global in
            a worker process with ``configure_worker``, private to these spans anywhere else).
        settings: the settings tracehook's own provider and logging are set up with; the environment's
            when omitted.
        configure_worker: in worker processes, let tracehook's own provider (when it sets one up) be the
            global one, and take over logging as ``setup_logging`` says.
        setup_logging: take over logging in worker processes (tracehook's JSON lines, through Celery's
            ``setup_logging`` signal, which stops Celery's own set-up). By default only when
            ``configure_worker`` and you brought no set-up of your own: no ``tracer_provider``, no global
            SDK provider and no handler on the root logger when this is called.
        log_baggage_keys: baggage entries (and task keyword arguments) bound to every log line of a task.
        log_context: optional hook ``(task, args, kwargs) -> fields`` for more log fields of a task.
        flush_timeout_s: the most a process waits at exit for its spans to be exported.
        task_log_lines: keep Celery's own per-task INFO lines ("Task ... received", "... succeeded"),
            which the run span already records; off by default, as in a stock ``celery worker``.
        metrics: record task metrics and, with ``configure_worker``, serve the worker's ``/metrics``
            (``WORKER_METRICS_PORT``; ``METRICS_ENABLED=false`` turns it off); see ``tracing.celery_metrics``.

    Returns:
        The instrumentation; ``.uninstrument()`` undoes it.
    """
    existing = getattr(app, _INSTRUMENTED_FLAG, None)
    if isinstance(existing, CeleryInstrumentation):
        return existing
    from celery import signals  # noqa: PLC0415

    if setup_logging is None:
        setup_logging = configure_worker and not _brought_own_set_up(tracer_provider)
    inst = CeleryInstrumentation(
        app=app,
        tracer_provider=tracer_provider,
        log_baggage_keys=tuple(log_baggage_keys),
        log_context=log_context,
        flush_timeout_s=flush_timeout_s,
        settings=settings,
        configure=configure_worker,
        setup_logging=setup_logging,
        task_log_lines=task_log_lines,
    )
    _active.append(inst)
    guard_stock_instrumentation(lambda: bool(_active))
    inst.install_sender()
    inst.connect(signals.task_prerun, inst.on_prerun)
    inst.connect(signals.task_postrun, inst.on_postrun)
    inst.connect(signals.task_failure, inst.on_failure)
    inst.connect(signals.task_retry, inst.on_retry)
    inst.connect(signals.task_revoked, inst.on_revoked)
    inst.connect(signals.task_rejected, inst.on_rejected)
    inst.connect(signals.task_unknown, inst.on_rejected)
    inst.connect(signals.task_received, inst.on_received)
    task_metrics = inst.metrics = CeleryMetrics(ours=inst._ours, settings=settings) if metrics else None
    if task_metrics is not None and configure_worker:
        # Before the span flush, which may wait flush_timeout_s for an unreachable endpoint: a child's
        # last metrics snapshot must not wait behind it.
        inst.connect(signals.worker_process_shutdown, task_metrics.on_process_shutdown)
    inst.connect(signals.worker_process_shutdown, inst.on_process_shutdown)
    inst.connect(signals.worker_shutdown, inst.on_process_shutdown)
    inst.connect(signals.worker_init, inst.on_process_init)
    inst.connect(signals.worker_process_init, inst.on_process_init)
    if setup_logging:
        inst.connect(signals.setup_logging, inst.on_setup_logging)
    if task_metrics is not None and configure_worker:
        _connect_worker_metrics(inst, task_metrics, signals)
    setattr(app, _INSTRUMENTED_FLAG, inst)
    return inst

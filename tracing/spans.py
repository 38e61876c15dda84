"""Span helpers: the ``trace_span`` context manager, the ``traced`` decorator and ``record_error``."""

from __future__ import annotations

import contextlib
import cProfile
import functools
import inspect
import io
import pstats
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    format_span_id,
    format_trace_id,
)
from opentelemetry.util.types import AttributeValue

__all__ = [
    "INSTRUMENTATION_NAME",
    "flatten_attributes",
    "record_error",
    "span_ids",
    "trace_span",
    "traced",
]

INSTRUMENTATION_NAME: Final = "tracehook"
PROFILE_EVENT: Final = "profile"
PROFILE_MAX_CHARS: Final = 5000

P = ParamSpec("P")
R = TypeVar("R")


class TracerCache:
    """The tracer last looked up, and for which provider: ``provider.get_tracer()`` costs several
    microseconds in the SDK (it builds a scope and touches the warnings filters), so it is asked once per
    provider, and a provider set up later is still followed (internal)."""

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        self._entry: tuple[object, Tracer] | None = None

    def get(self, key: object) -> Tracer | None:
        """The tracer stored for ``key`` (a provider, compared by identity), else None."""
        entry = self._entry
        return entry[1] if entry is not None and entry[0] is key else None

    def put(self, key: object, tracer: Tracer) -> Tracer:
        """Remember ``tracer`` for ``key`` in place of the last one; returns it."""
        self._entry = (key, tracer)
        return tracer


_tracers = TracerCache()


def _tracer(tracer: Tracer | None) -> Tracer:
    if tracer is not None:
        return tracer
    provider = trace.get_tracer_provider()
    cached = _tracers.get(provider)
    return cached if cached is not None else _tracers.put(provider, provider.get_tracer(INSTRUMENTATION_NAME))


_PRIMITIVES: Final = frozenset({str, bool, int, float})


def flatten_attributes(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, AttributeValue]:
    """Flatten nested mappings into dotted keys and coerce values to what a span attribute can hold.

    ``{"error.context": {"operation_id": 7}}`` becomes ``{"error.context.operation_id": 7}``; sequences of
    primitives stay sequences; anything else becomes its ``str``. ``None`` values are left out.
    """
    flat: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if type(value) in _PRIMITIVES:  # the common case, before any ABC check (a log line's fields)
            flat[name] = value
            continue
        if value is None:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten_attributes(value, prefix=f"{name}."))
        elif isinstance(value, str | bool | int | float):
            flat[name] = value
        elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            items = list(value)
            if items and all(isinstance(item, str) for item in items):
                flat[name] = [str(item) for item in items]
            elif items and all(isinstance(item, bool | int | float) for item in items):
                flat[name] = [item for item in items if isinstance(item, bool | int | float)]
            else:
                flat[name] = str(items)
        else:
            flat[name] = str(value)
    return flat


def span_ids(context: SpanContext) -> dict[str, str]:
    """A span context's ids as log lines and stores carry them, ``{"trace_id": 32 hex, "span_id": 16 hex}``;
    ``{}`` when the context is not valid."""
    if not context.is_valid:
        return {}
    return {"trace_id": format_trace_id(context.trace_id), "span_id": format_span_id(context.span_id)}


def record_error(span: Span, exc: BaseException, attributes: Mapping[str, Any] | None = None) -> None:
    """Record an exception on a span: an ``exception`` event with its stack, ERROR status, ``error.type``.

    Args:
        span: the span to mark; a non-recording span is left alone.
        exc: the exception.
        attributes: extra context (nested mappings are flattened to dotted keys), set on the span and on
            the exception event.
    """
    if not span.is_recording():
        return
    flat = flatten_attributes(attributes) if attributes else {}
    error_type = type(exc).__qualname__
    span.record_exception(exc, attributes=flat or None, escaped=False)
    span.set_attributes({"error.type": error_type, **flat})
    message = str(exc)
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}" if message else error_type))


class trace_span:  # noqa: N801  # a context manager used like a function, as contextlib's are
    """Start a span, make it current for the ``with`` block, end it afterwards.

    An exception leaving the block is recorded (stack, ERROR status) and re-raised.

    Args:
        name: the span name, e.g. ``workflow.step.fetch_property``.
        kind: the span kind (INTERNAL unless the span is a server, client, producer or consumer).
        attributes: attributes known at start (the sampler sees these).
        links: links to other spans.
        context: the parent context; the current one when omitted.
        tracer: the tracer to use; tracehook's tracer from the global provider when omitted.
        record_exception: record exceptions that leave the block (default True).
        start_time: when the span started, in ns since the epoch (``time.time_ns()``), for work that began
            before the span could (a request read and checked before its root span); now when omitted.
    """

    __slots__ = (
        "_kind",
        "_record",
        "_span",
        "_start_time",
        "_token",
        "_tracer",
        "attributes",
        "context",
        "links",
        "name",
    )

    def __init__(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        links: Sequence[Link] | None = None,
        context: otel_context.Context | None = None,
        tracer: Tracer | None = None,
        record_exception: bool = True,
        start_time: int | None = None,
    ) -> None:
        self.name = name
        self._kind = kind
        self.attributes = attributes
        self.links = links
        self.context = context
        self._tracer = tracer
        self._record = record_exception
        self._start_time = start_time
        self._span: Span | None = None
        self._token: object = None

    def __enter__(self) -> Span:
        span = _tracer(self._tracer).start_span(
            self.name,
            context=self.context,
            kind=self._kind,
            attributes=self.attributes,
            links=self.links,
            start_time=self._start_time,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span, self.context))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        otel_context.detach(self._token)  # type: ignore[arg-type]  # the token attach() returned
        if exc is not None and self._record and isinstance(exc, Exception):
            record_error(span, exc)
        span.end()


def _profile_event(span: Span, profiler: cProfile.Profile) -> None:
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("cumulative")
    stats.print_stats(10)
    top = [f"{func[0]}:{func[1]}({func[2]})" for func in list(stats.fcn_list or [])[:10]]  # type: ignore[attr-defined]
    span.add_event(
        PROFILE_EVENT,
        {"profile.stats": stream.getvalue()[:PROFILE_MAX_CHARS], "profile.top_functions": top},
    )


@contextlib.contextmanager
def _profiling(span: Span, *, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    profiler = cProfile.Profile()
    try:
        profiler.enable()
    except ValueError:  # another profiler is active (a nested profiled call): run unprofiled
        yield
        return
    try:
        yield
    finally:
        profiler.disable()
        _profile_event(span, profiler)


@overload
def traced(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def traced(
    name: str | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    dynamic_attributes: Callable[..., Mapping[str, Any]] | None = None,
    profile: bool = False,
    tracer: Tracer | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced(
    name: str | Callable[..., Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    dynamic_attributes: Callable[..., Mapping[str, Any]] | None = None,
    profile: bool = False,
    tracer: Tracer | None = None,
) -> Any:
    """Decorate a sync or async function so each call runs in its own span.

    Usable bare (``@traced``) or with options (``@traced("lease.renew", attributes={...})``).

    Args:
        name: span name; the function's qualified name when omitted.
        kind: span kind.
        attributes: static attributes, known at decoration time.
        dynamic_attributes: called with the call's arguments; returns attributes for that call.
        profile: run the call under cProfile and attach its top 10 functions as a ``profile`` event.
        tracer: the tracer to use; tracehook's tracer when omitted.
    """
    if callable(name):
        return traced()(name)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        span_name = name or func.__qualname__

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> trace_span:
            attrs: dict[str, AttributeValue] = dict(attributes) if attributes else {}
            if dynamic_attributes is not None:
                attrs.update(flatten_attributes(dynamic_attributes(*args, **kwargs)))
            return trace_span(span_name, kind=kind, attributes=attrs or None, tracer=tracer)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with start(args, kwargs) as span, _profiling(span, enabled=profile):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with start(args, kwargs) as span, _profiling(span, enabled=profile):
                return func(*args, **kwargs)

        return wrapper

    return decorate

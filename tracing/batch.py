"""Traced batch operations: one span for the batch, one per chunk, an event per failed item.

Layout (docs/design.md, step 5)::

    batch.<name>                 batch.items_total, batch.size, batch.items_failed, batch.chunks
      batch.<name>.chunk         batch.chunk_index, batch.chunk_size, batch.chunk_failed
        exception event          per failed item, with batch.item_index

and ``tracehook_batch_items_total{operation=<name>, outcome=succeeded|failed}`` counts the items.

One bad item never stops the others; the caller gets every result and every error back.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar, overload

from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from tracing.metrics import BATCH_ITEMS, count
from tracing.spans import flatten_attributes, trace_span

__all__ = ["BatchItemError", "BatchResult", "trace_batch"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """One item that failed: its position in the input, the item, and the exception."""

    index: int
    item: Any
    error: Exception


class BatchResult(NamedTuple, Generic[R]):
    """What a batch returns; unpacks as ``results, errors`` (the guide's shape)."""

    results: list[R]
    errors: list[BatchItemError]


def _item_failed(span: Span, index: int, exc: Exception) -> None:
    span.record_exception(exc, attributes={"batch.item_index": index}, escaped=False)


def _chunks(total: int, size: int) -> list[range]:
    return [range(start, min(start + size, total)) for start in range(0, total, size)]


def _open(
    name: str,
    items: Sequence[Any],
    batch_size: int,
    attributes: Mapping[str, Any] | None,
    tracer: Tracer | None,
) -> trace_span:
    if batch_size < 1:
        msg = f"batch_size must be at least 1, got {batch_size}"
        raise ValueError(msg)
    attrs: dict[str, AttributeValue] = flatten_attributes(attributes) if attributes else {}
    attrs.update(
        {
            "batch.items_total": len(items),
            "batch.size": batch_size,
            "batch.chunks": len(_chunks(len(items), batch_size)),
        }
    )
    return trace_span(f"batch.{name}", attributes=attrs, tracer=tracer)


def _close(name: str, span: Span, failed: int, total: int) -> None:
    if total - failed:
        count(BATCH_ITEMS, total - failed, {"operation": name, "outcome": "succeeded"})
    if failed:
        count(BATCH_ITEMS, failed, {"operation": name, "outcome": "failed"})
    span.set_attribute("batch.items_failed", failed)
    span.set_attribute("batch.items_succeeded", total - failed)
    if failed:
        span.set_status(Status(StatusCode.ERROR, f"{failed} of {total} items failed"))


def _chunk_span(name: str, index: int, chunk: range, tracer: Tracer | None) -> trace_span:
    return trace_span(
        f"batch.{name}.chunk",
        attributes={
            "batch.chunk_index": index,
            "batch.chunk_size": len(chunk),
            "batch.chunk_start": chunk.start,
        },
        tracer=tracer,
    )


def _trace_batch_sync(
    name: str,
    items: Sequence[T],
    process: Callable[[T], R],
    batch_size: int,
    attributes: Mapping[str, Any] | None,
    tracer: Tracer | None,
) -> BatchResult[R]:
    results: list[R] = []
    errors: list[BatchItemError] = []
    with _open(name, items, batch_size, attributes, tracer) as batch_span:
        for chunk_index, chunk in enumerate(_chunks(len(items), batch_size)):
            with _chunk_span(name, chunk_index, chunk, tracer) as chunk_span:
                failed = 0
                for index in chunk:
                    try:
                        results.append(process(items[index]))
                    except Exception as exc:
                        failed += 1
                        errors.append(BatchItemError(index, items[index], exc))
                        _item_failed(chunk_span, index, exc)
                chunk_span.set_attribute("batch.chunk_failed", failed)
        _close(name, batch_span, len(errors), len(items))
    return BatchResult(results, errors)


async def _trace_batch_async(
    name: str,
    items: Sequence[T],
    process: Callable[[T], Awaitable[R]],
    batch_size: int,
    attributes: Mapping[str, Any] | None,
    tracer: Tracer | None,
    concurrency: int,
) -> BatchResult[R]:
    if concurrency < 1:
        msg = f"concurrency must be at least 1, got {concurrency}"
        raise ValueError(msg)
    gate = asyncio.Semaphore(concurrency)
    results: list[R] = []
    errors: list[BatchItemError] = []

    async def run(index: int) -> tuple[int, R | None, Exception | None]:
        async with gate:
            try:
                return index, await process(items[index]), None
            except Exception as exc:
                return index, None, exc

    with _open(name, items, batch_size, attributes, tracer) as batch_span:
        for chunk_index, chunk in enumerate(_chunks(len(items), batch_size)):
            with _chunk_span(name, chunk_index, chunk, tracer) as chunk_span:
                outcomes = await asyncio.gather(*(run(index) for index in chunk))
                failed = 0
                for index, value, exc in outcomes:  # gather keeps input order
                    if exc is None:
                        results.append(value)  # type: ignore[arg-type]  # no error means a value
                    else:
                        failed += 1
                        errors.append(BatchItemError(index, items[index], exc))
                        _item_failed(chunk_span, index, exc)
                chunk_span.set_attribute("batch.chunk_failed", failed)
        _close(name, batch_span, len(errors), len(items))
    return BatchResult(results, errors)


@overload
def trace_batch(  # type: ignore[overload-overlap]  # an async process is also a callable returning a value
    name: str,
    items: Sequence[T],
    process: Callable[[T], Awaitable[R]],
    batch_size: int = 10,
    attributes: Mapping[str, Any] | None = None,
    *,
    concurrency: int = 5,
    tracer: Tracer | None = None,
) -> Awaitable[BatchResult[R]]: ...


@overload
def trace_batch(
    name: str,
    items: Sequence[T],
    process: Callable[[T], R],
    batch_size: int = 10,
    attributes: Mapping[str, Any] | None = None,
    *,
    concurrency: int = 5,
    tracer: Tracer | None = None,
) -> BatchResult[R]: ...


def trace_batch(
    name: str,
    items: Sequence[Any],
    process: Callable[[Any], Any],
    batch_size: int = 10,
    attributes: Mapping[str, Any] | None = None,
    *,
    concurrency: int = 5,
    tracer: Tracer | None = None,
) -> Any:
    """Process ``items`` in traced chunks of ``batch_size``; one failing item never stops the others.

    With a coroutine function as ``process`` this returns an awaitable, and up to ``concurrency`` items of
    a chunk run at once; with a plain function it runs the batch and returns the result.

    Args:
        name: the operation, used in span names (``batch.<name>``).
        items: the items, in order.
        process: called once per item.
        batch_size: items per chunk (one span each).
        attributes: extra attributes of the batch span.
        concurrency: async only, the most items in flight at once.
        tracer: the tracer to use; tracehook's tracer when omitted.

    Returns:
        ``BatchResult(results, errors)``: the results of the items that succeeded, in input order, and a
        :class:`BatchItemError` for each that failed.

    Raises:
        ValueError: ``batch_size`` or ``concurrency`` is below 1.
    """
    if inspect.iscoroutinefunction(process):
        return _trace_batch_async(name, items, process, batch_size, attributes, tracer, concurrency)
    return _trace_batch_sync(name, items, process, batch_size, attributes, tracer)

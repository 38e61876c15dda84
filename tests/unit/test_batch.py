"""trace_batch: the span layout of docs/design.md, results and errors, sync and async."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.conftest import by_name
from tracing import BatchResult, trace_batch, trace_span

FAILING = {7, 19}


def process(item: int) -> int:
    if item in FAILING:
        msg = f"item {item} is bad"
        raise ValueError(msg)
    return item * 10


async def process_async(item: int) -> int:
    await asyncio.sleep(0)
    return process(item)


class TestLayout:
    """25 items with 2 failing: 3 chunk spans, batch.items_failed == 2, 23 results."""

    @pytest.mark.parametrize("func", [process, process_async], ids=["sync", "async"])
    async def test_twenty_five_items_two_failing(
        self, span_exporter: InMemorySpanExporter, func: object
    ) -> None:
        """The batch span, its chunks, the failed items' events and the returned result agree."""
        outcome = trace_batch(
            "update_work_orders",
            list(range(25)),
            func,
            batch_size=10,  # type: ignore[call-overload]
            attributes={"batch.type": "work_orders"},
        )
        result = await outcome if asyncio.iscoroutine(outcome) else outcome
        assert isinstance(result, BatchResult)
        results, errors = result
        assert len(results) == 23
        assert [i * 10 for i in range(25) if i not in FAILING] == results
        assert [error.index for error in errors] == [7, 19]
        assert all(isinstance(error.error, ValueError) for error in errors)

        spans = span_exporter.get_finished_spans()
        batch = by_name(spans, "batch.update_work_orders")
        chunks = sorted(
            (s for s in spans if s.name == "batch.update_work_orders.chunk"),
            key=lambda s: s.attributes["batch.chunk_index"],
        )  # type: ignore[index]
        assert len(chunks) == 3
        attrs = dict(batch.attributes or {})
        assert (
            attrs["batch.items_total"],
            attrs["batch.size"],
            attrs["batch.items_failed"],
            attrs["batch.type"],
        ) == (25, 10, 2, "work_orders")
        assert batch.status.status_code == StatusCode.ERROR
        assert [c.attributes["batch.chunk_size"] for c in chunks] == [10, 10, 5]  # type: ignore[index]
        assert all(c.parent is not None and c.parent.span_id == batch.context.span_id for c in chunks)
        failed_indexes = [
            e.attributes["batch.item_index"]
            for c in chunks
            for e in c.events  # type: ignore[index]
            if e.name == "exception"
        ]
        assert failed_indexes == [7, 19]
        assert [c.attributes["batch.chunk_failed"] for c in chunks] == [1, 1, 0]  # type: ignore[index]

    def test_item_spans_are_children_of_chunks(self, span_exporter: InMemorySpanExporter) -> None:
        """Spans made while processing an item hang under that item's chunk span."""

        def traced_item(item: int) -> int:
            with trace_span(f"item.{item}"):
                return item

        trace_batch("op", [0, 1, 2], traced_item, batch_size=2)
        spans = span_exporter.get_finished_spans()
        chunks = {s.attributes["batch.chunk_index"]: s for s in spans if s.name == "batch.op.chunk"}  # type: ignore[index]
        assert by_name(spans, "item.2").parent.span_id == chunks[1].context.span_id  # type: ignore[union-attr]
        assert by_name(spans, "item.0").parent.span_id == chunks[0].context.span_id  # type: ignore[union-attr]

    def test_all_good(self, span_exporter: InMemorySpanExporter) -> None:
        """With no failure the batch span is not an error."""
        results, errors = trace_batch("ok", [1, 2, 3], lambda x: x)
        assert (results, errors) == ([1, 2, 3], [])
        batch = by_name(span_exporter.get_finished_spans(), "batch.ok")
        assert batch.status.status_code == StatusCode.UNSET
        assert batch.attributes["batch.items_failed"] == 0  # type: ignore[index]

    def test_bad_batch_size(self, span_exporter: InMemorySpanExporter) -> None:
        """A batch size below 1 is a clear error."""
        with pytest.raises(ValueError, match="batch_size"):
            trace_batch("op", [1], lambda x: x, batch_size=0)


class TestAsyncConcurrency:
    """Async items of a chunk run concurrently, never more than ``concurrency`` at once."""

    async def test_bounded(self, span_exporter: InMemorySpanExporter) -> None:
        """At most 3 in flight, and more than 1 at some point."""
        in_flight = 0
        peak = 0

        async def work(item: int) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            for _ in range(3):
                await asyncio.sleep(0)
            in_flight -= 1
            return item

        results, errors = await trace_batch("c", list(range(20)), work, batch_size=10, concurrency=3)
        assert (list(range(20)), []) == (results, errors)
        assert 1 < peak <= 3

"""instrument_celery with a real prefork worker on the real Redis, spans at a real OTLP receiver."""

from __future__ import annotations

import itertools
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from opentelemetry import baggage, context

from tests.integration import celery_app as tasks
from tests.integration.conftest import REDIS_URL, Worker, port_open, start_worker, wait_ready
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tracing import instrument_celery, trace_span
from workers.config import celery_config

pytestmark = pytest.mark.integration
TIMEOUT = 30
RUN_ADD = "run tests.integration.celery_app.add"
PUBLISH_ADD = "publish tests.integration.celery_app.add"


@pytest.fixture(scope="module")
def worker(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One prefork worker (2 children) for the module."""
    started = start_worker(receiver, tmp_path_factory.mktemp("worker"))
    try:
        wait_ready(started, tasks.app)
        yield started
    finally:
        started.stop()


def trace_of(
    receiver: OtlpReceiver,
    trace_id: str,
    ready: Callable[[list[ReceivedSpan]], bool],
    timeout: float = TIMEOUT,
) -> list[ReceivedSpan]:
    """Poll the receiver until the trace satisfies ``ready``; return its spans."""
    receiver.wait_for(
        lambda _: ready(receiver.trace(trace_id)), timeout=timeout, description=f"trace {trace_id}"
    )
    return receiver.trace(trace_id)


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def parent_of(spans: list[ReceivedSpan], span: ReceivedSpan) -> ReceivedSpan:
    (parent,) = [s for s in spans if s.span_id == span.parent_span_id]
    return parent


def root_trace_id(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


def delay_to(queue: str) -> Any:
    """``add.delay(2, 3)`` itself: ``.delay`` takes no routing options, so for this call the app's default
    queue is the worker's (the router reads ``task_default_queue`` at each publish)."""
    conf = tasks.app.conf
    before = conf.task_default_queue
    conf.task_default_queue = queue
    try:
        return tasks.add.delay(2, 3)
    finally:
        conf.task_default_queue = before


CALLS: dict[str, Callable[[str], Any]] = {
    "delay": delay_to,
    "apply_async": lambda q: tasks.add.apply_async((2, 3), queue=q),
    "send_task": lambda q: tasks.app.send_task("tests.integration.celery_app.add", (2, 3), queue=q),
    "signature": lambda q: tasks.add.s(2, 3).set(queue=q).delay(),
    "signature_apply_async": lambda q: tasks.add.signature((2, 3)).apply_async(queue=q),
}


class TestWaysOfCalling:
    """Publish → run parentage and one trace, whatever way the task is called."""

    @pytest.mark.parametrize("how", list(CALLS))
    def test_one_trace(self, worker: Worker, producer: OtlpReceiver, how: str) -> None:
        """caller → PRODUCER publish → CONSUMER run → the task's own span, all in the caller's trace."""
        with trace_span("caller") as caller:
            result = CALLS[how](worker.queue)
        assert 5 == result.get(timeout=TIMEOUT)
        trace_id = root_trace_id(caller)
        spans = trace_of(
            producer, trace_id, lambda s: bool(named(s, RUN_ADD)) and bool(named(s, "add.inner"))
        )
        (publish,) = named(spans, PUBLISH_ADD)
        (run,) = named(spans, RUN_ADD)
        (inner,) = named(spans, "add.inner")
        assert ("PRODUCER", "CONSUMER") == (publish.kind, run.kind)
        assert ("test-producer", "test-worker") == (publish.service_name, run.service_name)
        assert parent_of(spans, publish).name == "caller"
        assert run.parent_span_id == publish.span_id
        assert inner.parent_span_id == run.span_id
        assert result.id == run.attributes["celery.task_id"] == run.attributes["messaging.message.id"]
        assert (0, 1, "SUCCESS") == (
            run.attributes["celery.retries"],
            run.attributes["celery.attempt"],
            run.attributes["celery.state"],
        )
        assert worker.queue == run.attributes["messaging.destination.name"]
        assert "redis" == run.attributes["messaging.system"]
        assert 0 <= run.attributes["celery.queue_wait_ms"] < 10_000

    def test_unregistered_task_publish_span_ends(self, worker: Worker, producer: OtlpReceiver) -> None:
        """send_task to a name no worker knows: the publish span ends, the worker's refusal is a span."""
        with trace_span("caller") as caller:
            tasks.app.send_task("no.such.task", (1,), queue=worker.queue)
        spans = trace_of(
            producer,
            root_trace_id(caller),
            lambda s: bool(named(s, "publish no.such.task")) and bool(named(s, "run no.such.task")),
        )
        (publish,) = named(spans, "publish no.such.task")
        (refused,) = named(spans, "run no.such.task")
        assert publish.end_ns > publish.start_ns
        assert refused.parent_span_id == publish.span_id
        assert "ERROR" == refused.status_code

    def test_countdown_excluded_from_queue_wait(self, worker: Worker, producer: OtlpReceiver) -> None:
        """A countdown is recorded as scheduled delay, not as queue wait. A 2 s countdown counted as waiting
        would make the wait 2 s or more; a loaded machine starting the task late adds far less than 1.5 s."""
        with trace_span("caller") as caller:
            result = tasks.add.apply_async((1, 1), queue=worker.queue, countdown=2)
        assert 2 == result.get(timeout=TIMEOUT)
        (run,) = named(trace_of(producer, root_trace_id(caller), lambda s: bool(named(s, RUN_ADD))), RUN_ADD)
        assert 1500 <= run.attributes["celery.scheduled_delay_ms"] <= 2000
        assert run.attributes["celery.queue_wait_ms"] < 1500


class TestHeaders:
    """Our headers are namespaced and string-valued; the user's own headers reach task.request untouched."""

    def test_user_headers_and_baggage(self, worker: Worker, producer: OtlpReceiver) -> None:
        """A user header arrives as sent; a user baggage is merged with the context's, not duplicated."""
        token = context.attach(baggage.set_baggage("from_ctx", "2"))
        try:
            with trace_span("caller"):
                result = tasks.echo_headers.apply_async(
                    ("x_tenant", "baggage", "traceparent", "tracehook_enqueued_at"),
                    queue=worker.queue,
                    headers={"x_tenant": "acct_4821", "baggage": "user_key=1"},
                )
        finally:
            context.detach(token)
        seen = result.get(timeout=TIMEOUT)
        assert "acct_4821" == seen["x_tenant"]
        entries = sorted(part.strip() for part in seen["baggage"].split(","))
        assert ["from_ctx=2", "user_key=1"] == entries
        assert seen["traceparent"].startswith("00-")
        assert isinstance(seen["tracehook_enqueued_at"], str)
        float(seen["tracehook_enqueued_at"])


class TestCanvases:
    """chain, group and chord: every member runs in the caller's trace."""

    def test_chain_of_three(self, worker: Worker, producer: OtlpReceiver) -> None:
        """Each link is published from the previous link's run span."""
        with trace_span("caller") as caller:
            result = chain(tasks.add.s(1, 1), tasks.add.s(2), tasks.add.s(3)).apply_async(queue=worker.queue)
        assert 7 == result.get(timeout=TIMEOUT)
        spans = trace_of(producer, root_trace_id(caller), lambda s: len(named(s, RUN_ADD)) == 3)
        runs = sorted(named(spans, RUN_ADD), key=lambda s: s.start_ns)
        assert 1 == len({run.attributes["celery.root_id"] for run in runs})
        for earlier, later in itertools.pairwise(runs):
            assert parent_of(spans, later).parent_span_id == earlier.span_id

    def test_group_of_five(self, worker: Worker, producer: OtlpReceiver) -> None:
        """Five members, one trace, one group id."""
        with trace_span("caller") as caller:
            result = group(tasks.add.s(i, i) for i in range(5)).apply_async(queue=worker.queue)
        assert [0, 2, 4, 6, 8] == result.get(timeout=TIMEOUT)
        spans = trace_of(producer, root_trace_id(caller), lambda s: len(named(s, RUN_ADD)) == 5)
        assert 1 == len({run.attributes["celery.group_id"] for run in named(spans, RUN_ADD)})

    def test_chord_five_to_one(self, worker: Worker, producer: OtlpReceiver) -> None:
        """Five header tasks and the body, all in the caller's trace."""
        with trace_span("caller") as caller:
            result = chord((tasks.add.s(i, 1) for i in range(5)), tasks.total.s()).apply_async(
                queue=worker.queue
            )
        assert 15 == result.get(timeout=TIMEOUT)
        run_total = "run tests.integration.celery_app.total"
        spans = trace_of(
            producer,
            root_trace_id(caller),
            lambda s: len(named(s, RUN_ADD)) == 5 and len(named(s, run_total)) == 1,
        )
        assert 6 == len(named(spans, RUN_ADD)) + len(named(spans, run_total))


class TestOutcomes:
    """Retries, failures, expected errors and control flow end their spans with a clear status."""

    def test_retries_same_trace(self, worker: Worker, producer: OtlpReceiver) -> None:
        """Three attempts, three CONSUMER spans in one trace, numbered; retries are not errors."""
        run_flaky = "run tests.integration.celery_app.flaky"
        with trace_span("caller") as caller:
            result = tasks.flaky.apply_async((3,), queue=worker.queue)
        assert 3 == result.get(timeout=TIMEOUT)
        spans = trace_of(producer, root_trace_id(caller), lambda s: len(named(s, run_flaky)) == 3)
        runs = sorted(named(spans, run_flaky), key=lambda s: s.attributes["celery.attempt"])
        assert [1, 2, 3] == [run.attributes["celery.attempt"] for run in runs]
        assert ["RETRY", "RETRY", "SUCCESS"] == [run.attributes["celery.state"] for run in runs]
        assert all(run.status_code != "ERROR" for run in runs)
        assert "attempt 1 failed" in runs[0].attributes["celery.retry.reason"]
        assert parent_of(spans, runs[1]).parent_span_id == runs[0].span_id

    def test_failure_recorded(self, worker: Worker, producer: OtlpReceiver) -> None:
        """A real failure: ERROR status and the exception with its stack."""
        with trace_span("caller") as caller:
            result = tasks.fail.apply_async(("boom",), queue=worker.queue)
        with pytest.raises(ValueError, match="boom"):
            result.get(timeout=TIMEOUT)
        name = "run tests.integration.celery_app.fail"
        (run,) = named(trace_of(producer, root_trace_id(caller), lambda s: bool(named(s, name))), name)
        assert "ERROR" == run.status_code
        (event,) = [attrs for evt, attrs in run.events if evt == "exception"]
        assert "ValueError" == event["exception.type"]
        assert "raise ValueError(message)" in event["exception.stacktrace"]

    @pytest.mark.parametrize(
        ("task", "state"),
        [(tasks.expected_failure, "FAILURE"), (tasks.ignored, "IGNORED"), (tasks.rejected, "REJECTED")],
    )
    def test_not_errors(self, worker: Worker, producer: OtlpReceiver, task: Any, state: str) -> None:
        """task.throws, Ignore and Reject end the span without ERROR status."""
        with trace_span("caller") as caller:
            task.apply_async(queue=worker.queue)
        name = f"run {task.name}"
        (run,) = named(trace_of(producer, root_trace_id(caller), lambda s: bool(named(s, name))), name)
        assert state == run.attributes["celery.state"]
        assert "ERROR" != run.status_code

    def test_time_limit(self, worker: Worker, producer: OtlpReceiver) -> None:
        """A task killed by its hard time limit still ends in its trace, as an ERROR."""
        with trace_span("caller") as caller:
            result = tasks.sleep.apply_async((5,), queue=worker.queue, time_limit=1)
        with pytest.raises(Exception, match=r"TimeLimitExceeded|Time limit"):
            result.get(timeout=TIMEOUT)
        name = "run tests.integration.celery_app.sleep"
        runs = named(trace_of(producer, root_trace_id(caller), lambda s: len(named(s, name)) == 2), name)
        states = sorted((run.attributes["celery.state"], run.status_code) for run in runs)
        assert [("FAILURE", "ERROR"), ("INTERRUPTED", "ERROR")] == states
        assert 1 == sum("TimeLimitExceeded" in run.status_message for run in runs)


class TestRevoked:
    """A task revoked before it ran still ends in its trace, with a clear status."""

    def test_revoked_before_eta(self, worker: Worker, producer: OtlpReceiver) -> None:
        """Revoked while waiting for its countdown: one ERROR run span marked revoked, in the caller's trace."""
        with trace_span("caller") as caller:
            result = tasks.add.apply_async((1, 1), queue=worker.queue, countdown=3)
        tasks.app.control.revoke(result.id)
        (run,) = named(trace_of(producer, root_trace_id(caller), lambda s: bool(named(s, RUN_ADD))), RUN_ADD)
        assert "revoked" == run.attributes["celery.revoked.reason"]
        assert "ERROR" == run.status_code
        assert "REVOKED" == run.attributes["celery.state"]


class TestLogs:
    """Worker log lines carry the task's trace, task id and the event fields from baggage, then nothing."""

    def test_task_log_context(self, worker: Worker, producer: OtlpReceiver) -> None:
        """Lines inside the task have trace_id/task_id/event_id; the next task's lines don't."""
        token = context.attach(baggage.set_baggage("event_id", "evt_123"))
        try:
            with trace_span("caller") as caller:
                result = tasks.log_event.apply_async(("evt_123",), queue=worker.queue)
        finally:
            context.detach(token)
        result.get(timeout=TIMEOUT)
        after = tasks.add.apply_async((5, 5), queue=worker.queue)
        after.get(timeout=TIMEOUT)
        trace_id = root_trace_id(caller)
        lines = [json.loads(line) for line in worker.log.splitlines() if line.startswith("{")]
        done = [
            line for line in lines if line.get("event") == "work.done" and line.get("trace_id") == trace_id
        ]
        assert done, worker.log[-2000:]
        assert ("evt_123", result.id, "test-worker") == (
            done[0]["event_id"],
            done[0]["task_id"],
            done[0]["service"],
        )
        assert len(done[0]["span_id"]) == 16
        adding = [line for line in lines if line.get("event") == "adding" and line.get("task_id") == after.id]
        assert adding
        assert "event_id" not in adding[0]


class TestWorkerLifecycle:
    """No span of a finished task is lost when a worker stops or a child is recycled."""

    def test_sigterm_loses_nothing(
        self, receiver: OtlpReceiver, producer: OtlpReceiver, tmp_path: Path
    ) -> None:
        """With export held back (60 s schedule), SIGTERM still delivers every finished task's span."""
        slow_export = start_worker(receiver, tmp_path, OTEL_BSP_SCHEDULE_DELAY="60000")
        try:
            wait_ready(slow_export, tasks.app)
            with trace_span("caller") as caller:
                results = [tasks.add.apply_async((i, 0), queue=slow_export.queue) for i in range(6)]
            assert list(range(6)) == [r.get(timeout=TIMEOUT) for r in results]
        finally:
            assert 0 == slow_export.stop(signal.SIGTERM)
        trace_of(producer, root_trace_id(caller), lambda s: len(named(s, RUN_ADD)) == 6)

    def test_max_tasks_per_child_loses_nothing(
        self, receiver: OtlpReceiver, producer: OtlpReceiver, tmp_path: Path
    ) -> None:
        """Each child runs one task and exits; its span arrives anyway."""
        recycled = start_worker(
            receiver, tmp_path, extra_args=("--max-tasks-per-child=1",), OTEL_BSP_SCHEDULE_DELAY="60000"
        )
        try:
            wait_ready(recycled, tasks.app)
            with trace_span("caller") as caller:
                results = [tasks.add.apply_async((i, 1), queue=recycled.queue) for i in range(4)]
            assert [1, 2, 3, 4] == [r.get(timeout=TIMEOUT) for r in results]
            trace_of(producer, root_trace_id(caller), lambda s: len(named(s, RUN_ADD)) == 4)
        finally:
            recycled.stop()


class TestRabbitMQ:
    """The same propagation with RabbitMQ as the broker."""

    def test_propagation_over_amqp(
        self, receiver: OtlpReceiver, producer: OtlpReceiver, tmp_path: Path
    ) -> None:
        """publish → run in one trace over amqp://."""
        if not port_open("127.0.0.1", 5672):
            pytest.skip("no RabbitMQ answers on 127.0.0.1:5672")
        broker = "amqp://guest:guest@127.0.0.1:5672//"
        rabbit_app = Celery("rabbit_producer")
        rabbit_app.conf.update(celery_config({"CELERY_BROKER_URL": broker, "REDIS_URL": REDIS_URL}))
        instrument_celery(rabbit_app)
        rabbit = start_worker(receiver, tmp_path, CELERY_BROKER_URL=broker)
        try:
            wait_ready(rabbit, rabbit_app)
            with trace_span("caller") as caller:
                result = rabbit_app.send_task(
                    "tests.integration.celery_app.add", (20, 22), queue=rabbit.queue
                )
            assert 42 == result.get(timeout=TIMEOUT)
            spans = trace_of(producer, root_trace_id(caller), lambda s: bool(named(s, RUN_ADD)))
            (publish,) = named(spans, PUBLISH_ADD)
            (run,) = named(spans, RUN_ADD)
            assert run.parent_span_id == publish.span_id
            assert "rabbitmq" == run.attributes["messaging.system"]
        finally:
            rabbit.stop()
